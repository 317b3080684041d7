"""Recording an LR range test in a run (standalone, or a study's parent run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lrsearch.tracking._base import ROLE, TrialRun
from lrsearch.tracking._mlflow import MlflowTracker

RANGE_TEST_FILES = ("range_test.json", "range_test.csv", "range_test.png")


def record_range_test(run: TrialRun, result: Any, out_dir: Path | None = None) -> None:
    """Record a range-test result in ``run`` (a standalone run or a study's parent run).

    Each repeat ``r`` (from 0) becomes the step metrics ``lr_r{r}``, ``loss_r{r}`` and
    ``smoothed_loss_r{r}`` over its iterations, so repeats overlay in one MLflow chart. Each
    suggestion gives ``<name>_median`` (and ``<name>_spread_decades``), the prior
    ``prior_<field>`` metrics and a ``prior`` JSON param; ``result.settings`` become params.
    The files in :data:`RANGE_TEST_FILES` found in ``out_dir`` are uploaded.

    Args:
        run: where to record.
        result: a ``RangeTestResult`` or anything shaped like one (``curves`` with ``lrs``,
            ``losses``, ``smoothed``; ``summary`` of objects with ``median``; ``prior`` with
            ``to_dict()``; ``settings``).
        out_dir: the directory holding the range test's JSON/CSV/PNG, if any.
    """
    for r, curve in enumerate(result.curves):
        rows = zip(curve.lrs, curve.losses, curve.smoothed, strict=True)
        for step, (lr, loss, sm) in enumerate(rows):
            run.log_step(step, **{f"lr_r{r}": lr, f"loss_r{r}": loss, f"smoothed_loss_r{r}": sm})
    summary: dict[str, float] = {}
    for name, suggestion in result.summary.items():
        summary[f"{name}_median"] = suggestion.median
        if getattr(suggestion, "spread_decades", None) is not None:
            summary[f"{name}_spread_decades"] = suggestion.spread_decades
    prior = result.prior.to_dict()
    summary.update({f"prior_{key}": value for key, value in prior.items()})
    run.log_epoch(0, **summary)
    run.log_params({**result.settings, "prior": prior})
    for path in [out_dir / name for name in RANGE_TEST_FILES] if out_dir else []:
        if path.is_file():
            run.log_file(path)


def log_range_test(
    result: Any,
    out_dir: Path,
    *,
    tracking_uri: str,
    workload: str,
    experiment: str = "lrsearch-range-tests",
) -> str:
    """Log a range test as one run ``range-test-<workload>`` in ``experiment``; its run id.

    See :func:`record_range_test` for what the run holds.

    Raises:
        TrackingError: the tracking store cannot be reached or used.
    """
    tracker = MlflowTracker(tracking_uri, writer=False)  # a few writes, no training meanwhile
    tags = {ROLE: "range_test", "lrsearch.workload": workload}
    run = tracker.start_run(
        experiment, run_name=f"range-test-{workload}", params={"workload": workload}, tags=tags
    )
    with run:
        record_range_test(run, result, Path(out_dir))
    return run.run_id
