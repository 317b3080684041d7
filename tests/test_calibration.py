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
    """The defaults are the rule `python -m lrsearch.harness.prior_check` chose on the
    calibration half of the suite (and the earlier eight workloads): docs/bench/prior-check.json."""
    rule = json.loads((repo_root / "docs" / "bench" / "prior-check.json").read_text())["rule"]
    assert rule["anchor"] == prior.DEFAULT_ANCHOR
    assert rule["offset_decades"] == pytest.approx(prior.DEFAULT_OFFSET_DECADES)
    assert rule["sigma_floor"] == pytest.approx(prior.DEFAULT_SIGMA_FLOOR)
    assert rule["cut_decades"] == pytest.approx(prior.DEFAULT_CUT_DECADES)
    assert rule["no_signal_offset_decades"] == pytest.approx(prior.NO_SIGNAL_OFFSET_DECADES)
    assert rule["no_signal_sigma"] == pytest.approx(prior.NO_SIGNAL_SIGMA)
    # not calibrated this round: as the earlier calibration recorded them
    choice = json.loads((repo_root / "docs" / "prior-calibration.json").read_text())["choice"]
    assert choice["low_decades"] == pytest.approx(prior.DEFAULT_LOW_DECADES)
    assert choice["high_factor"] == pytest.approx(prior.DEFAULT_HIGH_FACTOR)
    assert choice.get("offset_by_family", {}) == prior.DEFAULT_OFFSET_BY_FAMILY


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
    assert "| tests.tiny_workloads:blobs | sgd | 2 |" in text
    assert f'DEFAULT_ANCHOR = "{tiny["choice"]["anchor"]}"' in text
    assert "- **tests.tiny_workloads:blobs**: " in text


def _fake_result(
    best_offset: float, steep: float, min10: float, family: str = "sgd"
) -> dict[str, Any]:
    """A swept workload whose best max_lr is steep * 10**best_offset (metric 90 there, one
    point less per 0.1 decade away from it)."""
    best = steep * 10**best_offset
    suggestions = {"steep": steep, "min10": min10, "valley": steep / 3, "diverge": steep * 30}
    grid = [best * 10 ** (0.3 * k) for k in range(-4, 5)]
    return {
        "workload": f"fake{min10}-{family}",
        "family": family,
        "grid_step_decades": 0.3,
        "best_max_lr": best,
        "best_metric": 90.0,
        "sweep": [{"max_lr": lr, "mean": 90.0 - 10 * abs(math.log10(lr / best))} for lr in grid],
        "range_test": {
            "suggestions": {
                k: {"median": v, "spread_decades": 0.05} for k, v in suggestions.items()
            }
        },
        "offsets": {k: math.log10(best / v) for k, v in suggestions.items()},
    }


def test_held_out_places_each_workload_by_the_others() -> None:
    """Three SGD workloads 0.2 decades above steep (give or take), two Adam ones 0.8 below:
    one offset for all misses the Adam ones by a decade; an offset per family does not."""
    results = [
        _fake_result(0.15, 0.1, 0.01),
        _fake_result(0.2, 0.3, 0.02),
        _fake_result(0.25, 0.5, 0.03),
        _fake_result(-0.75, 0.01, 0.001, "adam"),
        _fake_result(-0.85, 0.02, 0.002, "adam"),
    ]
    held = calibration.held_out(results)
    pooled, by_family = held["pooled"], held["by_family"]
    # held out, the first SGD workload's centre comes from the other two SGD offsets (0.225)
    first = by_family["rows"][0]
    assert first["offset_decades"] == pytest.approx(0.225)
    assert first["error_decades"] == pytest.approx(0.15 - 0.225)
    assert first["centre"] == pytest.approx(0.1 * 10**0.225)
    assert first["lost_at_centre"] == pytest.approx(0.75, abs=1e-6)
    assert by_family["rms_error_decades"] < 0.1 < 0.5 < pooled["rms_error_decades"]
    assert held["chosen"] == "by_family"
    choice = calibration.final_choice(results, held)
    assert choice["rule"] == "by_family"
    assert choice["offset_by_family"] == {"adam": pytest.approx(-0.8), "sgd": pytest.approx(0.2)}
    assert choice["sigma_floor"] == pytest.approx(
        math.ceil(by_family["rms_error_decades"] / 0.05) * 0.05
    )
    text = calibration._held_out_md({"held_out": held, "workloads": results})
    assert "Chosen: **by_family**" in text and "| fake0.001-adam | adam | pooled |" in text


def test_held_out_needs_three_workloads() -> None:
    two = [_fake_result(0.2, 0.1, 0.01), _fake_result(0.1, 0.2, 0.02)]
    assert calibration.held_out(two) == {}
    assert "rule" not in calibration.final_choice(two, {})


def test_reuse_sweeps_only_the_new_workloads(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    swept: list[str] = []
    real = calibration.calibrate_workload

    def counting(spec: str, *args: Any) -> dict[str, Any]:
        swept.append(spec)
        return real(spec, *args)

    monkeypatch.setattr(calibration, "calibrate_workload", counting)
    settings = calibration.SweepSettings(points=3, seeds=1, epochs=2)
    partials: list[int] = []
    again = calibration.calibrate(
        ["tests.tiny_workloads:blobs"],
        settings,
        reuse=tiny,
        on_workload=lambda p: partials.append(len(p["workloads"])),
    )
    assert swept == [] and partials == [] and again["workloads"] == tiny["workloads"]
    other = calibration.SweepSettings(points=3, seeds=1, epochs=1)  # other settings: swept
    calibration.calibrate(
        ["tests.tiny_workloads:blobs"],
        other,
        reuse=tiny,
        on_workload=lambda p: partials.append(len(p["workloads"])),
    )
    assert swept == ["tests.tiny_workloads:blobs"] and partials == [1]


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


def test_anchor_noise_reruns_the_range_test_under_other_seeds(tiny: dict[str, Any]) -> None:
    from lrsearch.harness import anchor_noise

    (first,) = tiny["workloads"]
    second = {**first, "best_max_lr": first["best_max_lr"] * 10}  # a decade off the first
    result = anchor_noise.measure({"workloads": [first, second]}, seeds=2)
    assert len(result["suggestions"]["tests.tiny_workloads:blobs"]) == 2
    for row in result["anchors"].values():
        assert row["spread_decades"] >= 0.0
        # each is held out against the other's offset, a decade apart: about a decade off
        assert 0.5 < row["held_out_rms_decades"] <= row["held_out_max_abs_decades"] < 2.0


def test_cli_reuse_keeps_finished_sweeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cal.md"
    args = ["calibrate-prior", "--workloads", "tests.tiny_workloads:blobs", "--points", "3"]
    args += ["--seeds", "1", "--epochs", "2", "-q", "--out", str(out)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    swept = json.loads(out.with_suffix(".json").read_text())["workloads"]

    def no_more(*_: Any) -> None:
        raise AssertionError("swept again")

    monkeypatch.setattr(calibration, "calibrate_workload", no_more)
    again = CliRunner().invoke(cli, [*args, "--reuse"])
    assert again.exit_code == 0, again.output
    assert json.loads(out.with_suffix(".json").read_text())["workloads"] == swept
    assert not out.with_suffix(".json.tmp").exists()
