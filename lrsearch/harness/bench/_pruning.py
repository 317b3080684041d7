"""The pruning section: every pruner replayed on the same unpruned studies.

Its own module so the search arms (``_search``) and the replay (``_curves``) each stay one
concept: this one joins them, and neither imports the other's driver.
"""

from __future__ import annotations

from typing import Any

from lrsearch.harness.bench._config import PRUNER_ARMS, BenchConfig
from lrsearch.harness.bench._curves import pruning_runs, record_or_load
from lrsearch.harness.bench._search import Advance, RangeTests, Task, section_head

__all__ = ["run_pruning"]


def run_pruning(
    config: BenchConfig, tasks: dict[str, Task], ranges: RangeTests, advance: Advance
) -> dict[str, Any]:
    """Every pruner of :data:`PRUNER_ARMS`, replayed on one unpruned study per workload and seed.

    Each (workload, seed) study runs once without pruning (lrsearch's sampler and range-test
    prior, ``trials`` trials; :func:`~lrsearch.harness.bench._curves.record_curves`), and
    every pruner is replayed on its trials (:func:`~lrsearch.harness.bench._curves.replay`).
    With ``config.curves`` set, recorded studies are kept there and reused.
    """
    out: dict[str, Any] = {}
    for name, task in tasks.items():
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PRUNER_ARMS}
        for seed in range(config.seeds):
            curves = record_or_load(task, seed, config.trials, ranges, config.curves)
            for pruner, run in pruning_runs(curves).items():
                runs[pruner].append({"seed": seed, **run})
            advance()
        out[name] = {**section_head(task), "trials": config.trials, "runs": runs}
    return out
