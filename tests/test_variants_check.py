"""``python -m lrsearch.harness.variants_check``: one setting changed, the same search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrsearch.harness import variants_check


def test_variants_parse_and_join() -> None:
    assert variants_check._variant("tails=2") == {"tails": 2}
    assert variants_check._variant("shift=-1.5+pibo_beta=1") == {
        "shift_decades": -1.5,
        "prior": {"pibo_beta": 1.0},
    }
    with pytest.raises(SystemExit, match="unknown variant 'beta=1'"):
        variants_check._variant("shift=1+beta=1")


def test_each_variant_runs_the_same_search(tmp_path: Path) -> None:
    """Each variant runs the same seeds and budget (the range test, 50 trial-epochs of this
    tiny workload, paid out of the 80), and is scored at every budget fraction."""
    out = tmp_path / "v.json"
    variants_check.main(
        [
            "--workloads", "tests.tiny_workloads:blobs", "--seeds", "1", "--trials", "40",
            "--epochs", "2", "--variants", "shift=0,shift=1", "--out", str(out),
        ]
    )  # fmt: skip
    result = json.loads(out.read_text())
    arms = result["tests.tiny_workloads:blobs"]["arms"]
    assert set(arms) == {"shift=0", "shift=1"}
    for row in arms.values():
        assert set(row) == {
            "best_at_eighth", "best_at_quarter", "best_at_half", "best_at_budget", "median_trials",
            "median_epochs_to_good",
        }  # fmt: skip
        # a good trial (within 2% of the best any variant reached) finished within the budget
        assert 0 < row["median_epochs_to_good"] <= 80
        # 30 trial-epochs left; a trial that diverges in its first steps costs less than one
        assert 1 <= row["median_trials"] <= 40 * 3  # the harness's cap
        assert row["best_at_eighth"] is None  # an eighth of 80 is inside the range test
        assert row["best_at_budget"] is not None and row["best_at_budget"] > 50
