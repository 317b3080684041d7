"""The embedded storage's journal file, kept readable after a crash or a full disk.

Optuna's journal is one JSON record per line, appended under a file lock. A process killed
mid-write (or a disk that filled up) leaves a cut last line; Optuna's reader skips it, but the
next append lands right after it, gluing two records into one unreadable line in the middle
of the file, and from then on no process can read the study. :class:`SafeJournalFile` sets
such a tail aside before that can happen: on open, and before every append whose file does
not end on a whole line, the bytes after the last whole record move to
``<journal>.corrupt-<UTC time>`` next to the journal (one warning names it) and the journal
is cut back to that record, so new records start on a fresh line and nothing earlier is lost.

Every record is written at once (every process reads it right away, and it survives the
writing process's crash), but only the records a power loss must not take are fsynced on
the spot: see :data:`LAZY_OPS`.

A bad record *followed by* good ones (the file was edited, or damaged by an older version)
cannot be set aside without losing what follows it: that is :class:`JournalCorrupt`, whose
message names the file, the line and what to do.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, BinaryIO

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._storage import JournalOperation

from lrsearch.errors import StorageError

__all__ = ["LAZY_OPS", "JournalCorrupt", "SafeJournalFile", "check_readable", "set_aside_tail"]

_CHUNK = 1 << 16  # the tail is searched backwards in chunks this big (growing)

LAZY_OPS = frozenset(
    {
        JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE,
        JournalOperation.SET_TRIAL_USER_ATTR,
        JournalOperation.SET_TRIAL_SYSTEM_ATTR,
    }
)
"""Records fsynced lazily: at the next record that is fsynced, or on a background thread
(the writer does not wait for the disk) at the first append once the last fsync is
:data:`LAZY_SYNC_S` old.

They are a running trial's epoch values and attributes (worker, heartbeat, derived values,
resume point), written every epoch or every few seconds. A power loss can take at most the
last second of them, from a trial that was running, so is retried anyway. A trial's end is
a state record, fsynced, and fsync covers the whole file: every attribute and value written
before it is durable with it. Studies and trials created, parameters, states and values,
study attributes and discarded trials are fsynced before the append returns, as Optuna does.
"""

LAZY_SYNC_S = 1.0


class JournalCorrupt(StorageError):
    """A journal record that is not the last one cannot be read."""


def _is_record(line: bytes) -> bool:
    """Whether ``line`` (with its newline) is one whole journal record."""
    if not line.endswith(b"\n"):
        return False
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return False
    return isinstance(record, dict) and "op_code" in record


def _last_record_end(data: bytes, *, whole: bool) -> int | None:
    """Index in ``data`` just after its last whole record; None if it may lie further back.

    ``data`` is the end of the file; ``whole`` says it is all of it.
    """
    end = data.rfind(b"\n") + 1  # after the last newline: what follows is a cut line
    while end > 0:
        begin = data.rfind(b"\n", 0, end - 1) + 1
        if begin == 0 and not whole:
            return None  # this line may start before the chunk
        if _is_record(data[begin:end]):
            return end
        end = begin
    return 0 if whole else None


def _tail_offset(path: Path) -> tuple[int, int]:
    """(offset where the unreadable tail starts, file size); equal when there is none."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        chunk = _CHUNK
        while True:
            start = max(0, size - chunk)
            f.seek(start)
            end = _last_record_end(f.read(size - start), whole=start == 0)
            if end is not None:
                return start + end, size
            chunk *= 4


def set_aside_tail(path: Path) -> Path | None:
    """Move an unreadable tail of the journal at ``path`` to a file next to it.

    The caller holds the journal's lock (no other process appends meanwhile). Returns the
    file the tail went to, or None when the journal ends on a whole record.
    """
    offset, size = _tail_offset(path)
    if offset == size:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():  # two repairs within a second
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    with path.open("r+b") as f:
        f.seek(offset)
        aside.write_bytes(f.read())
        f.truncate(offset)
        f.flush()
        os.fsync(f.fileno())
    print(
        f"warning: the journal {path} ended in {size - offset} byte(s) that are not a whole "
        f"record (a write cut short: a crash or a full disk); set aside in {aside}, the study "
        "continues from the last whole record",
        file=sys.stderr,
    )
    return aside


