"""Which file storage the embedded default should use: SQLite or Optuna's journal file.

Run ``python -m lrsearch.harness.storage_choice [--trials 60] [--workers 1,4] [--epochs 10]``.
Each worker process runs the storage traffic of an lrsearch trial (ask, seven suggests, five
user attributes, a report and a pruning check per epoch, tell) against one shared file, with no
training in between, so storage time is all there is. It prints, per backend and number of
workers: storage seconds per trial (median and p95) and the errors workers hit (``database is
locked`` is the one SQLite gives under concurrent writers).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

import optuna

BACKENDS = ("sqlite", "journal")


def _open(backend: str, path: Path) -> optuna.storages.BaseStorage:
    if backend == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{path / 'optuna.db'}")
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path / "optuna.journal")))


def _one_trial(study: optuna.Study, epochs: int) -> None:
    trial = study.ask()
    for name in ("max_lr", "div", "cycle", "annihilation", "m_high", "m_low", "wd"):
        trial.suggest_float(name, 1e-3, 1.0, log=True)
    for key in ("worker", "device", "derived", "mlflow_run_id", "seconds"):
        trial.set_user_attr(key, "x")
    for epoch in range(1, epochs + 1):
        trial.report(0.5, epoch)
        trial.should_prune()
    study.tell(trial, 0.5)


def _worker(backend: str, path: str, trials: int, epochs: int, out: mp.Queue) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="choice", storage=_open(backend, Path(path)))
    times, errors = [], []
    for _ in range(trials):
        started = time.perf_counter()
        try:
            _one_trial(study, epochs)
        except Exception as exc:  # counted, not raised: the point is how often it happens
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
        times.append(time.perf_counter() - started)
    out.put((times, errors))


def measure(backend: str, workers: int, trials: int, epochs: int) -> dict[str, object]:
    """Seconds per trial (median, p95) and errors, ``workers`` processes on one file."""
    with tempfile.TemporaryDirectory() as tmp:
        optuna.create_study(study_name="choice", storage=_open(backend, Path(tmp)))
        queue: mp.Queue = mp.Queue()
        procs = [
            mp.Process(target=_worker, args=(backend, tmp, trials, epochs, queue))
            for _ in range(workers)
        ]
        for p in procs:
            p.start()
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
    times = sorted(t for r in results for t in r[0])
    errors = [e for r in results for e in r[1]]
    return {
        "backend": backend,
        "workers": workers,
        "median_s": statistics.median(times),
        "p95_s": times[int(0.95 * (len(times) - 1))],
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60, help="trials per worker")
    parser.add_argument("--workers", default="1,4", help="comma-separated worker counts")
    parser.add_argument("--epochs", type=int, default=10, help="reports per trial")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print("| backend | workers | median s/trial | p95 s/trial | errors |")
    print("|---|---|---|---|---|")
    for n in (int(w) for w in args.workers.split(",")):
        for backend in BACKENDS:
            r = measure(backend, n, args.trials, args.epochs)
            print(
                f"| {r['backend']} | {r['workers']} | {r['median_s']:.4f} | {r['p95_s']:.4f} | "
                f"{r['errors']} {r['first_error']} |"
            )


if __name__ == "__main__":
    main()
