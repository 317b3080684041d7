"""``[study.training]`` overrides a workload's options; optimizers without momentum."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from lrsearch.cli import cli
from lrsearch.config import parse_study_config
from lrsearch.errors import ConfigError
from lrsearch.objective import Objective, TrialSpec
from lrsearch.prior import LRPrior
from lrsearch.space import default_params
from lrsearch.study import StudyHandle, build_workload
from lrsearch.trials import trial_params, trial_schedule

PRIOR = LRPrior(center=0.05, sigma_decades=0.5, low=1e-3, high=0.5)
MOMENTUM = {"momentum_high", "momentum_low"}


def _config(workload: str = "blobs", **training: Any) -> dict[str, Any]:
    study: dict[str, Any] = {
        "name": "training",
        "workload": f"tests.tiny_workloads:{workload}",
        "n_trials": 2,
        "epochs": 2,
    }
    if training:
        study["training"] = training
    return {
        "study": study,
        "pruner": {"name": "none"},
        "prior": {"n_startup_trials": 1},
        "tracking": {"update_ratio_every": 0},
    }


def test_training_overrides_reach_the_plans_workload() -> None:
    config = parse_study_config(_config(grad_clip=0.5, accumulate=2, precision="bf16"))
    handle = StudyHandle.in_memory(config, PRIOR, build_workload(config))
    workload = handle.plan.workload
    assert (workload.grad_clip, workload.accumulate, workload.precision) == (0.5, 2, "bf16")
    assert handle.plan.steps_per_epoch == 192 // 32 // 2  # accumulate counts in the steps


def test_training_unset_keeps_the_workload_and_the_fingerprint() -> None:
    plain = parse_study_config(_config())
    workload = build_workload(plain)
    assert (workload.grad_clip, workload.accumulate, workload.optimizer) == (None, 1, "sgd")
    assert "training" not in plain.model_dump(exclude_defaults=True)["study"]
    empty = parse_study_config({**_config(), "study": {**_config()["study"], "training": {}}})
    assert empty.fingerprint() == plain.fingerprint()
    assert parse_study_config(_config(grad_clip=1.0)).fingerprint() != plain.fingerprint()


def _validate(tmp_path, training: str) -> Any:
    f = tmp_path / "study.toml"
    f.write_text(
        "[study]\nname = 'x'\nworkload = 'tests.tiny_workloads:blobs'\n"
        f"[study.training]\n{training}\n"
    )
    return CliRunner().invoke(cli, ["validate", str(f)], obj={})


@pytest.mark.parametrize(
    ("training", "needle"),
    [
        ("precision = 'fp8'", "study.training.precision"),
        ("accumulate = 0", "study.training.accumulate"),
        ("grad_clip = 0.0", "study.training.grad_clip"),
        ("grad_clip = -1.0", "study.training.grad_clip"),
        ("grad_clip = inf", "study.training.grad_clip"),
        ("optimizer = 'NoSuchOpt'", "study.training.optimizer"),
        ("momentum = 0.9", "study.training.momentum: unknown field"),
    ],
)
def test_bad_training_values_are_one_line_field_errors(tmp_path, training, needle) -> None:
    result = _validate(tmp_path, training)
    out = result.output.strip()
    assert result.exit_code == 2, out
    assert needle in out and len(out.splitlines()) == 1 and "Traceback" not in out


def test_good_training_validates(tmp_path) -> None:
    result = _validate(tmp_path, "optimizer = 'Adagrad'\ngrad_clip = 1.0\naccumulate = 2")
    assert result.exit_code == 0, result.output


def test_a_loop_study_refuses_training() -> None:
    data = {
        "study": {
            "name": "loop",
            "loop": "tests.tiny_loops:train",
            "metric": "accuracy",
            "direction": "maximize",
            "epochs": 2,
            "steps_per_epoch": 4,
            "training": {"grad_clip": 1.0},
        }
    }
    with pytest.raises(ConfigError, match=r"\[study.training\] \(grad_clip\) does not apply"):
        parse_study_config(data)


def _run(config: dict[str, Any]) -> tuple[StudyHandle, list[TrialSpec]]:
    parsed = parse_study_config(config)
    handle = StudyHandle.in_memory(parsed, PRIOR, build_workload(parsed))
    specs: list[TrialSpec] = []

    def observe(spec: TrialSpec) -> None:
        specs.append(spec)

    handle.study.optimize(Objective(handle, observe=observe), n_trials=2)
    return handle, specs


@pytest.mark.parametrize(
    "config",
    [_config("blobs_adagrad"), _config(optimizer="Adagrad")],
    ids=["workload", "study-file"],
)
def test_an_optimizer_without_momentum_samples_none(config) -> None:
    handle, specs = _run(config)
    assert handle.plan.drives_momentum is False
    trials = handle.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial, spec in zip(trials, specs, strict=True):
        assert not MOMENTUM & set(trial.params) and not MOMENTUM & set(spec.params)
        assert spec.schedule.momentum_at(0) is None
        assert not MOMENTUM & set(trial_params(handle, trial))
        assert trial_schedule(handle, trial) == spec.schedule
    assert not MOMENTUM & set(default_params(handle.config.space, PRIOR, momentum=False))


def test_sgd_still_samples_momentum() -> None:
    handle, specs = _run(_config())
    assert handle.plan.drives_momentum is True
    for trial, spec in zip(handle.study.trials, specs, strict=True):
        assert set(trial.params) >= MOMENTUM
        assert spec.schedule.momentum_at(0) is not None
        assert trial_schedule(handle, trial) == spec.schedule
    assert set(default_params(handle.config.space, PRIOR)) >= MOMENTUM
