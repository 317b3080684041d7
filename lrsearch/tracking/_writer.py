"""The MLflow writer process: the tracking store's writes, out of the training process.

MLflow's SQL store spends ~0.07 ms of CPU per metric point, and on a thread of the training
process that CPU holds the GIL the training loop needs. So an :class:`MlflowTracker` hands its
writes (runs created, ``log_batch``, run ends, artifacts) to one writer process per training
process, over a pipe: the training process only pickles plain tuples; the writer owns its own
``MlflowClient``.

Every write is a request with an answer (a created run's id): the caller (mostly the tracker's
sender thread) waits, without the GIL, until the writer has committed it or says why not, so a
write that returned is stored, and a failure is the same one-line :class:`TrackingError` as
in process. Requests are served in the order they are sent. A writer that dies is noticed
within :data:`POLL_SECONDS`, said in one line on stderr, and the tracker writes in process from
then on: training never waits on a dead writer.

The writer ignores SIGINT and SIGTERM (Ctrl-C reaches the whole process group, and a run's end
may still have to go out after it); it exits when its pipe closes (the training process exited
or was killed) or when its parent process is gone.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lrsearch.errors import TrackingError
from lrsearch.tracking._scrub import scrub

__all__ = ["ENV", "POLL_SECONDS", "Writer", "shared_writer", "start_writer"]

ENV = "LRSEARCH_MLFLOW_WRITER"
"""Set to ``0`` to write to MLflow in the training process (no writer process)."""
POLL_SECONDS = 0.25
"""How often a caller waiting for an answer checks that the writer still lives."""

Key = tuple[str, "str | None"]  # (tracking URI, artifact root): one client per key

# What the writer may be asked to do: the in-process write primitives of MlflowTracker.
WRITES = frozenset(
    {
        "_create_run_here",
        "_write_here",
        "_set_status_here",
        "_delete_run_here",
        "_log_text_here",
        "_log_file_here",
        "_log_table_here",
    }
)


class Writer:
    """The training process's side of one writer process (see :func:`shared_writer`)."""

    def __init__(self) -> None:
        ask_child, ask = os.pipe()  # requests: parent -> child
        answer, answer_child = os.pipe()  # answers: child -> parent
        root = str(Path(__file__).resolve().parents[2])  # lrsearch's own checkout or site dir
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _MAIN, str(ask_child), str(answer_child)],
                pass_fds=(ask_child, answer_child),
                stdin=subprocess.DEVNULL,
                stdout=2,  # stdout belongs to the CLI (``--json``); MLflow may print there
                env={**os.environ, "PYTHONPATH": path},
            )
        except OSError:
            for fd in (ask, answer):
                os.close(fd)
            raise
        finally:
            os.close(ask_child)
            os.close(answer_child)
        self.pid = os.getpid()  # the process that owns these pipes (a fork does not)
        self.dead: str | None = None
        self._ask = Connection(ask, readable=False)
        self._answer = Connection(answer, writable=False)
        self._owed = 0  # answers not read yet (a caller interrupted while it waited)
        self._lock = threading.Lock()

    def call(self, key: Key, op: str, *args: Any) -> Any:
        """Have the writer run ``op(*args)`` on its tracker for ``key``; its return value.

        Raises:
            TrackingError: the store refused (the writer's one-line message), or the writer
                died (then :attr:`dead` says so and later calls must not come here).
        """
        with self._lock:
            if self.dead is not None:
                raise TrackingError(self.dead)
            try:
                while self._owed:  # an interrupted caller's answer: not ours
                    self._receive()
                self._owed += 1
                self._ask.send((key, op, args))
                kind, value = self._receive()
            except (EOFError, OSError):
                self._died()
                raise TrackingError(self.dead) from None
        if kind == "error":
            raise TrackingError(value)
        return value

    def _receive(self) -> tuple[str, Any]:
        while not self._answer.poll(POLL_SECONDS):  # waits without the GIL
            if self.process.poll() is not None:
                raise EOFError
        answer: tuple[str, Any] = self._answer.recv()
        self._owed -= 1
        return answer

    def _died(self) -> None:
        self._ask.close()
        self._answer.close()
        try:
            code = self.process.wait(1.0)  # its pipe closed: it is on its way out
        except subprocess.TimeoutExpired:  # alive but not answering: make sure
            self.process.kill()
            code = self.process.wait()
        self.dead = (
            f"MLflow writer process {self.process.pid} died (exit code {code}); "
            "writing in the training process from now on"
        )
        print(f"warning: {self.dead}", file=sys.stderr)

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the pipe (the writer finishes what it was asked, then exits) and wait for it;
        kill it after ``timeout_s``."""
        if self.pid != os.getpid():
            return
        self._ask.close()
        self._answer.close()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Shared:
    """This process's writer (a forked child starts its own)."""

    writer: Writer | None = None
    lock = threading.Lock()


def shared_writer() -> Writer | None:
    """This process's writer, started on the first call (and again after one died); None,
    with a warning, where no process can be started (writes then stay in process)."""
    with _Shared.lock:
        writer = _Shared.writer
        if writer is None or writer.pid != os.getpid() or writer.dead:
            try:
                writer = _Shared.writer = Writer()
            except OSError as exc:
                print(
                    f"warning: no MLflow writer process ({exc}); writing in process",
                    file=sys.stderr,
                )
                return None
        return writer


def start_writer() -> None:
    """Start this process's writer now, unless ``$LRSEARCH_MLFLOW_WRITER`` is ``0``: its start
    (importing MLflow, ~2 s) then overlaps the caller's own (torch, the study) instead of
    holding up the first write. A writer no tracker uses idles and exits with the process."""
    if os.environ.get(ENV, "1") != "0":
        shared_writer()


def _close_at_exit() -> None:
    # After the sender threads' last writes (threads are joined before atexit runs).
    writer = _Shared.writer
    if writer is not None and writer.dead is None:
        writer.close()


def _forget_after_fork() -> None:
    _Shared.writer, _Shared.lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_close_at_exit)


# -- the writer process ------------------------------------------------------------------------


def _serve(ask: Connection, answer: Connection, make: Callable[[str, str | None], Any]) -> None:
    """Answer requests in order until the pipe closes or the parent process is gone."""
    parent = os.getppid()
    trackers: dict[Key, Any] = {}
    while True:
        if not ask.poll(1.0):
            if os.getppid() != parent:
                return
            continue
        try:
            key, op, args = ask.recv()
        except (EOFError, OSError):
            return
        try:
            if op == "cpu_seconds":
                reply: tuple[str, Any] = ("ok", time.process_time())
            elif op not in WRITES:
                reply = ("error", f"the MLflow writer process does not do {op!r}")
            else:
                if key not in trackers:
                    trackers[key] = make(*key)
                reply = ("ok", getattr(trackers[key], op)(*args))
        except Exception as exc:  # TrackingError already says it in one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            reply = ("error", scrub(first))
        try:
            answer.send(reply)
        except OSError:  # the training process is gone
            return


_MAIN = "import sys; from lrsearch.tracking._mlflow import serve_writer; serve_writer(sys.argv[1:])"


def main(argv: list[str], make: Callable[[str, str | None], Any]) -> None:
    """The writer process: ``argv`` holds its request and answer file descriptors; ``make``
    builds the in-process tracker for a (tracking URI, artifact root)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ask = Connection(int(argv[0]), writable=False)
    answer = Connection(int(argv[1]), readable=False)
    import mlflow  # noqa: F401  # now, while the training process starts: not at its first write

    _serve(ask, answer, make)
