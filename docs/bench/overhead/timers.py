"""What lrsearch's own functions cost the training thread in one trial, without a profiler.

Each function on a trial's path (Optuna's report and should_prune, the journal append, the
checkpoint save, the recorder's step and epoch, the MLflow run's creation, sampling) is wrapped
with ``time.perf_counter``; TRIALS trials of the overhead section's study run with MLflow
recording (one untimed warm-up first), each followed by its bare twin. Run from the repository
root:

    PYTHONPATH=. python docs/bench/overhead/timers.py WORKLOAD EPOCHS TRIALS

Prints each pair's wall times and, per function, milliseconds per trial and per call. The pair
ratios are as noisy as the machine (take those from ``lrsearch bench --sections overhead``);
the per-function times are what the training thread spent there.
"""

from __future__ import annotations

import collections
import functools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

import lrsearch.tracking._mlflow as mlflow_tracking
from lrsearch import checkpoints, journal, objective, recording
from lrsearch.harness.bench import _overhead as o

SECONDS: dict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter[str] = collections.Counter()


def _timed(owner: Any, name: str) -> None:
    function = getattr(owner, name)
    label = f"{owner.__name__}.{name}"

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - started
            CALLS[label] += 1

    setattr(owner, name, timed)


for owner, names in [
    (optuna.Trial, ("report", "should_prune", "set_user_attr")),
    (optuna.Study, ("ask",)),
    (journal.SafeJournalFile, ("append_logs",)),
    (checkpoints.TrialCheckpoints, ("save", "remove")),
    (recording._Recording, ("step", "epoch", "end")),
    (objective.Objective, ("sample", "_train", "_end")),
    (mlflow_tracking.MlflowTracker, ("_create_run",)),
]:
    for name in names:
        _timed(owner, name)


class _Config:
    overhead_storage = "journal"


def main(workload: str, epochs: int, trials: int) -> None:
    torch.set_num_threads(1)  # as the bench and the workers
    handle, recorder = o._open(_Config, Path(tempfile.mkdtemp()), workload, epochs)  # type: ignore[arg-type]
    upcoming = o._upcoming(handle)
    o._one_trial(handle, recorder, upcoming.number)  # warm-up
    SECONDS.clear()
    CALLS.clear()
    total = bare_total = 0.0
    for _ in range(trials):
        upcoming = o._upcoming(handle)
        clock, _writer, trial = o._one_trial(handle, recorder, upcoming.number)
        k = max(trial.intermediate_values) if trial.intermediate_values else epochs
        bare = o._bare(handle, trial, stop_after=k if trial.state.name == "PRUNED" else None)
        bare_s = bare.until(k)[0]
        total, bare_total = total + clock.wall, bare_total + bare_s
        print(
            f"trial {trial.number} {trial.state.name} {k} epochs: {clock.wall:.3f} s, bare {bare_s:.3f} s"
        )
    print(f"all: {total:.3f} s against {bare_total:.3f} s bare ({total / bare_total:.3f})")
    for label, seconds in sorted(SECONDS.items(), key=lambda item: -item[1]):
        per_call = seconds / CALLS[label] * 1e3
        print(
            f"{label:40s} {seconds / trials * 1e3:8.1f} ms/trial {CALLS[label]:7d} calls {per_call:7.3f} ms/call"
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
