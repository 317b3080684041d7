"""lrsearch.config: the study file, typed; a bad field is one line naming it and the fix."""

from __future__ import annotations

import pytest

from lrsearch.config import StudyConfig, load_study_config, parse_study_config
from lrsearch.errors import ConfigError

STUDY = {"name": "cfg", "workload": "mnist1d-cnn"}


def _one_line(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_study_config(data, source="x.toml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("x.toml: ")
    return message


def test_a_minimal_file_gets_smiths_defaults() -> None:
    config = parse_study_config({"study": STUDY})
    assert (config.study.n_trials, config.study.seed) == (20, 0)
    assert (config.space.div_factor.low, config.space.div_factor.high) == (4.0, 25.0)
    assert config.space.div_factor.log and config.space.policies == ["one-cycle"]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"study": {"name": "cfg"}}, "study.workload: missing; add it to the file"),
        ({"study": {**STUDY, "n_trails": 3}}, "study.n_trails: unknown field; check the spelling"),
        ({"study": {**STUDY, "n_trials": 0}}, "study.n_trials: Input should be greater than"),
        ({"study": STUDY, "space": {"div_factor": [30, 4]}}, "low must be <= high"),
        ({"study": STUDY, "space": {"div_factor": [1, 4]}}, "div_factor: low must be > 1"),
        ({"study": STUDY, "space": {"weight_decay": [1, 2, 3]}}, "give [low, high] (two numbers)"),
        ({"study": STUDY, "space": {"policies": ["warp"]}}, "unknown study policies ['warp']"),
        (
            {"study": STUDY, "space": {"momentum_low": [0.8, 0.95]}},
            "momentum_low must lie below momentum_high",
        ),
        ({"study": {**STUDY, "metric": "acc"}}, "metric: only for a study with its own loop"),
        (
            {"study": {"name": "cfg", "loop": "pkg.m:train"}},
            "needs metric, direction, steps_per_epoch, epochs",
        ),
    ],
)
def test_a_bad_field_is_named_with_the_fix(data: dict, says: str) -> None:
    assert says in _one_line(data)


def test_a_loop_names_the_workload_it_runs() -> None:
    config = parse_study_config(
        {
            "study": {
                "name": "own",
                "loop": "pkg.m:train",
                "metric": "acc",
                "direction": "maximize",
                "steps_per_epoch": 10,
                "epochs": 2,
            }
        }
    )
    assert config.study.workload == "pkg.m:train"


def test_the_fingerprint_follows_the_search_not_names_or_budgets() -> None:
    base = parse_study_config({"study": STUDY})
    renamed = parse_study_config({"study": {**STUDY, "name": "other", "n_trials": 99}})
    narrower = parse_study_config({"study": STUDY, "space": {"div_factor": [5, 25]}})
    assert base.fingerprint() == renamed.fingerprint()
    assert base.fingerprint() != narrower.fingerprint()
    assert StudyConfig.from_json(base.to_json()) == base
    assert base.flat()["space.div_factor.low"] == 4.0


def test_a_file_and_its_overrides(tmp_path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "f"\nworkload = "mnist1d-cnn"\nn_trials = 4\n')
    assert load_study_config(path).study.n_trials == 4
    assert load_study_config(path, n_trials=7, seed=None).study.n_trials == 7
    with pytest.raises(ConfigError, match="no such study file"):
        load_study_config(tmp_path / "missing.toml")
    path.write_text("[study\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_study_config(path)
