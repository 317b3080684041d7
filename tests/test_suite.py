"""The workload suite (lrsearch.harness.suite): every workload builds, splits its data the
same way under a seed, trains through lrsearch's loop, and the calibration / held-out split
covers the suite once."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lrsearch import Constant, OneCycle, Workload, get_workload, train
from lrsearch.cli import cli
from lrsearch.harness import suite
from lrsearch.harness.suite_parts import split_indices
from lrsearch.torch_schedule import ScheduleDriver
from lrsearch.training import evaluate

NAMES = list(suite.SUITE)
CPU = torch.device("cpu")

# A one-epoch constant LR inside each workload's trainable range (not tuned: a smoke test).
SMOKE_LR = {"sgd": 0.05, "adam": 3e-3, "adamw": 3e-3, "rmsprop": 1e-3, "adagrad": 0.05}
SMOKE_LR_OF = {"friedman_resmlp": 0.01}  # SGD momentum 0.9 on a residual MLP: 0.05 diverges
SLOW_STARTERS = {"gru_first_token"}  # at chance for a few epochs by design


def _build(name: str, **kwargs: int) -> Workload:
    return get_workload(f"lrsearch.harness.suite:{name}", **kwargs)


def _splits(w: Workload) -> list[torch.Tensor]:
    return [t for data in (w.train_data, w.val_data, w.test_data) for t in data]


def test_split_covers_the_suite_once_and_holds_out_the_fragile_shapes() -> None:
    assert sorted(suite.CALIBRATION + suite.HELD_OUT) == sorted(NAMES)
    assert not set(suite.CALIBRATION) & set(suite.HELD_OUT)
    assert {"gru_first_token", "diabetes_mlp"} <= set(suite.HELD_OUT)
    assert set(suite.__all__) >= set(NAMES)
    for half in (suite.CALIBRATION, suite.HELD_OUT):
        workloads = [_build(name) for name in half]
        assert {w.optimizer_name for w in workloads} == {
            "sgd",
            "adam",
            "adamw",
            "rmsprop",
            "adagrad",
        }
        assert len({w.info["kind"] for w in workloads}) == len(half)  # no kind twice in a half


def test_suite_has_many_kinds_all_optimizers_and_small_and_large_batches() -> None:
    workloads = [_build(name) for name in NAMES]
    assert len(NAMES) >= 12
    assert len({w.info["kind"] for w in workloads}) >= 12
    assert Counter(w.optimizer_name for w in workloads).keys() == {
        "sgd",
        "adam",
        "adamw",
        "rmsprop",
        "adagrad",
    }
    sizes = [w.batch_size for w in workloads]
    assert min(sizes) <= 16 and max(sizes) >= 512
    assert {w.metric.direction for w in workloads} == {"maximize", "minimize"}


@pytest.mark.parametrize(("n", "seed"), [(178, 0), (442, 3), (1797, 7)])
def test_split_indices_are_disjoint_cover_every_row_and_follow_the_seed(n: int, seed: int) -> None:
    train, val, test = split_indices(n, seed)
    assert len(set(train) | set(val) | set(test)) == len(train) + len(val) + len(test) == n
    assert len(val) == len(test) == round(0.2 * n)
    again = split_indices(n, seed)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(val, split_indices(n, seed + 1)[1])


@pytest.mark.parametrize("name", NAMES)
def test_workload_builds_with_seeded_deterministic_splits(name: str) -> None:
    w = _build(name)
    assert w.epochs == 8 and w.has_test and w.info["data_seed"] == 0
    n_train, n_val, n_test = (len(d[0]) for d in (w.train_data, w.val_data, w.test_data))
    assert w.info["rows"] == f"{n_train}/{n_val}/{n_test}"
    assert w.info["rows"] in suite.SUITE[name]  # the description tells the truth
    assert w.optimizer_name in suite.SUITE[name].lower()
    same, other = _build(name), _build(name, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(_splits(w), _splits(same), strict=True))
    assert not torch.equal(w.val_data[0], other.val_data[0])
    # disjoint: no validation or test input is also a training input (rows are distinct
    # with overwhelming probability in generated data; sklearn's tables have no duplicates
    # across the split for these seeds)
    train_rows = {tuple(r.flatten().tolist()) for r in w.train_data[0]}
    for held in (w.val_data[0], w.test_data[0]):
        assert not train_rows & {tuple(r.flatten().tolist()) for r in held}


@pytest.mark.parametrize("name", NAMES)
def test_one_epoch_trains_with_a_finite_metric_in_its_direction(name: str) -> None:
    torch.set_num_threads(1)
    w = _build(name)
    torch.manual_seed(0)
    _, before = evaluate(w.build_model(), w, CPU)  # the model train() starts from (seed 0)
    steps = w.steps_per_epoch()
    lr = SMOKE_LR_OF.get(name, SMOKE_LR[w.optimizer_name])
    result = train(w, Constant(lr, total_steps=steps), epochs=1)
    assert not result.diverged and math.isfinite(result.val_metric)
    assert math.isfinite(result.test_metric)
    assert result.direction == w.metric.direction
    assert result.direction == ("maximize" if w.metric.name == "accuracy" else "minimize")
    if name in SLOW_STARTERS:
        assert result.val_metric < 40  # still near chance (25%) after one epoch
    else:
        gain = result.val_metric - before
        assert (gain > 0) if result.direction == "maximize" else (gain < 0), (before, result)


def test_rmsprop_momentum_follows_the_schedule_and_adagrad_has_none() -> None:
    schedule = OneCycle(max_lr=1e-3, total_steps=10)
    for name, drives in (("breast_cancer_mlp", True), ("wine_mlp", False)):
        w = _build(name)
        model = w.build_model()
        driver = ScheduleDriver(w.make_optimizer(model, lr=1e-3, momentum=0.9), schedule)
        assert driver.drives_momentum is drives
        _, momentum = driver.apply(0)
        assert (momentum == pytest.approx(0.95)) if drives else momentum is None


def test_a_suite_workload_goes_through_the_range_test_cli(tmp_path) -> None:
    spec = "lrsearch.harness.suite:diabetes_mlp"
    result = CliRunner().invoke(
        cli,
        ["range-test", "-w", spec, "--repeats", "2", "--num-iter", "40", "--out", str(tmp_path)],
        obj={},
    )
    assert result.exit_code == 0, result.output
    assert "max_lr prior" in result.output
    data = json.loads((tmp_path / "range_test.json").read_text())
    assert data["settings"]["workload"] == "suite-diabetes-mlp"
    assert data["settings"]["repeats"] == 2
    assert len(data["repeats"]) == 2 and len(data["repeats"][0]["lrs"]) <= 40
    assert len(data["suggestions"]["valley"]["values"]) == 2
    assert data["prior"]["low"] < data["prior"]["center"] <= data["prior"]["high"]


def test_specs_name_importable_workloads() -> None:
    paths = suite.specs(suite.HELD_OUT).split(",")
    assert len(paths) == len(suite.HELD_OUT)
    assert get_workload(paths[0]).name == "suite-gru-first-token"
