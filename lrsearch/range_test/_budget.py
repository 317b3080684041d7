"""How big a study's range test may be: its share of the study's optimizer steps."""

from __future__ import annotations

__all__ = ["DEFAULT_BUDGET_FRACTION", "MIN_RAMP_STEPS", "fit_budget"]

# The share of a study's optimizer steps its range test may cost, by default.
DEFAULT_BUDGET_FRACTION = 0.05
# The shortest ramp the budget may cut a repeat to: 8 decades at about six points each.
MIN_RAMP_STEPS = 50


def fit_budget(
    budget_steps: int,
    *,
    per_epoch: int,
    repeats: int = 3,
    num_iter: int | None = None,
    fraction: float = DEFAULT_BUDGET_FRACTION,
) -> tuple[int, int]:
    """Repeats and ramp length for a range test that costs at most ``fraction`` of a study.

    The wanted test is ``repeats`` ramps of ``num_iter`` steps (default ``max(100, one
    epoch)``). Where that costs more than ``fraction * budget_steps`` optimizer steps, the
    ramps are shortened (never below ``MIN_RAMP_STEPS``, what a readable curve needs), then
    fewer repeats are run. A budget too small even for one shortest ramp gets that ramp, over
    budget: a test with fewer steps reads nothing.

    Returns:
        ``(repeats, num_iter)``.

    Example:
        >>> fit_budget(16 * 8 * 30, per_epoch=30)  # 5% of 3,840 steps is 192
        (3, 64)
        >>> fit_budget(2048, per_epoch=10)  # 102 steps: two ramps of 51
        (2, 51)
    """
    if budget_steps < 1:
        raise ValueError(f"budget_steps must be >= 1, got {budget_steps=}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction=}")
    want = num_iter if num_iter is not None else max(100, per_epoch)
    allowed = int(fraction * budget_steps)
    for r in range(repeats, 0, -1):
        n = min(want, allowed // r)
        if n >= min(MIN_RAMP_STEPS, want):
            return r, n
    return 1, min(MIN_RAMP_STEPS, want)


# range_test's keywords that a RampPlan holds
