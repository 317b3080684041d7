"""Study commands: ``validate``, ``run``, ``status``, ``best``, ``ui``."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from lrsearch.cli._common import allow_workload_option, cli, positive
from lrsearch.errors import LrsearchError, StorageError

if TYPE_CHECKING:
    from lrsearch.study import StudyHandle
    from lrsearch.workers import RunOutcome

STORAGE_HELP = (
    "Optuna storage URL (default: $LRSEARCH_STORAGE, else the journal file "
    "$LRSEARCH_HOME/optuna.journal, or an optuna.db already there)."
)


def devices_options(f: Any) -> Any:
    f = click.option(
        "--trials-per-device",
        type=int,
        default=1,
        show_default=True,
        callback=positive("trials-per-device"),
        help="Worker processes per device (several small trials share a GPU).",
    )(f)
    return click.option(
        "--devices",
        default="auto",
        show_default=True,
        help="'auto' (every visible GPU, else the CPU), 'cpu', or 'cuda:0,cuda:1'.",
    )(f)


def budget_options(f: Any) -> Any:
    """``--n-trials`` and ``--timeout``, as ``run`` and ``worker`` both take them."""
    f = click.option(
        "--timeout",
        type=float,
        default=None,
        callback=positive("timeout"),
        help="Stop starting new trials after this many seconds.",
    )(f)
    return click.option(
        "--n-trials",
        type=int,
        default=None,
        callback=positive("n-trials"),
        help="Finished trials (complete + pruned) the study should reach "
        "(default: the study's target, n_trials of its study file).",
    )(f)


def _set_storage_grace(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    from lrsearch.retrying import GRACE_ENV

    if value is not None:  # through the environment: supervised workers inherit it
        os.environ[GRACE_ENV] = str(value)


def storage_option(f: Any) -> Any:
    """``--storage`` and ``--storage-grace``."""
    f = click.option(
        "--storage-grace",
        type=click.FloatRange(min=0),
        default=None,
        expose_value=False,
        callback=_set_storage_grace,
        metavar="SECONDS",
        help="How long storage calls wait out an unreachable database or storage proxy "
        "before giving up (default: $LRSEARCH_STORAGE_GRACE, else 300).",
    )(f)
    return click.option("--storage", default=None, help=STORAGE_HELP)(f)


def study_option(required: bool) -> Any:
    return click.option(
        "--study",
        "--study-name",
        "study_name",
        required=required,
        help="Study name (as in the study file's [study] name).",
    )


def _say(line: str) -> None:
    """A line of a running study: through ``sys.stdout`` as it is when called, so that rich's
    live view (which swaps it) prints it whole above the view instead of drawing over it."""
    print(line, flush=True)


def _storage(url: str | None) -> str:
    from lrsearch.storage import default_storage

    return url or default_storage()


def closing_report(outcome: RunOutcome) -> str:
    """What ``run`` and ``worker`` print at the end: counts, best schedule, where to look.

    Raises:
        LrsearchError: when interrupted (after everything was closed), with the report's
            first line and how to resume.
    """
    from lrsearch.reporting import summary
    from lrsearch.storage import redact

    handle = outcome.handle
    s = summary(handle)
    counts = s["trials"]
    lines = [
        f"study {handle.name!r}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned "
        f"({s['diverged']} diverged), {counts['FAIL']} failed in {outcome.seconds:.0f}s",
    ]
    best = s["best"]
    if best:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in best["params"].items()
        )
        lines.append(f"best: trial {best['number']} {s['metric']}={best['value']:.2f} ({params})")
        lines.append(f"  schedule as code: lrsearch best --study {handle.name} --format python")
    if outcome.tracking_uri:
        lines.append(
            f"  MLflow UI: lrsearch ui --study {handle.name}  (store: {redact(outcome.tracking_uri)})"
        )
    if outcome.interrupted:
        from lrsearch import interrupt

        if interrupt.preempted():
            raise LrsearchError(
                "preempted (SIGTERM); running trials were queued again and resume from their "
                "last checkpoints on the next worker. " + lines[0]
            )
        raise LrsearchError(
            "interrupted; running trials were ended and recorded. Resume with the same command. "
            + lines[0]
        )
    return "\n".join(lines)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check a study file without running anything."""
    from lrsearch.config import load_study_config
    from lrsearch.study import choose_trainer

    config = load_study_config(file)
    trains = choose_trainer(config).label
    click.echo(
        f"{file}: ok (study {config.study.name!r}, {trains}, "
        f"{config.study.n_trials} trials, pruner {config.pruner.name})"
    )


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@budget_options
@click.option("--study-name", default=None, help="Override the study file's name.")
@storage_option
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: the embedded store under $LRSEARCH_HOME).",
)
@click.option("--no-tracking", is_flag=True, help="Do not record anything in MLflow.")
@click.option("--seed", type=int, default=None, help="Override the study file's seed.")
@devices_options
def run(file: str, **opts: Any) -> None:
    """Create or resume the study in FILE and run its trials (one worker per device slot)."""
    from lrsearch.config import load_study_config

    if not opts["no_tracking"]:
        from lrsearch.tracking._writer import start_writer

        start_writer()  # its MLflow import overlaps ours of torch and the study's opening
    from lrsearch.workers import run_study

    config = load_study_config(
        file,
        name=opts["study_name"],
        n_trials=opts["n_trials"],
        timeout=opts["timeout"],
        seed=opts["seed"],
    )
    outcome = run_study(
        config,
        storage_url=_storage(opts["storage"]),
        tracking_uri=opts["tracking_uri"],
        tracking=not opts["no_tracking"],
        devices=opts["devices"],
        trials_per_device=opts["trials_per_device"],
        echo=_say,
    )
    click.echo(closing_report(outcome))


