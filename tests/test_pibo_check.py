"""``python -m lrsearch.harness.pibo_check``: piBO settings on a synthetic study."""

from __future__ import annotations

import json
import statistics

from lrsearch.harness import pibo_check


def test_a_right_prior_helps_and_a_strong_unfading_one_cannot_be_overruled() -> None:
    def median(beta: float, fade: float, shift: float) -> float:
        return statistics.median(pibo_check._best(beta, fade, shift, s, 14) for s in range(4))

    # right prior: weighting TPE by it finds the optimum closer than TPE alone
    assert median(5.0, 0.5, 0.0) < median(0.0, 1.0, 0.0)
    # a prior 10 sigma wrong that barely fades keeps the search away from the optimum
    assert median(5.0, 0.5, -2.5) > 1.0 > median(0.0, 1.0, -2.5)


def test_main_prints_and_writes_every_setting(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(pibo_check, "SETTINGS", ((0.0, 1.0), (1.0, 1.0)))
    out = tmp_path / "p.json"
    pibo_check.main(["--seeds", "1", "--trials", "6", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "beta=0 fade=1" in printed and "beta=1 fade=1" in printed
    result = json.loads(out.read_text())
    assert set(result["median_best"]) == {"beta=0 fade=1", "beta=1 fade=1"}
    assert all(len(row) == len(pibo_check.SHIFTS) for row in result["median_best"].values())
