"""``lrsearch ui``'s MLflow server: where its page is, starting it, and stopping it whole.

The server runs in a process group of its own (``mlflow server`` starts uvicorn, which starts
its workers): stopping it stops the group, so nothing is left listening after Ctrl-C or
SIGTERM. Its output goes to a log file, not the terminal (its deprecation-warning blocks would
push the page's address off the screen); a failed start is one line naming that file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from lrsearch.errors import ConfigError, TrackingError
from lrsearch.tracking._mlflow import MlflowTracker, local_tracking_uri
from lrsearch.tracking._scrub import redact_url, without_userinfo

VIEW_KEY = "lrsearch"
"""The share key of the runs-table view lrsearch stores on a study's experiment."""

VIEW_TAG = "mlflow.sharedViewState."
"""MLflow 3's experiment-tag prefix for a shared runs-table view (``?viewStateShareKey=``)."""

STOP_GRACE_S = 10.0


def server_command(tracking_uri: str, *, host: str, port: int) -> list[str]:
    """``mlflow server`` for a tracking URI; a directory means the embedded store in it."""
    artifacts: str | None = None
    if "://" not in tracking_uri:
        tracking_uri, artifacts = local_tracking_uri(Path(tracking_uri))
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri]
    command += ["--host", host, "--port", str(port)]
    if artifacts:
        command += ["--default-artifact-root", artifacts]
    return command


def ui_url(base: str, experiment_id: str | None = None, *, view: str | None = None) -> str:
    """The MLflow 3 UI's page of an experiment's runs table, or of the experiments list.

    The UI routes in the fragment (``#/experiments/<id>/runs``). ``workflowType`` picks its
    "Model training" view: MLflow 3 otherwise starts in its GenAI view, on traces. ``view``
    is a shared view's key (:func:`store_runs_view`): its columns and order.

    Example:
        >>> ui_url("http://127.0.0.1:5000", "1")
        'http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning'
    """
    page = "experiments"
    if experiment_id is not None:
        page += f"/{urllib.parse.quote(experiment_id, safe='')}/runs"
    query = "workflowType=machine_learning"
    if view is not None and experiment_id is not None:
        query = f"viewStateShareKey={urllib.parse.quote(view, safe='')}&{query}"
    return f"{base}/#/{page}?{query}"


