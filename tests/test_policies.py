"""The policy registry: ``lrsearch train --schedule P`` trains what a study trial with P trains."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from lrsearch import policies
from lrsearch.cli._train import schedule_from_options, train
from lrsearch.config import SpaceSection, parse_study_config
from lrsearch.errors import ConfigError
from lrsearch.policies import POLICIES, SMITH_DEFAULTS, build_schedule, study_policies
from lrsearch.prior import LRPrior
from lrsearch.schedules import OneCycle
from lrsearch.space import build_schedule as space_build_schedule
from lrsearch.space import default_params, suggest_params

TOTAL, PER_EPOCH = 200, 10
PRIOR = LRPrior(center=0.1, sigma_decades=0.5, low=1e-3, high=3.0)
# Values inside the default [space] ranges, none of them Smith's defaults.
VALUES = {
    "max_lr": 0.3,
    "div_factor": 5.0,
    "cycle_frac": 0.8,
    "annihilation": 50.0,
    "momentum_high": 0.92,
    "momentum_low": 0.82,
    "weight_decay": 1e-5,
}


def _cli_schedule(*args: str) -> Any:
    """The schedule ``lrsearch train`` builds from these arguments (click parses them)."""
    ctx = train.make_context("train", list(args))
    return schedule_from_options(ctx.params, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)


def _cli_args(values: dict[str, float]) -> list[str]:
    return [f"--{name.replace('_', '-')}={value}" for name, value in values.items()]


def _trial_params(policy: str) -> dict[str, Any]:
    """What ``suggest_params`` samples for a trial of ``policy`` drawing ``VALUES``."""
    space = SpaceSection(policies=list(study_policies()))
    trial = optuna.trial.FixedTrial({"policy": policy, **VALUES})
    return suggest_params(trial, space, PRIOR)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_cli_and_space_build_the_same_schedule(policy: str) -> None:
    cli = _cli_schedule("--schedule", policy, *_cli_args(VALUES))
    params = {"policy": policy, **VALUES}
    study = space_build_schedule(params, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    assert cli == study and cli.to_dict() == study.to_dict()


@pytest.mark.parametrize("policy", study_policies())
def test_cli_trains_what_a_study_trial_trains(policy: str) -> None:
    params = _trial_params(policy)
    assert params["policy"] == policy
    study = space_build_schedule(params, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    assert _cli_schedule("--schedule", policy, *_cli_args(VALUES)) == study


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_cli_defaults_are_smiths(policy: str) -> None:
    params = {"max_lr": 0.1, **SMITH_DEFAULTS}
    expected = build_schedule(policy, params, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    assert _cli_schedule("--schedule", policy) == expected


def test_one_cycle_defaults_are_smiths() -> None:
    momentum = (SMITH_DEFAULTS["momentum_high"], SMITH_DEFAULTS["momentum_low"])
    assert OneCycle(0.1, TOTAL) == OneCycle(
        0.1,
        TOTAL,
        div_factor=SMITH_DEFAULTS["div_factor"],
        cycle_frac=SMITH_DEFAULTS["cycle_frac"],
        annihilation=SMITH_DEFAULTS["annihilation"],
        momentum=momentum,
    )


def test_first_trial_uses_smiths_defaults() -> None:
    params = default_params(SpaceSection(policies=list(study_policies())), PRIOR)
    assert params.pop("max_lr") == PRIOR.center
    assert params.pop("policy") == policies.DEFAULT_POLICY
    assert params == dict(SMITH_DEFAULTS)


def test_policy_defaults_are_smiths() -> None:
    for policy in POLICIES.values():
        assert {k: SMITH_DEFAULTS[k] for k in policy.defaults} == dict(policy.defaults)


def test_triangular2_has_four_half_cycles_of_an_epoch_or_more() -> None:
    params = {"max_lr": 0.1, **SMITH_DEFAULTS}
    long_run = build_schedule("triangular2", params, total_steps=800, steps_per_epoch=10)
    short_run = build_schedule("triangular2", params, total_steps=40, steps_per_epoch=10)
    assert long_run.to_dict()["step_size"] == 100 and short_run.to_dict()["step_size"] == 10


def test_unknown_policy_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown policy 'sgdr'") as info:
        build_schedule("sgdr", VALUES, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    assert all(name in str(info.value) for name in POLICIES)


def test_missing_parameter_is_named() -> None:
    with pytest.raises(ValueError, match=r"needs parameters \['cycle_frac'\]"):
        build_schedule(
            "one-cycle",
            {k: v for k, v in VALUES.items() if k != "cycle_frac"},
            total_steps=TOTAL,
            steps_per_epoch=PER_EPOCH,
        )


def test_cli_choices_are_the_registry() -> None:
    (option,) = [p for p in train.params if p.name == "schedule"]
    assert list(option.type.choices) == list(POLICIES)  # type: ignore[attr-defined]


def test_cli_bad_value_names_the_option() -> None:
    with pytest.raises(ConfigError, match="schedule cyclic: max-lr must be > base-lr"):
        _cli_schedule("--schedule", "cyclic", "--div-factor", "0.5")


def test_study_file_takes_only_study_policies() -> None:
    data = {"study": {"name": "x", "workload": "digits-mlp"}, "space": {"policies": ["constant"]}}
    with pytest.raises(ConfigError, match=r"space\.policies: unknown study policies") as info:
        parse_study_config(data)
    assert all(name in str(info.value) for name in study_policies())


def test_policies_module_is_schedule_math() -> None:
    """DESIGN.md's layer rule: stdlib, Smith's defaults and the schedules module, nothing heavier."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(Path(policies.__file__).read_text())):
        if isinstance(node, ast.Import):
            used |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            used.add(node.module)
    outside = {m for m in used if m.split(".")[0] not in sys.stdlib_module_names}
    assert outside <= {"numpy", "lrsearch.defaults", "lrsearch.schedules"}, outside