def _ends_cut(f: BinaryIO) -> bool:
    """Whether the file open as ``f`` ends inside a line (leaves ``f`` at its end)."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return False
    f.seek(size - 1)
    return f.read(1) != b"\n"


def check_readable(path: Path) -> JournalCorrupt:
    """The error for a journal Optuna could not read: which line, and what to do."""
    good = 0
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not _is_record(line):
                return JournalCorrupt(
                    f"the journal {path} has an unreadable record at line {number} with "
                    "records after it, so it cannot be set aside by itself; keep a copy of "
                    f"the file, then either restore it from a backup or keep its first {good} "
                    f"line(s) (head -n {good} FILE > FILE.fixed, then move FILE.fixed in "
                    "place: the trials recorded after that line are lost)"
                )
            good = number
    return JournalCorrupt(f"the journal {path} cannot be read; restore it from a backup")


class _Syncer:
    """fsyncs one file on a daemon thread when asked; asks made while it syncs make one more.

    One per journal file and process (:func:`_background_sync`), however many backends of the
    file the process opens.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._asked = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=self._run, name="lrsearch-journal-fsync", daemon=True
        )
        self._thread.start()

    def alive(self) -> bool:
        return self._pid == os.getpid() and self._thread.is_alive()  # not a forked copy

    def ask(self) -> None:
        self._asked.set()

    def _run(self) -> None:
        while True:
            self._asked.wait()
            self._asked.clear()
            try:
                fd = os.open(self._path, os.O_RDONLY)
                try:
                    os.fsync(fd)  # the file's data, whichever descriptor wrote it
                finally:
                    os.close(fd)
            except OSError:
                pass  # the next durable record fsyncs the whole file anyway


_SYNCERS: dict[Path, _Syncer] = {}
_SYNCERS_LOCK = threading.Lock()


def _background_sync(path: Path) -> None:
    """Have ``path`` fsynced on this process's syncer thread for it (started on first use)."""
    with _SYNCERS_LOCK:
        syncer = _SYNCERS.get(path)
        if syncer is None or not syncer.alive():  # first, or in a forked child
            syncer = _SYNCERS[path] = _Syncer(path)
    syncer.ask()


class SafeJournalFile(JournalFileBackend):
    """Optuna's journal file backend that sets a cut or corrupt last record aside.

    On open the tail is checked once; before each append only the last byte is (a partial
    line left by a process that died since), through the file the append writes to.
    Records in :data:`LAZY_OPS` are fsynced lazily, the others at once.
    """

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._path = Path(file_path)
        self._synced_at = time.monotonic()
        if _tail_offset(self._path)[0] != self._path.stat().st_size:
            with self._locked():
                set_aside_tail(self._path)

    def _locked(self) -> Any:
        from optuna.storages.journal._file import get_lock_file

        return get_lock_file(self._lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Optuna's append (one write), after a cut tail is set aside: one lock, one open."""
        lines = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        durable = any(log["op_code"] not in LAZY_OPS for log in logs)
        with self._locked(), self._path.open("a+b") as f:  # appends wherever f was read
            if _ends_cut(f):  # a process died mid-write since this one opened the file
                set_aside_tail(self._path)
            f.write(lines.encode("utf-8"))
            f.flush()
            now = time.monotonic()
            if durable:
                os.fsync(f.fileno())  # the whole file: earlier lazy records too
                self._synced_at = now
            elif now - self._synced_at >= LAZY_SYNC_S:
                _background_sync(self._path)  # lazy records: the caller does not wait for the disk
                self._synced_at = now

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        try:
            yield from super().read_logs(log_number_from)
        except ValueError:  # a bad record with good ones after it (JSONDecodeError included)
            raise check_readable(self._path) from None
