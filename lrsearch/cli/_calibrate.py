"""``lrsearch calibrate-prior``: measure where the best one-cycle ``max_lr`` falls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lrsearch.cli._common import check_device, cli, device_option, positive
from lrsearch.errors import ConfigError, LrsearchError


@cli.command("calibrate-prior")
@click.option(
    "--workloads",
    default="mnist1d-cnn,mnist1d-mlp,digits-mlp",
    show_default=True,
    help="Comma-separated workloads (names or 'package.module:function').",
)
@click.option(
    "--points",
    type=int,
    default=9,
    show_default=True,
    callback=positive("points"),
    help="max_lr grid points per workload (log-spaced over 2.5 decades; >= 3).",
)
@click.option(
    "--seeds",
    type=int,
    default=2,
    show_default=True,
    callback=positive("seeds"),
    help="Training seeds per grid point.",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    callback=positive("epochs"),
    help="Training epochs (default: each workload's).",
)
@device_option
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    callback=positive("threads"),
    help="torch CPU threads (small models train fastest on one).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docs/prior-calibration.md"),
    show_default=True,
    help="Markdown report; the raw numbers go next to it as .json.",
)
@click.option(
    "--jobs",
    type=int,
    default=1,
    show_default=True,
    callback=positive("jobs"),
    help="Workloads swept at once, each in its own process (one per CPU core).",
)
@click.option(
    "--reuse",
    is_flag=True,
    help="Keep the sweeps of workloads already in the --out .json (same settings); sweep the rest.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
def calibrate_prior(**opts: Any) -> None:
    """Range-test workloads, sweep one-cycle max_lr, and choose the prior's defaults.

    Writes a markdown report (table, machine, chosen defaults and why) and its raw numbers
    as JSON; copy the chosen defaults into lrsearch/prior.py.
    """
    import torch

    from lrsearch.harness.calibration import SweepSettings, calibrate, render_markdown

    workloads = [w.strip() for w in opts["workloads"].split(",") if w.strip()]
    if not workloads:
        raise ConfigError("--workloads: name at least one workload, e.g. --workloads digits-mlp")
    if opts["points"] < 3:
        raise click.BadParameter(f"must be >= 3, got {opts['points']}", param_hint="--points")
    torch.set_num_threads(opts["threads"])
    log = None if opts["quiet"] else (lambda line: click.echo(line, err=True))
    device = check_device(opts["device"])
    settings = SweepSettings(
        points=opts["points"], seeds=opts["seeds"], epochs=opts["epochs"], device=device
    )
    out: Path = opts["out"]
    reuse = _earlier(out.with_suffix(".json")) if opts["reuse"] else None
    try:
        result = calibrate(
            workloads,
            settings,
            log=log,
            jobs=opts["jobs"],
            reuse=reuse,
            on_workload=lambda partial: _save_partial(out.with_suffix(".json"), partial),
        )
    except ValueError as exc:  # e.g. a sweep in which every max_lr diverged
        raise LrsearchError(f"calibrate-prior: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(result, command=_command(workloads, opts)))
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    choice = result["choice"]
    click.echo(
        f"anchor={choice['anchor']} offset_decades={choice['offset_decades']:+.2f} "
        f"sigma_floor={choice['sigma_floor']:.2f} high_factor={choice['high_factor']:g}"
    )
    click.echo(f"wrote {out} and {out.with_suffix('.json')}")


def _save_partial(path: Path, partial: dict[str, Any]) -> None:
    """Keep the sweeps finished so far (reused ones included) where --reuse finds them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(partial, indent=2) + "\n")
    tmp.replace(path)


def _earlier(path: Path) -> dict[str, Any] | None:
    """The calibration recorded at ``path``, or None where there is none yet."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(
            f"--reuse: {path} is not a calibration's JSON ({exc}); remove it"
        ) from exc
    return data if isinstance(data, dict) else None


def _command(workloads: list[str], opts: dict[str, Any]) -> str:
    """The command line that reproduces this run (options at their defaults left out)."""
    parts = [
        "lrsearch calibrate-prior",
        f"--workloads {','.join(workloads)}",
        f"--points {opts['points']}",
        f"--seeds {opts['seeds']}",
    ]
    if opts["epochs"] is not None:
        parts.append(f"--epochs {opts['epochs']}")
    if opts["device"] != "cpu":
        parts.append(f"--device {opts['device']}")
    if opts["threads"] != 1:
        parts.append(f"--threads {opts['threads']}")
    return " ".join([*parts, f"--out {opts['out']}"])
