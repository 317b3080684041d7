"""The LR range test: ramp the LR every optimizer step until the loss explodes, several times.

- :mod:`._ramp`: the one ramp every trainer runs (:class:`RampPlan`, :class:`RampCurve`),
  its readings and prior (:func:`read_ramps`), the RNG restore.
- :mod:`._run`: the built-in loop's test of a model and optimizer, or of a workload.
- :mod:`._budget`: how big a study's test may be.
- :mod:`._result`: what a test gives (:class:`RangeTestResult`).
"""

from __future__ import annotations

from lrsearch.range_test._budget import DEFAULT_BUDGET_FRACTION, MIN_RAMP_STEPS, fit_budget
from lrsearch.range_test._ramp import RampCurve, RampPlan, default_beta, read_ramps, rng_restored
from lrsearch.range_test._result import RangeCurve, RangeTestResult
from lrsearch.range_test._run import range_test, range_test_workload

__all__ = [
    "DEFAULT_BUDGET_FRACTION",
    "MIN_RAMP_STEPS",
    "RampCurve",
    "RampPlan",
    "RangeCurve",
    "RangeTestResult",
    "default_beta",
    "fit_budget",
    "range_test",
    "range_test_workload",
    "read_ramps",
    "rng_restored",
]
