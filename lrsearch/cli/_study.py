"""Study commands: ``validate``, ``run``, ``status``, ``best``, ``ui``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
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
        "(default: the study file's).",
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
    from lrsearch.study import build_workload

    config = load_study_config(file)
    workload = build_workload(config)
    click.echo(
        f"{file}: ok (study {config.study.name!r}, workload {workload.name}, "
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
@budget_options
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
    from lrsearch.storage import default_home
    from lrsearch.study import load_study

    uri = tracking_uri
    if uri is None and study_name:
        uri = load_study(study_name, _storage(storage)).tracking_uri
    uri = uri or str(default_home())
    remote = uri.startswith(("http://", "https://"))
    base = _server_base(uri) if remote else _local_base(host, port)
    experiment_id = _study_experiment(uri, study_name, mark=not dry_run) if study_name else None
    url = mlflow_ui_url(base, experiment_id)
    command = None if remote else mlflow_server_command(uri, host=host, port=port)
    if dry_run:
        click.echo(_shown(command) if command else f"(no server to start: {base} serves the UI)")
        click.echo(url)
    elif command is None:
        click.echo(f"MLflow UI: {url}", err=True)
        if _wants_browser(open_browser):
            _open_browser(url)
    else:
        _serve(command, url, health=f"{base}/health", open_browser=_wants_browser(open_browser))


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


def mlflow_ui_url(base: str, experiment_id: str | None = None) -> str:
    """The MLflow 3 UI's page of an experiment's runs table, or of the experiments list.

    The UI routes in the fragment (``#/experiments/<id>/runs``). ``workflowType`` picks its
    "Model training" view: MLflow 3 otherwise starts in its GenAI view, on traces.

    Example:
        >>> mlflow_ui_url("http://127.0.0.1:5000", "1")
        'http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning'
    """
    import urllib.parse

    page = "experiments"
    if experiment_id is not None:
        page += f"/{urllib.parse.quote(experiment_id, safe='')}/runs"
    return f"{base}/#/{page}?workflowType=machine_learning"


def _local_base(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server listening on ``host``."""
    # Listening on every interface includes the loopback.
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server_base(uri: str) -> str:
    """An MLflow server's address, without credentials: the browser asks for its own."""
    import urllib.parse

    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _shown(command: list[str]) -> str:
    from lrsearch.tracking import redact_url

    return " ".join(redact_url(part) for part in command)


def _store_exists(uri: str) -> bool:
    """Whether there may be anything at ``uri``: looking must not create an empty store."""
    from lrsearch.tracking import local_tracking_uri

    if "://" not in uri:  # a directory, as in mlflow_server_command
        if not Path(uri).expanduser().is_dir():
            return False
        uri = local_tracking_uri(Path(uri))[0]
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        return Path(uri.removeprefix("sqlite:///").partition("?")[0]).expanduser().is_file()
    return True


def _study_experiment(uri: str, name: str, *, mark: bool) -> str | None:
    """The id of the study's MLflow experiment, or None (with a note) when there is none.

    With ``mark`` the experiment is tagged ``mlflow.experimentKind=custom_model_development``
    unless it has a kind: MLflow 3 UIs that read the tag then open it on its runs. The UI must
    start even where this fails, so every problem here is a note, not an error.
    """
    import contextlib

    from lrsearch.errors import TrackingError
    from lrsearch.tracking import MlflowTracker, redact_url

    experiment_id = None
    try:
        if _store_exists(uri):
            tracker = MlflowTracker(uri)
            experiment_id = tracker.experiment_id(name)
    except TrackingError as exc:
        click.echo(f"note: {exc}", err=True)
        return None
    if experiment_id is None:
        click.echo(
            f"note: no MLflow experiment {name!r} in {redact_url(uri)} yet; "
            "showing the list of experiments",
            err=True,
        )
    elif mark:
        with contextlib.suppress(TrackingError):  # a read-only store still shows the runs
            tracker.mark_machine_learning(experiment_id)
    return experiment_id


def _wants_browser(choice: bool | None) -> bool:
    """--open, --no-open, else open when run in a terminal where a browser can show a window.

    Without a desktop, Python's webbrowser falls back to text browsers (lynx, w3m) that would
    take over the terminal the server logs to, so even --open leaves them alone.
    """
    if choice is False:
        return False
    desktop = (
        bool(os.environ.get("BROWSER"))  # the user's pick, e.g. an IDE's remote-opening helper
        or sys.platform in ("darwin", "win32")
        or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    )
    if choice and not desktop:
        click.echo(
            "note: no desktop browser here (no DISPLAY or BROWSER); open the page yourself",
            err=True,
        )
    return desktop and (bool(choice) or sys.stdout.isatty())


def _open_browser(url: str) -> bool:
    """Try to show ``url`` in a browser; no browser is not an error."""
    import webbrowser

    try:
        return webbrowser.open(url, new=2)
    except (webbrowser.Error, OSError):
        return False


def _open_when_up(
    url: str, health: str, stop: threading.Event, *, timeout_s: float = 300.0
) -> None:
    """Open ``url`` once ``health`` answers; give up when ``stop`` is set or after the timeout."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy to localhost
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            opener.open(health, timeout=2).close()
        except urllib.error.HTTPError as exc:
            exc.close()  # any HTTP answer means the server is up
        except OSError:
            stop.wait(0.5)
            continue
        _open_browser(url)
        return


def _serve(command: list[str], url: str, *, health: str, open_browser: bool) -> None:
    """Run ``mlflow server`` until Ctrl-C, opening the page in a browser once it answers."""
    click.echo(f"MLflow UI: {url}  (Ctrl-C to stop)", err=True)
    click.echo(f"  server: {_shown(command)}", err=True)
    stop = threading.Event()
    if open_browser:
        args = (url, health, stop)
        threading.Thread(target=_open_when_up, args=args, name="lrsearch-ui", daemon=True).start()
    try:
        subprocess.run(command, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except FileNotFoundError as exc:
        raise LrsearchError(f"cannot start the MLflow UI ({exc}); is mlflow installed?") from None
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
