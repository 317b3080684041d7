from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lrsearch import prior
from lrsearch.cli import _calibrate  # noqa: F401  (registers calibrate-prior)
from lrsearch.cli._common import cli
from lrsearch.harness import calibration
from lrsearch.suggest import SUGGESTION_NAMES


def test_prior_defaults_agree_with_the_calibration_in_docs(repo_root: Path) -> None:
    choice = json.loads((repo_root / "docs" / "prior-calibration.json").read_text())["choice"]
    assert choice["anchor"] == prior.DEFAULT_ANCHOR
    assert choice["offset_decades"] == pytest.approx(prior.DEFAULT_OFFSET_DECADES)
    assert choice["sigma_floor"] == pytest.approx(prior.DEFAULT_SIGMA_FLOOR)
    # Not calibrated by offsets, but recorded with the run: they must agree too.
    assert choice["low_decades"] == pytest.approx(prior.DEFAULT_LOW_DECADES)
    assert choice["high_factor"] == pytest.approx(prior.DEFAULT_HIGH_FACTOR)


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    settings = calibration.SweepSettings(points=3, seeds=1, epochs=2)
    return calibration.calibrate(["tests.tiny_workloads:blobs"], settings)


def test_smoke_run_structure(tiny: dict[str, Any]) -> None:
    assert json.loads(json.dumps(tiny, allow_nan=False)) == tiny  # strict JSON, round-trips
    (result,) = tiny["workloads"]
    assert result["workload"] == "tests.tiny_workloads:blobs"
    assert set(result["range_test"]["suggestions"]) == set(SUGGESTION_NAMES)
    assert len(result["sweep"]) == 3
    assert all(len(row["metrics"]) == 1 for row in result["sweep"])
    assert result["best_max_lr"] in [row["max_lr"] for row in result["sweep"]]
    assert result["good_low"] <= result["best_max_lr"] <= result["good_high"]
    for name in SUGGESTION_NAMES:
        suggestion = result["range_test"]["suggestions"][name]["median"]
        expected = math.log10(result["best_max_lr"] / suggestion)
        assert result["offsets"][name] == pytest.approx(expected)
    choice = tiny["choice"]
    assert choice["anchor"] in prior.ANCHORS
    assert choice["sigma_floor"] > 0 and choice["high_factor"] >= 1.0


def test_markdown_render(tiny: dict[str, Any]) -> None:
    text = calibration.render_markdown(tiny, command="lrsearch calibrate-prior --points 3")
    assert "    lrsearch calibrate-prior --points 3" in text
    assert "| tests.tiny_workloads:blobs | 2 |" in text
    assert f'DEFAULT_ANCHOR = "{tiny["choice"]["anchor"]}"' in text
    assert "- **tests.tiny_workloads:blobs**: " in text


def _fake_result(best_offset: float, steep: float, min10: float) -> dict[str, Any]:
    """A swept workload whose best max_lr is steep * 10**best_offset."""
    best = steep * 10**best_offset
    suggestions = {"steep": steep, "min10": min10, "valley": steep / 3, "diverge": steep * 30}
    return {
        "workload": f"fake{min10}",
        "grid_step_decades": 0.3,
        "best_max_lr": best,
        "offsets": {k: math.log10(best / v) for k, v in suggestions.items()},
    }


def test_choose_defaults_picks_the_most_consistent_anchor() -> None:
    # steep and valley are both exact (offset 0.2 and 0.2 + log10(3)); min10 is not.
    results = [_fake_result(0.2, 0.1, 0.01), _fake_result(0.2, 0.5, 0.005)]
    choice = calibration.choose_defaults(results)
    assert choice["anchor"] == "steep"  # tied with valley: the earlier one
    assert choice["offset_decades"] == pytest.approx(0.2)
    assert choice["offset_std_by_anchor"]["min10"] > 0.1
    # No spread, so only the grid's quantisation: 0.3 / sqrt(12) = 0.087, rounded up.
    assert choice["sigma_floor"] == pytest.approx(0.1)
    assert choice["high_factor"] == 1.0


def test_choose_defaults_raises_the_cut_for_a_best_above_diverge() -> None:
    choice = calibration.choose_defaults([_fake_result(1.6, 0.1, 0.01)])  # best = 1.33 x diverge
    assert choice["high_factor"] == pytest.approx(1.4)


def test_cli_writes_markdown_and_json(
    tmp_path: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration, "calibrate", lambda *args, **kwargs: tiny)
    out = tmp_path / "docs" / "cal.md"
    result = CliRunner().invoke(
        cli,
        [
            "calibrate-prior",
            "--workloads",
            "a,b",
            "--points",
            "3",
            "--seeds",
            "1",
            "-q",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".json").read_text()) == tiny
    assert f"--workloads a,b --points 3 --seeds 1 --out {out}" in out.read_text()


def test_calibrate_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="points >= 3"):
        calibration.calibrate(["digits-mlp"], calibration.SweepSettings(points=2))
    with pytest.raises(ValueError, match="need a workload"):
        calibration.calibrate([])


def test_cli_refuses_fewer_than_three_points() -> None:
    result = CliRunner().invoke(cli, ["calibrate-prior", "--points", "2"])
    assert result.exit_code == 2
    assert "--points" in result.output