def local_base(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server listening on ``host``."""
    # Listening on every interface includes the loopback.
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server_base(uri: str) -> str:
    """An MLflow server's address, without credentials: the browser asks for its own."""
    parts = urllib.parse.urlsplit(without_userinfo(uri))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def shown(command: Sequence[str]) -> str:
    """A command as one line, credentials redacted."""
    return " ".join(redact_url(part) for part in command)


# --- the study's experiment and its runs view ---------------------------------------------


def store_exists(uri: str) -> bool:
    """Whether there may be anything at ``uri``: looking must not create an empty store."""
    if "://" not in uri:  # a directory, as in server_command
        if not Path(uri).expanduser().is_dir():
            return False
        uri = local_tracking_uri(Path(uri))[0]
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        return Path(uri.removeprefix("sqlite:///").partition("?")[0]).expanduser().is_file()
    return True


def runs_view(metric: str, *, maximize: bool, params: Sequence[str]) -> dict[str, object]:
    """A runs-table view: the metric and ``params`` as columns, best run first.

    Keys as MLflow 3's UI writes them (``metrics.`val_accuracy```), the run's outcome
    (tag ``lrsearch.state``) after the metric.
    """
    metric_key = f"metrics.`{metric}`"
    columns = [metric_key, "tags.`lrsearch.state`", *(f"params.`{p}`" for p in params)]
    return {"orderByKey": metric_key, "orderByAsc": not maximize, "selectedColumns": columns}


def study_experiment(
    uri: str,
    name: str,
    *,
    view: dict[str, object] | None,
    note: Callable[[str], None],
) -> tuple[str | None, str | None]:
    """The study's experiment id and the key of its stored runs view (or None, None).

    With a ``view`` (not on a dry run), the experiment is tagged as classic machine learning
    unless it has a kind, and the view is stored on it (:data:`VIEW_TAG`). The UI must
    start even where this fails, so every problem here is a ``note``, not an error.
    """
    try:
        tracker = MlflowTracker(uri, writer=False) if store_exists(uri) else None  # reads
        experiment_id = tracker.experiment_id(name) if tracker else None
    except TrackingError as exc:
        note(f"note: {exc}")
        return None, None
    if experiment_id is None:
        note(
            f"note: no MLflow experiment {name!r} in {redact_url(uri)} yet; "
            "showing the list of experiments"
        )
        return None, None
    if view is None or tracker is None:
        return experiment_id, None
    try:
        tracker.mark_machine_learning(experiment_id)
        tracker._client.set_experiment_tag(experiment_id, VIEW_TAG + VIEW_KEY, json.dumps(view))
    except Exception:  # a read-only store still shows the runs, in MLflow's own order
        return experiment_id, None
    return experiment_id, VIEW_KEY


# --- the server ------------------------------------------------------------------------------


def check_port(host: str, port: int) -> None:
    """Refuse a port something already listens on, before anything is started.

    Raises:
        ConfigError: the port is taken (naming it and the fix).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(
                    f"--host/--port: cannot listen on {host}:{port} ({exc.strerror})"
                ) from None
            raise ConfigError(
                f"--port: port {port} on {host} is already in use (another MLflow UI?); "
                "stop that or choose another with --port N"
            ) from None


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether an HTTP server answers at ``url`` (any status counts)."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy to localhost
    try:
        opener.open(url, timeout=timeout_s).close()
    except urllib.error.HTTPError as exc:
        exc.close()
    except OSError:
        return False
    return True


def stop_group(process: subprocess.Popen[bytes], *, grace_s: float = STOP_GRACE_S) -> None:
    """Stop ``process`` and everything in its process group: SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break  # the group is empty
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait_s)
        if not _group_alive(process.pid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """Within the block, SIGTERM ends the server as Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def serve(
    command: Sequence[str],
    url: str,
    *,
    health: str,
    log: Path,
    say: Callable[[str], None],
    on_up: Callable[[], object] = lambda: None,
    start_timeout_s: float = 600.0,
) -> None:
    """Run the server until Ctrl-C or SIGTERM; print ``url`` once ``health`` answers.

    Raises:
        TrackingError: the server could not start, exited, or did not answer in time.
    """
    say(f"MLflow UI: starting the server (log: {log}) ...")
    log.parent.mkdir(parents=True, exist_ok=True)
    with _sigterm_stops(), log.open("wb") as out:
        try:
            process = subprocess.Popen(
                list(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped whole
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as exc:
            raise TrackingError(
                f"cannot start the MLflow UI ({exc}); is mlflow installed?"
            ) from None
        try:
            _wait_until_up(process, health, log, start_timeout_s)
            say(f"MLflow UI: {url}  (Ctrl-C to stop)")
            on_up()
            code = process.wait()
            if code != 0:
                raise TrackingError(_failure(f"the MLflow server exited with code {code}", log))
        except KeyboardInterrupt:
            say("MLflow UI: stopped")
        finally:
            stop_group(process)


def _wait_until_up(
    process: subprocess.Popen[bytes], health: str, log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers(health):
        code = process.poll()
        if code is not None:
            raise TrackingError(
                _failure(f"the MLflow server exited with code {code} before answering", log)
            )
        if time.monotonic() > deadline:
            raise TrackingError(
                _failure(f"the MLflow server did not answer in {timeout_s:.0f}s", log)
            )
        time.sleep(0.5)


def _failure(what: str, log: Path) -> str:
    """``what``, the server's last error line, and where its whole output is."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    errors = [line.strip() for line in lines if "Error" in line or "error" in line]
    last = errors[-1] if errors else (lines[-1].strip() if lines else "")
    said = f": {last[:200]}" if last else ""
    return f"{what}{said} (its output: {log})"


# --- the browser -------------------------------------------------------------------------


def wants_browser(choice: bool | None, *, note: Callable[[str], None]) -> bool:
    """--open, --no-open, else open when run in a terminal where a browser can show a window.

    Without a desktop, Python's webbrowser falls back to text browsers (lynx, w3m) that would
    take over the terminal, so even --open leaves them alone.
    """
    if choice is False:
        return False
    desktop = (
        bool(os.environ.get("BROWSER"))  # the user's pick, e.g. an IDE's remote-opening helper
        or sys.platform in ("darwin", "win32")
        or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    )
    if choice and not desktop:
        note("note: no desktop browser here (no DISPLAY or BROWSER); open the page yourself")
    return desktop and (bool(choice) or sys.stdout.isatty())


def open_browser(url: str) -> bool:
    """Try to show ``url`` in a browser; no browser is not an error."""
    import webbrowser

    try:
        return webbrowser.open(url, new=2)
    except (webbrowser.Error, OSError):
        return False
