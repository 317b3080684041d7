"""``lrsearch bench``: measure that the method pays off.

Four sections, each a question with a number for an answer:

1. **search efficiency**: lrsearch (range-test prior, PriorGuidedSampler, PlateauPruner, the
   range test paid from its budget) against TPE and random search over a wide ``max_lr``
   range, and against the fastai and torch one-cycle recipes;
2. **pruning**: PlateauPruner against Optuna's median and Hyperband pruners and none;
3. **overhead**: one trial inside lrsearch (journal, pruner, MLflow) against the bare loop,
   and one of a fast-step workload;
4. **storage**: 1-8 worker processes against PostgreSQL, latency as the study grows.

Example (the import runs as a doctest; the benchmark itself takes minutes):
    >>> from lrsearch.harness.bench import SIZES, run_bench, write_report
    >>> report = run_bench(SIZES["quick"])                     # doctest: +SKIP
    >>> write_report(report, Path("bench-report"), command="")  # doctest: +SKIP

The package never imports torch at import time: the storage section's worker processes
import it.
"""

from __future__ import annotations

from lrsearch.harness.bench._config import ARMS, PRUNER_ARMS, SECTIONS, SIZES, BenchConfig
from lrsearch.harness.bench._recipes import TwoPhaseCycle, fastai_one_cycle, torch_one_cycle
from lrsearch.harness.bench._report import render_markdown, write_report
from lrsearch.harness.bench._run import merge_reports, run_bench
from lrsearch.harness.bench._targets import evaluate_targets

__all__ = [
    "ARMS",
    "PRUNER_ARMS",
    "SECTIONS",
    "SIZES",
    "BenchConfig",
    "TwoPhaseCycle",
    "evaluate_targets",
    "fastai_one_cycle",
    "merge_reports",
    "render_markdown",
    "run_bench",
    "torch_one_cycle",
    "write_report",
]