@cli.command()
@study_option(required=True)
@storage_option
@budget_options
@allow_workload_option
@click.option(
    "--tracking-uri",
    envvar="LRSEARCH_TRACKING_URI",
    default=None,
    help="MLflow store to record to ($LRSEARCH_TRACKING_URI; default: the study's, if it is "
    "a server or under $LRSEARCH_HOME).",
)
@devices_options
def worker(study_name: str, storage: str | None, **opts: Any) -> None:
    """Join an existing study from any host; config, prior and tracking come from its storage."""
    from lrsearch.tracking._writer import start_writer

    start_writer()  # its MLflow import overlaps ours of torch and the study's opening
    from lrsearch.workers import join_study

    outcome = join_study(
        study_name,
        storage_url=_storage(storage),
        devices=opts["devices"],
        trials_per_device=opts["trials_per_device"],
        n_trials=opts["n_trials"],
        timeout=opts["timeout"],
        allow_workloads=tuple(opts["allow_workloads"]),
        tracking_uri=opts["tracking_uri"],
        echo=_say,
    )
    click.echo(closing_report(outcome))


@cli.command()
@study_option(required=False)
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(study_name: str | None, storage: str | None, as_json: bool) -> None:
    """Trials by state, the best value and params, and running trials."""
    from lrsearch.reporting import summary
    from lrsearch.storage import list_studies
    from lrsearch.study import load_study

    url = _storage(storage)
    names = [study_name] if study_name else list_studies(url)
    if not names:
        raise StorageError("no studies in this storage yet; start one with 'lrsearch run FILE'")
    summaries = [summary(load_study(name, url)) for name in names]
    if as_json:
        click.echo(json.dumps(summaries if not study_name else summaries[0], indent=2, default=str))
        return
    from lrsearch.cli._tables import print_status

    print_status(summaries)


