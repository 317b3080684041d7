"""The study's PNG figures: what each shows (drawn with the real matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from lrsearch.plots import StudyHistory, schedules_figure, study_pngs
from lrsearch.prior import LRPrior
from lrsearch.schedules import Constant

BRIGHT = matplotlib.colormaps["viridis"](1.0)  # the best value's colour


def _history(values: list[float], *, maximize: bool = True) -> StudyHistory:
    lrs = [10.0 ** (-1 - k) for k in range(len(values))]
    return StudyHistory(
        numbers=list(range(len(values))),
        values=values,
        max_lrs=lrs,
        maximize=maximize,
        prior=LRPrior(center=1e-2, sigma_decades=0.5, low=1e-4, high=1.0),
        importances={},
        schedules=[Constant(lr) for lr in lrs],
        total_steps=20,
        metric="accuracy",
    )


def _colourbar(fig):
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1, "one colour bar"
    return bars[0]


@pytest.mark.parametrize("maximize", [True, False])
def test_the_schedules_figure_has_a_colour_bar_named_after_the_metric(maximize: bool) -> None:
    values = [80.0, 90.0, 85.0]
    fig = schedules_figure(_history(values, maximize=maximize))
    bar = _colourbar(fig)
    assert bar.get_ylabel() == "val_accuracy"
    assert bar.get_ylim() == pytest.approx((80.0, 90.0))  # the values' range
    # the best trial's line has the same (bright) end of the colour map either way
    best = int(np.argmax(values) if maximize else np.argmin(values))
    line = fig.axes[0].get_lines()[best]
    assert np.allclose(to_rgba(line.get_color()), to_rgba(BRIGHT), atol=1e-6)


def test_one_value_still_gets_a_bar_around_it(tmp_path: Path) -> None:
    fig = schedules_figure(_history([0.5]))
    lo, hi = _colourbar(fig).get_ylim()
    assert lo < 0.5 < hi
    paths = study_pngs(_history([0.5, 0.7]), tmp_path)
    assert tmp_path / "schedules.png" in paths
    assert (tmp_path / "schedules.png").read_bytes()[:4] == b"\x89PNG"
