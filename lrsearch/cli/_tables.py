"""Rich tables for ``lrsearch status``, readable in 80 columns.

Counts go in a table of one-letter columns explained by a legend; the study name, the best value
and params and the running trials follow on lines of their own, wrapped, never cut short.
"""

from __future__ import annotations

import os
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

FALLBACK_WIDTH = 80
LEGEND = (
    "C complete, P pruned, D diverged (counted in P), F failed, R running; "
    "target: finished (C + P) trials wanted; best: best value, from trial #"
)


def status_console(width: int | None = None) -> Console:
    """A console ``width`` wide; else the terminal's, $COLUMNS, or 80 when not a terminal.

    Rich would take the width of whichever standard stream is a terminal, so ``status | cat``
    in a wide window printed lines that wrap in an 80-column file or pager.
    """
    from rich.console import Console

    console = Console(width=width)
    if width is None and not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=FALLBACK_WIDTH)
    return console


def print_status(summaries: list[dict[str, Any]], *, width: int | None = None) -> None:
    """The counts table, its legend, then each study's best params and running trials."""
    from rich.text import Text

    console = status_console(width)
    console.print(_counts_table(summaries))
    for line in _wrap(LEGEND, console.width):
        console.print(Text(line, style="dim"))
    for s in summaries:
        console.print()
        console.print(Text(s["study"], style="bold", overflow="fold"))
        for line in _details(s, console.width):
            console.print(Text(line, overflow="fold"))


def _counts_table(summaries: list[dict[str, Any]]) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title="studies", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("study", overflow="fold")  # the only column that may wrap; in full below
    for header in ("C", "P", "D", "F", "R", "target", "best", "#"):
        table.add_column(header, justify="right", no_wrap=True)
    for s in summaries:
        t, best = s["trials"], s["best"]
        counts = (t["COMPLETE"], t["PRUNED"], s["diverged"], t["FAIL"], t["RUNNING"])
        table.add_row(
            Text(s["study"]),
            *(str(n) for n in counts),
            str(s["n_trials_target"]),
            _number(best["value"]) if best else "-",
            str(best["number"]) if best else "-",
        )
    return table


def _details(s: dict[str, Any], width: int) -> list[str]:
    best = s["best"]
    if best is None:
        lines = ["  no complete trial yet"]
    else:
        lines = [
            f"  best {s['metric']} {_number(best['value'])} ({s['direction']}), trial "
            f"{best['number']}:"
        ]
        params = ", ".join(f"{k}={_number(v)}" for k, v in best["params"].items())
        lines += _wrap(params, width, indent="    ", hang="")
    if s["running"]:
        running = ", ".join(f"{r['number']} (last step {r['last_step']})" for r in s["running"])
        lines += _wrap(f"running trials: {running}", width, indent="  ")
    return lines


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _wrap(text: str, width: int, *, indent: str = "", hang: str = "  ") -> list[str]:
    """Lines of at most ``width``; a word longer than that is split, never cut short."""
    return textwrap.wrap(
        text, width, initial_indent=indent, subsequent_indent=indent + hang, break_on_hyphens=False
    )
