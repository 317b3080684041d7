"""The held-out check of the prior: sweep analysis, the rule chosen on one half, the verdicts."""

from __future__ import annotations

import math

import pytest

from lrsearch.harness.prior_check import GRID, analyse_sweep, choose, judge, render_markdown


def _sweep(best: float, width: float = 0.5, diverge: float = 1.0) -> list[dict]:
    rows = []
    for lr in GRID:
        x = math.log10(lr / best)
        metric = 10 + 85 * math.exp(-0.5 * (x / width) ** 2)
        bad = math.log10(lr / best) > diverge
        rows.append(
            {
                "max_lr": lr,
                "metrics": [None if bad else metric] * 2,
                "mean": None if bad else metric,
            }
        )
    return rows


def _test(seed: int, valley: float, rise: float, signal: bool = True) -> dict:
    def s(median: float, fallback: bool = False) -> dict:
        return {
            "median": median,
            "spread_decades": 0.0,
            "values": [median],
            "n_fallback": int(fallback),
        }

    return {
        "seed": seed,
        "suggestions": {
            "steep": s(valley / 2, not signal),
            "min10": s(valley / 3, not signal),
            "valley": s(valley, not signal),
            "rise": s(rise),
            "diverge": s(rise * 10),
        },
        "steps": 100,
        "seconds": 1.0,
    }


def _measured(name: str, best: float, valley: float, rise: float, signal: bool = True) -> dict:
    rows = _sweep(best)
    return {
        "workload": f"suite:{name}",
        "budget_steps": 4000,
        "range_tests": [_test(k, valley, rise, signal) for k in range(3)],
        "sweep": rows,
        **analyse_sweep(rows, "maximize"),
    }


def test_the_sweep_gives_the_best_the_good_region_and_where_training_starts() -> None:
    found = analyse_sweep(_sweep(1e-2), "maximize")
    assert found["best_max_lr"] == pytest.approx(1e-2, rel=0.3)
    assert found["good_low"] <= found["best_max_lr"] <= found["good_high"]
    assert found["trains_from"] < found["good_low"]
    assert found["diverged_from"] == pytest.approx(10**-0.667, rel=0.3)


def test_the_rule_is_learned_from_calibration_and_judged_on_held_out() -> None:
    # valley a constant 0.3 decades below the best, the rise a decade above it
    calibration = [
        _measured(f"c{k}", 10.0**-k, 10.0 ** (-k - 0.3), 10.0 ** (1 - k)) for k in range(1, 5)
    ]
    rule = choose(calibration)
    assert rule["offset_decades"] == pytest.approx(0.3, abs=0.06)
    assert rule["no_signal_offset_decades"] == pytest.approx(-1.0, abs=0.06)
    held = [
        _measured("good", 1e-3, 10**-3.3, 1e-2),
        _measured("flat", 1e-2, 1e-6, 1e-1, signal=False),  # no descent: the rise places it
    ]
    verdict = judge(held, rule)
    assert verdict["within_half_decade"] == 1.0
    assert verdict["spurious"] == 0 and verdict["signal_free"] == 3
    assert "met" in render_markdown(
        {
            "rule": rule,
            "held_out": verdict,
            "calibration": ["suite:c1"],
            "measured": {"held_out": held},
        }
    )
