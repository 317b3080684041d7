"""Rich tables for ``lrsearch status``."""

from __future__ import annotations

from typing import Any


def print_status(summaries: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="studies")
    for column in (
        "study",
        "complete",
        "pruned",
        "diverged",
        "failed",
        "running",
        "target",
        "best",
        "best trial",
    ):
        table.add_column(column, justify="left" if column == "study" else "right")
    for s in summaries:
        t = s["trials"]
        best = s["best"]
        table.add_row(
            s["study"],
            str(t["COMPLETE"]),
            str(t["PRUNED"]),
            str(s["diverged"]),
            str(t["FAIL"]),
            str(t["RUNNING"]),
            str(s["n_trials_target"]),
            f"{best['value']:.4g}" if best else "-",
            str(best["number"]) if best else "-",
        )
    console.print(table)
    for s in summaries:
        if s["best"]:
            params = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in s["best"]["params"].items()
            )
            console.print(f"{s['study']}: best params {params}")
        for r in s["running"]:
            console.print(f"{s['study']}: trial {r['number']} running (last step {r['last_step']})")
