"""The live view at 80 columns and the plain lines elsewhere, on real Optuna trials."""

from __future__ import annotations

import io
import math
import re

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console
from rich.live import Live

from lrsearch.progress import STOPPING, Tally, ViewState, render, trial_line, wrap

NAME = "mnist1d-cnn-one-cycle-with-a-rather-long-study-name-2026-12-03-run-number-1234"


def _trials() -> list[optuna.trial.FrozenTrial]:
    dist = {"max_lr": FloatDistribution(1e-4, 1.0, log=True)}
    made = [
        create_trial(value=92.21875, params={"max_lr": 0.1}, distributions=dist),
        create_trial(value=95.03125, params={"max_lr": 0.2}, distributions=dist),
        create_trial(
            state=TrialState.PRUNED,
            params={"max_lr": 0.9},
            distributions=dist,
            intermediate_values={1: 11.0, 2: 12.5},
            user_attrs={"diverged": 1},
        ),
        create_trial(state=TrialState.FAIL, params={"max_lr": 0.3}, distributions=dist),
        create_trial(state=TrialState.FAIL, params={"max_lr": 0.4}, distributions=dist),
        create_trial(
            state=TrialState.FAIL,
            params={"max_lr": 0.5},
            distributions=dist,
            user_attrs={"surplus": True},
        ),
    ]
    for number, trial in enumerate(made):
        trial.number = number
    return made


def _view() -> ViewState:
    return ViewState(
        NAME,
        total=1200,
        tally=Tally.of(_trials(), maximize=True),
        elapsed=3 * 3600 + 25 * 60 + 7,
        finished_here=3,
        running="12 workers",
        trial=1017,
        epoch=17,
        epochs=120,
        stopping=True,
    )


def test_the_tally_counts_as_the_view_shows() -> None:
    tally = Tally.of(_trials(), maximize=True)
    assert tally == Tally(finished=3, pruned=1, diverged=1, failed=2, best=95.03125)
    assert Tally.of(_trials(), maximize=False).best == 92.21875


# Every number the view shows, each of which must appear whole on one line.
NUMBERS = ["3/1200", "3:25:07", "1364:01:33", "95.03", "1 pruned", "(1 diverged)", "2 failed"]
NUMBERS += ["12 workers", "trial 1017", "epoch 17/120", "2026-", "12-", "03-", "1234"]


@pytest.mark.parametrize("width", [80, 60])
def test_the_view_fits_the_width_and_keeps_every_number_whole(width: int) -> None:
    lines = render(_view(), width)
    assert all(len(line) <= width for line in lines), lines
    assert "…" not in "".join(lines)
    for number in NUMBERS:
        assert any(number in line for line in lines), (number, lines)
    assert "study " + NAME in "".join(lines)  # wrapped between words, not shortened
    assert STOPPING in " ".join(line for line in lines if line.startswith(("stopping", "rec")))


def test_the_live_view_renders_through_rich_at_80_columns() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)

    class Snapshot:
        def __rich_console__(self, console, options):
            from rich.text import Text

            yield Text("\n".join(render(_view(), options.max_width)), no_wrap=True)

    with Live(Snapshot(), console=console, auto_refresh=False, transient=False):
        print("stopping: a notice printed while the view is up comes out whole, wrapped")
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "\n", out.getvalue())  # each redraw: a line
    assert "…" not in shown, shown
    assert "1364:01:33" in shown and "epoch 17/120" in shown
    assert all(len(line) <= 80 for line in shown.splitlines())
    assert "comes out whole, wrapped" in shown


def test_narrow_terminals_drop_the_bar_not_the_numbers() -> None:
    lines = render(_view(), 30)
    assert all(len(line) <= 30 for line in lines)
    assert "━" not in lines[3] and "3/1200" in "\n".join(lines)


def test_a_plain_line_per_finished_trial() -> None:
    trials = _trials()
    tally = Tally.of(trials, maximize=True)
    assert trial_line(trials[1], tally, 40) == (
        "trial 1 complete 95.03 · 3/40 finished · best 95.03 · 1 pruned (1 diverged) · 2 failed"
    )
    assert trial_line(trials[2], tally, 40).startswith("trial 2 pruned at epoch 2 · 3/40")
    assert trial_line(trials[3], tally, 40).startswith("trial 3 fail · ")


def test_wrap_breaks_between_pieces_only() -> None:
    assert wrap(["best 95.03", "1 pruned (1 diverged)", "2 failed"], 24, indent="  ") == [
        "  best 95.03",
        "  1 pruned (1 diverged)",
        "  2 failed",
    ]
    assert wrap(["x" * 10], 4) == ["xxxx", "xxxx", "xx"]


def test_a_supervisor_prints_a_plain_line_for_each_trial_its_workers_finish(tmp_path) -> None:
    """Not a terminal: the trials finished elsewhere (worker processes) come out as lines."""
    from click.testing import CliRunner

    from lrsearch.cli import cli
    from lrsearch.progress import StudyProgress
    from lrsearch.storage import default_storage
    from lrsearch.study import load_study
    from tests.test_cli_study import TINY

    (tmp_path / "s.toml").write_text(TINY.format(name="plain") + "[tracking]\nenabled = false\n")
    env = {"LRSEARCH_HOME": str(tmp_path)}
    done = CliRunner().invoke(cli, ["run", str(tmp_path / "s.toml")], obj={}, env=env)
    assert done.exit_code == 0, done.output
    handle = load_study("plain", default_storage(tmp_path))
    lines: list[str] = []
    progress = StudyProgress(handle, n_trials=4, echo=lines.append)
    assert progress.plain and not progress.enabled
    progress.refresh(2)
    assert lines == []  # the trials finished before it started are not repeated
    template = handle.study.trials[0]
    finished = create_trial(
        value=99.5,
        params=template.params,
        distributions=template.distributions,
        intermediate_values={1: 90.0, 2: 99.5},
    )
    handle.study.add_trial(finished)  # as a worker process would
    progress._read_at = -math.inf  # past the read interval
    progress.refresh(2)
    assert len(lines) == 1
    assert lines[0].startswith("trial 3 complete 99.5 · 4/4 finished · best 99.5")
    progress.refresh(2)
    assert len(lines) == 1  # once per trial
