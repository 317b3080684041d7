from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from lrsearch.range_test import RangeTestResult, range_test, range_test_workload
from lrsearch.schedules import OneCycle
from lrsearch.suggest import SUGGESTION_NAMES, divergence_index, smooth
from lrsearch.training import train
from lrsearch.workloads import get_workload


@pytest.fixture(scope="module")
def blobs():
    return get_workload("tests.tiny_workloads:blobs", n=512)


def test_restores_model_optimizer_and_rngs_exactly(blobs) -> None:
    torch.manual_seed(3)
    model = blobs.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    # give the optimizer some state of its own to restore
    loss = blobs.loss_fn(model(blobs.train_data[0][:8]), blobs.train_data[1][:8])
    loss.backward()
    optimizer.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    buf = {id(p): s["momentum_buffer"].clone() for p, s in optimizer.state.items()}
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    range_test(
        model, optimizer, blobs.loss_fn, blobs.train_data, batch_size=32, repeats=2, num_iter=40
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(buf[id(p)], s["momentum_buffer"]) for p, s in optimizer.state.items())
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert torch.equal(rng[0], torch.get_rng_state())
    assert np.array_equal(rng[1], np.random.get_state()[1]) and rng[2] == random.getstate()
    # the optimizer is free again for a scheduler of the caller's
    torch.optim.lr_scheduler.StepLR(optimizer, 5)


def test_training_after_a_range_test_equals_training_without(blobs) -> None:
    steps = 3 * blobs.steps_per_epoch()
    plain = train(blobs, OneCycle(0.2, steps), epochs=3, seed=5)
    torch.manual_seed(123)
    range_test_workload(blobs, repeats=1, num_iter=30, seed=9)
    after = train(blobs, OneCycle(0.2, steps), epochs=3, seed=5)
    assert [e.val_loss for e in plain.history] == [e.val_loss for e in after.history]


def test_repeats_use_different_orders_and_summarise(blobs) -> None:
    result = range_test_workload(blobs, repeats=3, num_iter=60)
    assert len(result.curves) == 3
    assert result.curves[0].losses[:5] != result.curves[1].losses[:5]
    for name in ("steep", "min10", "valley", "diverge"):
        s = result.summary[name]
        assert len(s.values) == 3 and 1e-7 <= s.median <= 10
    assert result.prior.low < result.prior.center <= result.prior.high
    assert result.settings["optimizer_family"] == "sgd"  # what the prior's offset may use
    adam = range_test_workload(blobs.with_options(optimizer="adam"), repeats=1, num_iter=30)
    assert adam.settings["optimizer_family"] == "adam"


def test_stops_at_divergence(blobs) -> None:
    result = range_test_workload(blobs, repeats=1, num_iter=200, end_lr=1e4)
    curve = result.curves[0]
    assert curve.suggestions.stopped_early and len(curve.lrs) < 200


def test_running_smoothing_equals_a_direct_recomputation(blobs) -> None:
    beta = 0.9
    result = range_test_workload(blobs, repeats=2, num_iter=200, end_lr=1e4, beta=beta)
    for curve in result.curves:
        x = np.asarray(curve.losses)
        weights = (1 - beta) * beta ** np.arange(len(x))[::-1]
        direct = [
            float(weights[-i - 1 :] @ x[: i + 1] / (1 - beta ** (i + 1))) for i in range(len(x))
        ]
        np.testing.assert_allclose(curve.smoothed, direct, rtol=1e-12)
        assert curve.smoothed == smooth(x, beta).tolist()
        # it stopped at the first step where the whole smoothed curve so far had diverged
        assert divergence_index(smooth(x, beta), skip_start=10) == len(x) - 1


def test_a_ramp_that_never_diverges_puts_the_diverge_median_at_its_end(blobs) -> None:
    result = range_test_workload(blobs, repeats=2, num_iter=30, end_lr=1e-3)
    assert not any(c.suggestions.stopped_early for c in result.curves)
    diverge = result.summary["diverge"]
    assert diverge.median == pytest.approx(1e-3) and diverge.n_fallback == 2


@pytest.mark.parametrize("seed", [0, 1])
def test_diverge_suggestion_matches_least_squares_theory(seed: int) -> None:
    """Plain SGD on least squares diverges once the LR passes 2/L (L: top Hessian eigenvalue).

    Mini-batches keep the unstable direction excited; a ramp of ~1% per step keeps the
    detection lag (the loss must grow from the noise floor) well inside a factor 2.
    """
    w = get_workload("least-squares", batch_size=64, seed=seed)
    result = range_test_workload(
        w, momentum=0.0, repeats=2, num_iter=600, start_lr=1e-3, end_lr=10, seed=seed
    )
    expected = w.info["lr_diverge"]
    found = result.summary["diverge"].median
    assert expected / 2 <= found <= expected * 2, (found, expected)


def test_json_round_trip_and_csv(blobs) -> None:
    result = range_test_workload(blobs, repeats=2, num_iter=30)
    data = json.loads(result.to_json())
    assert set(data["suggestions"]) == set(SUGGESTION_NAMES)
    assert {"median", "values"} <= set(data["suggestions"]["valley"])
    assert {"center", "sigma_decades", "low", "high"} <= set(data["prior"])
    again = RangeTestResult.from_dict(data)
    assert again.prior == result.prior
    assert again.summary["steep"].median == result.summary["steep"].median
    rows = result.to_csv().strip().splitlines()
    assert rows[0] == "repeat,step,lr,loss,smoothed"
    assert len(rows) == 1 + sum(len(c.lrs) for c in result.curves)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"start_lr": 1.0, "end_lr": 0.1}, "start_lr"),
        ({"repeats": 0}, "repeats"),
        ({"ramp": "cubic"}, "ramp"),
        ({"num_iter": 3}, "num_iter"),
    ],
)
def test_bad_arguments(blobs, kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        range_test_workload(blobs, **kwargs)


def test_linear_ramp(blobs) -> None:
    result = range_test_workload(
        blobs, repeats=1, num_iter=30, ramp="linear", start_lr=0.01, end_lr=1.0
    )
    lrs = result.curves[0].lrs
    assert math.isclose(lrs[1] - lrs[0], lrs[2] - lrs[1], rel_tol=1e-9)


def test_fit_budget_keeps_the_test_within_its_share_of_the_study() -> None:
    from lrsearch.range_test import MIN_RAMP_STEPS, fit_budget

    for budget, per_epoch in [(3840, 30), (2048, 10), (12800, 100), (1000, 8), (100_000, 400)]:
        repeats, n_iter = fit_budget(budget, per_epoch=per_epoch)
        assert repeats * n_iter <= 0.05 * budget
        assert n_iter >= MIN_RAMP_STEPS and 1 <= repeats <= 3
    assert fit_budget(100_000, per_epoch=30) == (3, 100)  # a big study: today's test
    # Too small a study for even one readable ramp: one ramp of the shortest length, over budget.
    assert fit_budget(200, per_epoch=5) == (1, MIN_RAMP_STEPS)
    assert fit_budget(3840, per_epoch=30, repeats=2, num_iter=80) == (2, 80)


def test_a_short_ramp_smooths_over_the_same_share_of_its_steps() -> None:
    from lrsearch.range_test import default_beta

    assert default_beta(100) == default_beta(400) == 0.98
    assert default_beta(50) == pytest.approx(0.96)
