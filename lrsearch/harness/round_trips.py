"""Storage round trips per trial: how often one lrsearch trial reaches its database.

Run ``python -m lrsearch.harness.round_trips [--storage URL] [--trials 7] [--epochs 3]``.
It opens a fresh study with :func:`lrsearch.study.open_study` on the storage (SQLite in a
temporary directory by default; opened by :func:`lrsearch.storage.open_storage`), runs its
trials the way ``lrsearch run`` does (:func:`lrsearch.workers.run_trials`, so
:class:`lrsearch.objective.Objective`; tracking off) on a small workload, and prints what each
round trip is for and how many each trial made.

A round trip is one database transaction: every call of an
:class:`~optuna.storages.RDBStorage` method that reaches the database opens one (Optuna's
cache in front of it answers some reads itself; those are not round trips). SQLAlchemy's
engine events count them, and the SQL statements in them, so the count does not depend on
load. What a round trip is for is read off the Python stack when it begins (:data:`PURPOSES`).
Optuna's heartbeat (its thread's beats and the stale-trial check ``optimize`` makes before
each trial) is listed apart: the beats follow the clock, not the trial. So is what
``lrsearch run`` reads once before its first trial.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import optuna

__all__ = [
    "MAX_PER_TRIAL",
    "PURPOSES",
    "WORKLOAD",
    "RoundTrips",
    "TrialRoundTrips",
    "count_round_trips",
    "measure",
    "table",
]

# A trial's own round trips (heartbeat apart) with the defaults of measure(): 27 before issue
# 14 (docs/storage-round-trips.md), 24 after; tests/test_round_trips.py holds it there.
MAX_PER_TRIAL = 24
WORKLOAD = "digits-mlp"  # small, and with a test split: a complete trial keeps test_metric
HEARTBEAT = "heartbeat"
ONCE = "once per run"
# (function's qualified name, what its round trips are for): the innermost one on the stack
# names a round trip; "{key}" is the user attribute's name.
PURPOSES: tuple[tuple[str, str], ...] = (
    ("HeartbeatThread._record_heartbeat", f"{HEARTBEAT}: beats (at the start, every 10 s)"),
    ("fail_stale_trials", f"{HEARTBEAT}: Optuna's stale-trial check before ask"),
    ("StudyHandle.n_finished", f"{ONCE}: finished trials before the first"),
    ("Trial.set_user_attr", "user attribute {key}"),
    ("fail_trial", "fail a lost worker's trial"),
    ("fail_stale", "lrsearch heartbeat: stale trials"),
    ("claim", "claim: read the trials (budget)"),
    ("system_attrs", "retry check: the trial's system attrs"),
    ("Trial._suggest", "suggest_params"),
    ("Trial.report", "report (per epoch)"),
    ("Trial.should_prune", "should_prune (per epoch; the pruner's reads)"),
    ("Trial.__init__", "ask: read the new trial"),
    ("Study._pop_waiting_trial_id", "ask: look for a queued trial"),
    ("Study.ask", "ask: create the trial"),
    ("_tell_with_warning", "tell"),
    ("MaxTrialsCallback.__call__", "after tell: budget check (stop?)"),
    ("_StopAtBudget.__call__", "after tell: budget check (stop?)"),
    ("StudyProgress.trial_done", "after tell: the progress display reads the trials"),
    ("_optimize_sequential", "after tell: Optuna reads the trial for callbacks"),
)
_PURPOSE = dict(PURPOSES)
_RDB_DIR = "optuna/storages/_rdb/"


@dataclass
class TrialRoundTrips:
    """One trial's round trips, ``(purpose, RDBStorage method) → transactions``, and statements."""

    number: int
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    statements: int = 0

    @property
    def total(self) -> int:
        """The trial's own round trips: Optuna's heartbeat and once-per-run reads left out."""
        return sum(n for (purpose, _), n in self.calls.items() if not _apart(purpose))

    def by_purpose(self) -> dict[str, int]:
        """The trial's own round trips by purpose (storage methods added up)."""
        out: Counter[str] = Counter()
        for (purpose, _), n in self.calls.items():
            if not _apart(purpose):
                out[purpose] += n
        return dict(sorted(out.items()))


def _apart(purpose: str) -> bool:
    return purpose.startswith((HEARTBEAT, ONCE))


def _describe(frame: FrameType | None) -> tuple[str, str]:
    """``(purpose, RDBStorage method)`` of the round trip that the stack at ``frame`` begins."""
    method, purpose, fallback = "?", "", ""
    while frame is not None:
        code = frame.f_code
        if _RDB_DIR in code.co_filename.replace("\\", "/"):
            method = code.co_name  # the outermost RDBStorage frame: the method called
        elif not purpose and code.co_qualname in _PURPOSE:
            purpose = _PURPOSE[code.co_qualname].format(key=frame.f_locals.get("key", "?"))
        elif not fallback and method != "?" and "sqlalchemy" not in code.co_filename:
            fallback = code.co_qualname
        frame = frame.f_back
    return purpose or fallback or "?", method


