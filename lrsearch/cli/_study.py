"""Study commands: ``validate``, ``run``, ``status``, ``best``, ``ui``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lrsearch.cli._common import cli, positive
from lrsearch.errors import LrsearchError, StorageError

if TYPE_CHECKING:
    from lrsearch.workers import RunOutcome

STORAGE_HELP = "Optuna storage URL (default: $LRSEARCH_STORAGE, else SQLite under $LRSEARCH_HOME)."


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


def storage_option(f: Any) -> Any:
    return click.option("--storage", default=None, help=STORAGE_HELP)(f)


def study_option(required: bool) -> Any:
    return click.option(
        "--study",
        "--study-name",
        "study_name",
        required=required,
        help="Study name (as in the study file's [study] name).",
    )


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
    from lrsearch.workloads import get_workload

    config = load_study_config(file)
    workload = get_workload(config.study.workload, **config.study.workload_options)
    click.echo(
        f"{file}: ok (study {config.study.name!r}, workload {workload.name}, "
        f"{config.study.n_trials} trials, pruner {config.pruner.name})"
    )


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--n-trials",
    type=int,
    default=None,
    callback=positive("n-trials"),
    help="Finished trials (complete + pruned) the study should reach.",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    callback=positive("timeout"),
    help="Stop starting new trials after this many seconds.",
)
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
        echo=click.echo,
    )
    click.echo(closing_report(outcome))


@cli.command()
@study_option(required=True)
@storage_option
@click.option(
    "--n-trials",
    type=int,
    default=None,
    callback=positive("n-trials"),
    help="Finished trials the study should reach (default: the study file's).",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    callback=positive("timeout"),
    help="Stop starting new trials after this many seconds.",
)
@click.option(
    "--allow-workload",
    "allow_workloads",
    multiple=True,
    metavar="PATTERN",
    help="Trust workload import paths matching PATTERN (fnmatch, e.g. 'mypkg.*'); "
    "built-ins and installed entry points are always allowed.",
)
@devices_options
def worker(study_name: str, storage: str | None, **opts: Any) -> None:
    """Join an existing study from any host; config, prior and tracking come from its storage."""
    from lrsearch.workers import join_study

    outcome = join_study(
        study_name,
        storage_url=_storage(storage),
        devices=opts["devices"],
        trials_per_device=opts["trials_per_device"],
        n_trials=opts["n_trials"],
        timeout=opts["timeout"],
        allow_workloads=tuple(opts["allow_workloads"]),
        echo=click.echo,
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
    help="JSON, or plain PyTorch code that rebuilds the schedule.",
)
def best(study_name: str, storage: str | None, fmt: str) -> None:
    """The best trial's schedule, as JSON or as a few lines of plain PyTorch."""
    from lrsearch.export import best_as_json, best_as_python
    from lrsearch.study import load_study

    handle = load_study(study_name, _storage(storage))
    click.echo(best_as_json(handle) if fmt == "json" else best_as_python(handle))


@cli.command()
@study_option(required=False)
@storage_option
@click.option("--tracking-uri", default=None, help="Tracking store to show (default: the study's).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=5000, show_default=True, help="Port to listen on.")
@click.option("--dry-run", is_flag=True, help="Print the command instead of running it.")
def ui(
    study_name: str | None,
    storage: str | None,
    tracking_uri: str | None,
    host: str,
    port: int,
    dry_run: bool,
) -> None:
    """Open the MLflow UI on a study's tracking store (the embedded one by default)."""
    from lrsearch.storage import default_home
    from lrsearch.study import load_study

    uri = tracking_uri
    if uri is None and study_name:
        uri = load_study(study_name, _storage(storage)).tracking_uri
    uri = uri or str(default_home())
    command = mlflow_server_command(uri, host=host, port=port)
    from lrsearch.tracking import redact_url

    shown = " ".join(redact_url(part) for part in command)
    if dry_run:
        click.echo(shown)
        return
    click.echo(f"MLflow UI on http://{host}:{port} (Ctrl-C to stop): {shown}", err=True)
    try:
        subprocess.run(command, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except FileNotFoundError as exc:
        raise LrsearchError(f"cannot start the MLflow UI ({exc}); is mlflow installed?") from None
    except KeyboardInterrupt:
        pass


def mlflow_server_command(tracking_uri: str, *, host: str, port: int) -> list[str]:
    """``mlflow server`` for a tracking URI; a directory means the embedded store in it."""
    from lrsearch.tracking import local_tracking_uri

    artifacts: str | None = None
    if "://" not in tracking_uri:
        tracking_uri, artifacts = local_tracking_uri(Path(tracking_uri))
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if artifacts:
        command += ["--default-artifact-root", artifacts]
    return command
