"""The bench's overhead section: which trial/bare pairs are compared, on what, and its target."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from lrsearch.harness.bench._overhead import _bare, _compare, _pair, _summary
from lrsearch.harness.bench._report import _overhead_md
from lrsearch.harness.bench._targets import overhead_target

EPOCHS = 6


@pytest.fixture
def handle(tmp_path: Any) -> Any:
    """A digits-mlp study on the journal file, as the section opens it (no MLflow)."""
    from lrsearch.config import parse_study_config
    from lrsearch.study import open_study

    cfg = parse_study_config(
        {
            "study": {"name": "ovh", "workload": "digits-mlp", "epochs": EPOCHS, "n_trials": 100},
            "range_test": {"repeats": 1, "num_iter": 40},
        }
    )
    return open_study(cfg, f"journal:{tmp_path / 'optuna.journal'}", tracking_uri=str(tmp_path))


def test_a_pruned_pair_is_compared_on_the_epochs_its_trial_trained(handle: Any) -> None:
    # a real pruner that stops every trial after epoch 3 (digits' accuracy is below 1e9)
    handle.study.pruner = optuna.pruners.ThresholdPruner(lower=1e9, n_warmup_steps=3)
    first = _pair(handle, None, bare_first=True)
    after = _pair(handle, None, bare_first=False)
    for row in (first, after):
        assert row["state"] == "PRUNED" and row["epochs"] == 3
        assert row["same_result"] is True and row["left_out"] is None
    # bare first: it trained all 6 epochs, the pair is timed on its first 3 and the test scoring
    assert first["bare_seconds"] < first["bare_full_seconds"]
    assert first["bare_cpu_seconds"] > 0
    # bare after: it stopped itself after epoch 3, as the pruner stopped the trial
    assert after["bare_full_seconds"] is None

    handle.study.pruner = optuna.pruners.NopPruner()
    complete = _pair(handle, None, bare_first=False)
    assert complete["state"] == "COMPLETE" and complete["epochs"] == EPOCHS
    assert complete["same_result"] and complete["bare_seconds"] == complete["bare_full_seconds"]

    # another trial's bare run (another seed) is not the same run: left out, and why
    trials = handle.study.get_trials(deepcopy=False)
    pruned, other = trials[first["trial"]], trials[complete["trial"]]
    assert _compare(pruned, _bare(handle, other), EPOCHS) == "metric at the pruned epoch differs"
    assert _compare(other, _bare(handle, pruned), EPOCHS) == "final metric differs"


def _row(ratio: float, *, same: bool = True, why: str | None = None, **extra: Any) -> dict:
    return {
        "warm_up": False,
        "state": "PRUNED",
        "epochs": 50,
        "seconds": 3.3 * ratio,
        "bare_seconds": 3.3,
        "ratio": ratio,
        "cpu_seconds": 3.3 * ratio,
        "bare_cpu_seconds": 3.3,
        "cpu_ratio": ratio,
        "writer_cpu_seconds": 0.1,
        "total_cpu_ratio": ratio + 0.03,
        "same_result": same,
        "left_out": why,
        **extra,
    }


def test_the_summary_counts_what_was_left_out_and_why() -> None:
    rows = [
        {**_row(1.5), "warm_up": True},
        _row(1.01),
        _row(1.02, state="COMPLETE", epochs=60),
        _row(1.04),
        _row(0.5, same=False, why="metric at the pruned epoch differs"),
        _row(0.6, same=False, why="trial FAIL"),
    ]
    s = _summary(rows)
    assert s["pairs"] == 3 and s["pruned_pairs"] == 2 and s["left_out"] == 2
    assert s["left_out_why"] == {"metric at the pruned epoch differs": 1, "trial FAIL": 1}
    assert s["median_ratio"] == pytest.approx(1.02) and s["warm_up_ratio"] == 1.5
    assert s["median_total_cpu_ratio"] == pytest.approx(1.05)
    assert s["median_epochs"] == 50
    # every compared pair here is of a 3.3 s bare run: all are the target's
    assert s["long"]["pairs"] == 3 and s["long"]["median_ratio"] == pytest.approx(1.02)
    low, high = s["long"]["ci90_ratio"]  # bootstrap medians of 1.01, 1.02, 1.04
    assert 1.01 <= low <= 1.02 <= high <= 1.04 and low < high
    short = _summary([rows[0], _row(1.01), {**_row(2.0), "bare_seconds": 0.5}])
    assert short["pairs"] == 2 and short["long"]["pairs"] == 1
    assert short["long"]["median_ratio"] == pytest.approx(1.01)

    nothing = _summary([{**_row(1.5), "warm_up": True}, _row(0.5, same=False, why="trial FAIL")])
    assert nothing["pairs"] == 0 and nothing["median_ratio"] is None
    assert overhead_target({"variants": {"optuna+mlflow": nothing}})["status"] == "not measured"
    report = {
        "overhead": {
            "workload": "mnist1d-cnn",
            "epochs": 60,
            "steps": 1800,
            "repeats": 2,
            "schedule_png_s": 0.1,
            "variants": {"optuna": s, "optuna+mlflow": nothing},
        }
    }
    markdown = "\n".join(_overhead_md(report))
    assert "optuna+mlflow: 1 trial FAIL" in markdown
    assert "| 3: 2 (2) |" in markdown
    assert "(the target's): optuna: 1.020 wall [" in markdown
    assert short["long"]["ci90_ratio"] is None  # one pair: no interval to speak of


def _variant(bare: float, wall: float, cpu: float, total: float, pairs: int = 5) -> dict:
    """A summary whose pairs of >= 3 s trials have these medians; all its pairs (the pruner
    stopped some after a few epochs) have others, which the target does not judge."""
    long = {
        "min_seconds": 3.0,
        "pairs": pairs,
        "median_bare_seconds": bare,
        "median_ratio": wall,
        "median_cpu_ratio": cpu,
        "median_total_cpu_ratio": total,
    }
    every = {**long, "pairs": 10, "median_bare_seconds": 1.9, "median_ratio": 1.5}
    return {**every, "median_cpu_ratio": 1.5, "median_total_cpu_ratio": 1.5, "long": long}


@pytest.mark.parametrize(
    ("variant", "status", "over"),
    [
        (_variant(4.5, 1.02, 1.01, 1.03), "met", None),
        (_variant(4.5, 1.04, 1.01, 1.02), "missed", "wall 1.040 > 1.03"),
        # the training process alone is under, the writer's CPU added is not
        (_variant(4.5, 1.02, 1.01, 1.20), "missed", "CPU with the writer 1.200 > 1.03"),
        # a report of before the >= 3 s subset: all its pairs, and their length, judged
        ({**_variant(2.5, 1.0, 1.0, 1.0)["long"], "pairs": 10}, "missed", "trial 2.5 s < 3 s"),
    ],
)
def test_the_overhead_target_needs_a_3_s_trial_and_both_ratios_under_1_03(
    variant: dict[str, Any], status: str, over: str | None
) -> None:
    row = overhead_target({"variants": {"optuna+mlflow": variant}})
    assert row["status"] == status
    judged = variant.get("long", variant)
    assert f"CPU {judged['median_cpu_ratio']:.3f} (training process)" in row["measured"]
    assert f"{judged['median_total_cpu_ratio']:.3f} with the MLflow writer" in row["measured"]
    if "long" in variant:
        assert "(median of 5 of 10 pairs)" in row["measured"]
    if over is None:
        assert "over:" not in row["measured"]
    else:
        assert row["measured"].endswith(f"over: {over}")


def test_without_a_pair_of_a_3_s_trial_the_target_is_missed() -> None:
    row = overhead_target({"variants": {"optuna+mlflow": _variant(4.5, 1.0, 1.0, 1.0, pairs=0)}})
    assert row["status"] == "missed"
    assert row["measured"].startswith("no pair of a >= 3 s trial (median 1.9 s)")
