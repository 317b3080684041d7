"""What a benchmark run measures, and how much of it: :class:`BenchConfig` and its sizes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ARMS",
    "OVERHEAD_TRIAL_S",
    "PRUNER_ARMS",
    "SEARCH_ARMS",
    "SECTIONS",
    "SIZES",
    "BenchConfig",
]

SECTIONS = ("search", "pruning", "overhead", "storage", "lrfree")

OVERHEAD_TRIAL_S = 3.0
"""The overhead target is for trials this long (issue 21): pairs whose compared bare run is
shorter (a trial the pruner stopped early) are summarized, but not judged."""

# Search-efficiency arms, in report order: key -> one-line description.
ARMS: dict[str, str] = {
    "lrsearch": "range-test prior + PriorGuidedSampler (TPE) + PlateauPruner, range test paid",
    "lrsearch-tails": "lrsearch with [branching] tails = 2: a trial among the best 3 gets two "
    "more annihilation tails, trained from its cycle's end (only the tail's epochs count)",
    "lrsearch-pibo": "lrsearch with [prior] pibo_beta = 1: after startup TPE's acquisition "
    "is weighted by prior(max_lr) ** (1 / n), n the trials finished since (piBO)",
    "lrsearch-noprior": "the ablation: lrsearch's sampler (TPE after uniform startup) and "
    "pruner on the wide range [1e-5, 10], no range test, no prior",
    "tpe-wide": "Optuna TPESampler, max_lr log-uniform in [1e-5, 10], MedianPruner",
    "gp-wide": "Optuna GPSampler, max_lr log-uniform in [1e-5, 10], MedianPruner",
    "random-wide": "RandomSampler, max_lr log-uniform in [1e-5, 10], no pruning",
    "fastai-valley": "one range test, fastai fit_one_cycle defaults at its valley, one trial",
    "torch-steep": "one range test, torch OneCycleLR defaults at its steep point, one trial",
}
SEARCH_ARMS = (
    "lrsearch",
    "lrsearch-tails",
    "lrsearch-pibo",
    "lrsearch-noprior",
    "tpe-wide",
    "gp-wide",
    "random-wide",
)
PRUNER_ARMS = (
    "plateau",
    "plateau-bold",
    "plateau-by-epoch",
    "stall",
    "median",
    "percentile",
    "successive-halving",
    "hyperband",
    "patient-median",
    "none",
)
"""The pruning section's arms: lrsearch's pruner (``plateau``; ``plateau-bold``: confidence
0.75; ``plateau-by-epoch``: trials compared at equal epochs, not phases), its predecessor
(``stall``),
Optuna's pruners with their defaults (percentile keeps the best 25%; patient-median: patience
2; Hyperband: 1 to ``epochs``), and no pruning."""


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run.

    Attributes:
        workloads: workloads of the search and pruning sections.
        arms: the search section's arms (some of :data:`ARMS`; ``lrsearch`` always runs).
        seeds: seeds per arm (seed ``s`` seeds sampler, range test and training).
        trials: the search budget is ``trials * epochs`` trial-epochs per arm and seed; also
            the trials per study of the pruning section.
        epochs: epochs per trial.
        sections: which of :data:`SECTIONS` to run.
        max_trials_factor: a search arm stops after ``trials * max_trials_factor`` trials even
            if pruning left budget unspent.
        range_test: options of the lrsearch arm's range test (``repeats``, ``num_iter``);
            the recipe arms run one repeat of it.
        target_tolerance: the target is this many metric points below the best arm.
        overhead_workload: workload of the overhead section.
        overhead_epochs: epochs of its trial (60: 3-4 s of mnist1d-cnn on a 2-core machine,
            for the target's trial of >= 3 s).
        overhead_repeats: timed trials per variant (after one untimed warm-up trial).
        overhead_storage: ``"journal"`` (``lrsearch run``'s default) or ``"sqlite"``.
        overhead_fast_workload: a workload of few-millisecond steps, timed with MLflow too
            (None: not timed).
        overhead_fast_epochs: epochs of its trial.
        storage_workers: worker-process counts of the storage section.
        storage_trials: trials the studies of the most workers grow to (direct and through
            the proxy); their first and last tenth are compared (the issue: 20,000).
        storage_trials_fewer: trials the studies of fewer workers grow to (None: the same).
        storage_proxy: also run every worker count through ``lrsearch storage-proxy`` (Optuna's
            gRPC proxy), started on a free port in front of the same database.
        storage_fill: the workers of the largest studies make only their first and last tenth;
            the trials between are written in bulk (see ``_storage``), so a study of 20,000
            trials costs the CPU time of 4,000.
        postgres: PostgreSQL server URL (a throwaway database is created there).
        curves: directory where the pruning section keeps its unpruned studies and reuses
            them (same workload, seed, epochs and trials); None records them every run.
        lrfree_against: a report.json whose search section's lrsearch runs the LR-free
            section compares with (reused, not rerun); None: this run's search section, or
            the lrfree section runs lrsearch itself.
        lrfree_search: the lrfree section also searches each LR-free optimizer (a study of
            its lr or d_coef and warm-up, lrsearch's sampler and pruner, the same budget).
    """

    workloads: tuple[str, ...] = ("digits-mlp", "mnist1d-cnn")
    arms: tuple[str, ...] = tuple(ARMS)
    seeds: int = 5
    trials: int = 20
    epochs: int = 10
    sections: tuple[str, ...] = SECTIONS
    max_trials_factor: int = 3
    range_test: dict[str, Any] = field(default_factory=lambda: {"repeats": 3})
    target_tolerance: float = 0.3
    overhead_workload: str = "mnist1d-cnn"
    overhead_epochs: int = 60
    overhead_repeats: int = 16
    overhead_storage: str = "journal"
    overhead_fast_workload: str | None = "digits-mlp"
    overhead_fast_epochs: int = 100
    storage_workers: tuple[int, ...] = (1, 2, 4, 8)
    storage_trials: int = 20_000
    storage_trials_fewer: int | None = 1000
    storage_proxy: bool = True
    storage_fill: bool = False
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    curves: str | None = None
    lrfree_against: str | None = None
    lrfree_search: bool = False

    def __post_init__(self) -> None:
        for name in (
            "seeds",
            "trials",
            "epochs",
            "max_trials_factor",
            "overhead_epochs",
            "overhead_repeats",
            "storage_trials",
        ):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={value}")
        if self.overhead_storage not in ("journal", "sqlite"):
            raise ValueError(
                "overhead_storage must be 'journal' or 'sqlite', "
                f"got overhead_storage={self.overhead_storage!r}"
            )
        if not self.workloads:
            raise ValueError("workloads must name at least one workload, got none")
        odd = sorted(set(self.arms) - set(ARMS))
        if odd:
            raise ValueError(f"unknown arms {odd}; use some of {', '.join(ARMS)}")
        if "lrsearch" not in self.arms:  # the report compares every arm with it
            object.__setattr__(self, "arms", ("lrsearch", *self.arms))
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown sections {unknown}; use some of {', '.join(SECTIONS)}")
        if self.storage_trials_fewer is not None and self.storage_trials_fewer < 1:
            raise ValueError(f"storage_trials_fewer must be >= 1, got {self.storage_trials_fewer}")
        if not self.storage_workers or min(self.storage_workers) < 1:
            raise ValueError(f"storage_workers must be counts >= 1, got {self.storage_workers}")

    @property
    def budget(self) -> int:
        """Trial-epochs each search arm may spend per seed."""
        return self.trials * self.epochs

    def storage_trials_for(self, workers: int) -> int:
        """Trials the storage study of ``workers`` processes grows to."""
        if workers == max(self.storage_workers) or self.storage_trials_fewer is None:
            return self.storage_trials
        return self.storage_trials_fewer

    def replace(self, **changes: Any) -> BenchConfig:
        """A copy with ``changes``; None values are ignored (unset CLI options)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SIZES: dict[str, BenchConfig] = {
    "full": BenchConfig(),
    # What a user runs first: every section in minutes on two CPU cores. The search keeps the
    # full size's shape (20 trials; 8 epochs, so that the range test and the first trial fit in
    # an eighth of the budget) on the CNN, where the arms differ most, with 3 seeds.
    "quick": BenchConfig(
        workloads=("mnist1d-cnn",),
        seeds=3,
        trials=20,
        epochs=8,
        overhead_workload="digits-mlp",
        overhead_epochs=10,
        overhead_repeats=2,
        overhead_fast_epochs=10,
        storage_trials=300,
        storage_trials_fewer=150,
    ),
    # tests: seconds per section.
    "smoke": BenchConfig(
        workloads=("digits-mlp",),
        seeds=1,  # structure, not statistics: keeps the default suite inside its budget
        # budget 8 trial-epochs: the range test (2 x 40 steps = 5 epochs of digits-mlp's
        # train split) leaves room for a trial of lrsearch's own
        trials=4,
        epochs=2,
        range_test={"repeats": 2, "num_iter": 40},
        overhead_workload="digits-mlp",
        overhead_epochs=2,
        overhead_repeats=1,
        overhead_fast_epochs=2,
        # storage: 2 workers direct and through the proxy, the middle of 20 trials filled
        storage_workers=(2,),
        storage_trials=20,
        storage_fill=True,
    ),
}
"""Named sizes: ``full`` (the documented run), ``quick`` (CI), ``smoke`` (tests)."""