class RoundTrips:
    """Counts an RDB storage's transactions and statements; see :func:`count_round_trips`.

    :meth:`cut` closes one trial's count and starts the next one's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.trials: list[TrialRoundTrips] = []
        self._current = TrialRoundTrips(number=-1)

    def begin(self, *_: Any) -> None:
        key = _describe(sys._getframe(1))
        with self._lock:
            self._current.calls[key] += 1

    def statement(self, *_: Any) -> None:
        with self._lock:
            self._current.statements += 1

    def cut(self, number: int) -> None:
        """Everything since the last cut was trial ``number``'s."""
        with self._lock:
            done, self._current = self._current, TrialRoundTrips(number=-1)
            done.number = number
            self.trials.append(done)


@contextmanager
def count_round_trips(storage: optuna.storages.BaseStorage) -> Iterator[RoundTrips]:
    """Count what ``storage`` (an RDBStorage, or Optuna's cache in front of one) sends.

    Raises:
        TypeError: ``storage`` has no database behind it (a journal file, the gRPC proxy).
    """
    from sqlalchemy import event

    from lrsearch.storage import backend_of

    backend = backend_of(storage)  # behind lrsearch's retrying wrapper and Optuna's cache
    if not isinstance(backend, optuna.storages.RDBStorage):
        raise TypeError(f"round trips are counted on an RDBStorage, got {type(storage).__name__}")
    counter = RoundTrips()
    engine = backend.engine
    event.listen(engine, "begin", counter.begin)
    event.listen(engine, "before_cursor_execute", counter.statement)
    try:
        yield counter
    finally:
        event.remove(engine, "begin", counter.begin)
        event.remove(engine, "before_cursor_execute", counter.statement)


def measure(
    storage_url: str,
    *,
    workload: str = WORKLOAD,
    n_trials: int = 7,
    epochs: int = 3,
    pruner: str = "none",
    study_name: str = "round-trips",
) -> list[TrialRoundTrips]:
    """Round trips of each trial of a new study on ``storage_url``, run as ``lrsearch run`` does.

    The first trial is the prior's centre (queued when the study opens), the next four draw
    ``max_lr`` from the prior, and from the sixth on TPE samples. ``pruner`` is the study's
    (``none`` by default: a pruner's reads depend on its settings and on what the trials
    report, and a pruned trial reports less).
    """
    from lrsearch.config import parse_study_config
    from lrsearch.storage import backend_of, storage_of
    from lrsearch.study import open_study
    from lrsearch.workers import run_trials

    study = {"name": study_name, "workload": workload, "n_trials": n_trials, "epochs": epochs}
    config = parse_study_config(
        {
            "study": study,
            "range_test": {"repeats": 1, "num_iter": 20},
            "pruner": {"name": pruner},
            "tracking": {"enabled": False, "update_ratio_every": 0},
        }
    )
    handle = open_study(config, storage_url, tracking_uri=None)
    storage = storage_of(handle.study)
    try:
        with count_round_trips(storage) as counter:
            run_trials(
                handle,
                n_trials=n_trials,
                on_trial=lambda trial: counter.cut(trial.number),
                echo=lambda _: None,
            )
    finally:
        backend = backend_of(storage)
        if isinstance(backend, optuna.storages.RDBStorage):
            backend.engine.dispose()  # the bench drops its database next
    return counter.trials


def table(trials: list[TrialRoundTrips]) -> str:
    """A markdown table: purpose and RDBStorage method → round trips in each trial."""
    keys = sorted({k for t in trials for k in t.calls}, key=lambda k: (_apart(k[0]), k))
    lines = [
        "| round trip for | RDBStorage method | " + _row(f"trial {t.number}" for t in trials),
        "|---|---|" + "---:|" * len(trials),
    ]
    lines += [f"| {k[0]} | `{k[1]}` | " + _row(t.calls.get(k, 0) for t in trials) for k in keys]
    lines.append("| **the trial's own** | | " + _row(f"**{t.total}**" for t in trials))
    lines.append("| SQL statements (all) | | " + _row(t.statements for t in trials))
    return "\n".join(lines)


def _row(values: Iterable[object]) -> str:
    return " | ".join(str(v) for v in values) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="a database URL (default: SQLite in a temporary dir)")
    parser.add_argument("--workload", default=WORKLOAD, help="the study's workload (a small one)")
    parser.add_argument("--trials", type=int, default=7, help="trials in the study")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (reports)")
    parser.add_argument("--pruner", default="none", help="the study's pruner (none: no reads)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        trials = measure(
            args.storage or f"sqlite:///{tmp}/round-trips.db",
            workload=args.workload,
            n_trials=args.trials,
            epochs=args.epochs,
            pruner=args.pruner,
        )
    print(table(trials))


if __name__ == "__main__":
    main()