@cli.command()
@study_option(required=True)
@storage_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "python"]),
    default="json",
    show_default=True,
    help="JSON, or a plain PyTorch script (placeholder model and data) that trains with the "
    "trial's optimizer and schedule.",
)
@allow_workload_option
def best(study_name: str, storage: str | None, fmt: str, allow_workloads: tuple[str, ...]) -> None:
    """The best trial's schedule, as JSON or as a plain PyTorch script that runs as it is."""
    from lrsearch.export import best_as_json, best_as_python
    from lrsearch.study import load_study

    handle = load_study(study_name, _storage(storage), allow_workloads=allow_workloads)
    click.echo(best_as_json(handle) if fmt == "json" else best_as_python(handle))


@cli.command()
@study_option(required=False)
@storage_option
@click.option("--tracking-uri", default=None, help="Tracking store to show (default: the study's).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=5000, show_default=True, help="Port to listen on.")
@click.option(
    "--open/--no-open",
    "open_browser",
    default=None,
    help="Open the page in a web browser once the server answers "
    "(default: when run in a terminal on a desktop).",
)
@click.option("--dry-run", is_flag=True, help="Print the command and the page, start nothing.")
def ui(
    study_name: str | None,
    storage: str | None,
    tracking_uri: str | None,
    host: str,
    port: int,
    open_browser: bool | None,
    dry_run: bool,
) -> None:
    """Serve the MLflow UI on a study's tracking store and show the study's runs table.

    Without --study the page is the list of experiments. A tracking URI that is an MLflow
    server already serves the UI: nothing is started then, the page is on that server.
    """
    from lrsearch.storage import default_home, trusted_tracking_uri
    from lrsearch.study import load_study
    from lrsearch.tracking import ui_server

    # The study's own store: its runs table opens with the metric and parameters as columns.
    handle = load_study(study_name, _storage(storage)) if study_name and not tracking_uri else None
    uri = (
        tracking_uri
        or (trusted_tracking_uri(handle.tracking_uri) if handle else None)
        or str(default_home())
    )
    remote = uri.startswith(("http://", "https://"))
    base = ui_server.server_base(uri) if remote else ui_server.local_base(host, port)
    experiment_id = view = None
    if study_name:
        wanted = None if dry_run or handle is None else _runs_view(handle)
        experiment_id, view = ui_server.study_experiment(uri, study_name, view=wanted, note=_note)
    url = ui_server.ui_url(base, experiment_id, view=view)
    command = None if remote else ui_server.server_command(uri, host=host, port=port)
    browser = not dry_run and ui_server.wants_browser(open_browser, note=_note)
    if dry_run:
        click.echo(
            ui_server.shown(command) if command else f"(no server to start: {base} serves the UI)"
        )
        click.echo(url)
    elif command is None:
        click.echo(f"MLflow UI: {url}", err=True)
        if browser:
            ui_server.open_browser(url)
    else:
        ui_server.check_port(host, port)
        ui_server.serve(
            command,
            url,
            health=f"{base}/health",
            log=default_home() / "logs" / f"mlflow-ui-{port}.log",
            say=_note,
            on_up=(lambda: ui_server.open_browser(url)) if browser else lambda: None,
        )


def _note(line: str) -> None:
    click.echo(line, err=True)


def _runs_view(handle: StudyHandle) -> dict[str, object]:
    """The runs table ``ui`` opens: the validation metric and the sampled parameters, best first."""
    from lrsearch.config import SpaceSection
    from lrsearch.errors import WorkloadError
    from lrsearch.reporting import best_trial
    from lrsearch.tracking import ui_server
    from lrsearch.trials import trial_params

    try:
        best = best_trial(handle)
    except StorageError:  # no complete trial yet: the space's names
        params = ["max_lr", *(name for name in SpaceSection.model_fields if name != "policies")]
    else:
        try:
            replayed = trial_params(handle, best)
        except WorkloadError:  # a workload this process does not trust: never built for a page
            replayed = dict(best.params)
        params = [k for k in replayed if k != "policy"]
    return ui_server.runs_view(f"val_{handle.metric_name}", maximize=handle.maximize, params=params)
