"""``lrsearch bench``: measure that the method pays off, and write the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lrsearch.cli._common import cli, positive, progress
from lrsearch.errors import ConfigError


def _names(value: str | None, option: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter("name at least one", param_hint=option)
    return names


@cli.command()
@click.option(
    "--quick",
    is_flag=True,
    help="What to run first: mnist1d-cnn, 3 seeds, 20 trials of 8 epochs, storage to 300 "
    "trials (minutes on 2 CPU cores).",
)
@click.option(
    "--smoke", is_flag=True, help="The tests' size: seconds per section, nothing measured."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-report"),
    show_default=True,
    help="Directory for report.md, report.json and the PNGs.",
)
@click.option(
    "--seeds",
    type=int,
    default=None,
    callback=positive("seeds"),
    help="Seeds per arm (full size: 5).",
)
@click.option(
    "--workloads",
    default=None,
    help="Comma-separated workloads of the search and pruning sections "
    "(full size: digits-mlp,mnist1d-cnn).",
)
@click.option(
    "--arms",
    default=None,
    help="Comma-separated arms of the search section (default: all; lrsearch always runs).",
)
@click.option(
    "--trials",
    type=int,
    default=None,
    callback=positive("trials"),
    help="Trial budget: each search arm may spend TRIALS x EPOCHS trial-epochs; "
    "also the trials per pruning study (full size: 20).",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    callback=positive("epochs"),
    help="Epochs per trial (full size: 10).",
)
@click.option(
    "--sections",
    default=None,
    help="Comma-separated subset of search,pruning,overhead,storage,lrfree (default: all).",
)
@click.option(
    "--storage-trials",
    type=int,
    default=None,
    callback=positive("storage-trials"),
    help="Trials the storage studies of the most workers grow to, direct and through the "
    "proxy; their first and last tenth are compared (full size: 20000).",
)
@click.option(
    "--storage-trials-fewer",
    type=int,
    default=None,
    callback=positive("storage-trials-fewer"),
    help="Trials the storage studies of fewer workers grow to (full size: 1000).",
)
@click.option(
    "--storage-proxy/--no-storage-proxy",
    default=None,
    help="Also run every storage worker count through lrsearch storage-proxy (Optuna's gRPC "
    "proxy), started on a free port for the run and stopped after it (default: on).",
)
@click.option(
    "--storage-fill/--no-storage-fill",
    default=None,
    help="The workers of the largest storage studies make only the first and last tenth; "
    "the trials between are written in bulk by SQL (default: off; on at --smoke).",
)
@click.option(
    "--postgres",
    default=None,
    help="PostgreSQL server for the storage section; a throwaway database is created "
    "there and dropped (default: postgresql://postgres@127.0.0.1:5432).",
)
@click.option(
    "--curves",
    default=None,
    type=click.Path(file_okay=False),
    help="Directory where the pruning section keeps its unpruned studies (one JSON per "
    "workload and seed) and reuses them on the next run with the same settings.",
)
@click.option(
    "--lrfree-against",
    default=None,
    type=click.Path(exists=True, dir_okay=True, path_type=Path),
    help="The lrfree section compares with lrsearch's runs in this earlier report "
    "(report.json or its directory), reused as they are, at that report's epochs, budget "
    "and seeds (default: this run's search section, else the section runs lrsearch).",
)
@click.option(
    "--lrfree-search",
    is_flag=True,
    default=None,
    help="The lrfree section also searches each LR-free optimizer with lrsearch's sampler "
    "and pruner (its lr or d_coef and warm-up), at lrsearch's budget.",
)
@click.option(
    "--merge",
    "merge",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Run nothing: combine the reports in these directories (repeat the option) into one "
    "at --out, summarised and judged again by this version (their report.json is kept).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or section timings.")
def bench(**opts: Any) -> None:
    """Measure that the method pays off: search efficiency, pruning, overhead, storage.

    Writes report.md (tables, targets met or missed), report.json (every run) and PNGs
    (best metric vs compute, pruning, storage latency) to --out. The storage section is
    skipped, with a note, when PostgreSQL is unreachable.
    """
    from lrsearch.harness.bench import SIZES, run_bench, write_report
    from lrsearch.workloads import get_workload

    if opts["merge"]:
        _merge(opts["merge"], opts["out"])
        return

    size = "smoke" if opts["smoke"] else "quick" if opts["quick"] else "full"
    workloads = _names(opts["workloads"], "--workloads")
    sections = _names(opts["sections"], "--sections")
    try:
        config = SIZES[size].replace(
            seeds=opts["seeds"],
            workloads=workloads,
            arms=_names(opts["arms"], "--arms"),
            trials=opts["trials"],
            epochs=opts["epochs"],
            sections=sections,
            storage_trials=opts["storage_trials"],
            storage_trials_fewer=opts["storage_trials_fewer"],
            storage_proxy=opts["storage_proxy"],
            storage_fill=opts["storage_fill"],
            postgres=opts["postgres"],
            curves=opts["curves"],
            lrfree_against=_report_file(opts["lrfree_against"]),
            lrfree_search=opts["lrfree_search"],
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for name in config.workloads:
        get_workload(name)  # an unknown workload fails now, in one line, not minutes in
    say = None if opts["quiet"] else (lambda line: click.echo(line, err=True))
    with progress(quiet=opts["quiet"]) as bars:
        report = run_bench(config, progress=bars, log=say)
    paths = write_report(report, opts["out"], command=_command(size, opts))
    for target in report["targets"]:
        click.echo(f"{target['status']:>12}  {target['target']}: {target['measured']}")
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")


def _report_file(path: Path | None) -> str | None:
    """``--lrfree-against``: the report.json it names, checked to be one."""
    if path is None:
        return None
    file = path / "report.json" if path.is_dir() else path
    try:
        json.loads(file.read_text())["search"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"--lrfree-against {path}: not a report with a search section ({exc!r}); name a "
            "report.json that 'lrsearch bench --sections search' wrote"
        ) from None
    return str(file)


def _merge(directories: tuple[Path, ...], out: Path) -> None:
    """``--merge``: earlier reports as one, written to ``out``."""
    from lrsearch.harness.bench import merge_reports, write_report

    if any(d.resolve() == out.resolve() for d in directories):
        raise ConfigError(
            f"--out {out}: is one of the --merge directories, whose report would be "
            "overwritten; write the merged report elsewhere"
        )
    reports = []
    for directory in directories:
        path = directory / "report.json"
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"--merge {directory}: no readable report.json there ({exc}); name a directory "
                "that 'lrsearch bench --out' wrote"
            ) from None
    report = merge_reports(reports)
    command = "lrsearch bench " + " ".join(f"--merge {d}" for d in directories) + f" --out {out}"
    paths = write_report(report, out, command=command)
    for target in report["targets"]:
        click.echo(f"{target['status']:>12}  {target['target']}: {target['measured']}")
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")


def _command(size: str, opts: dict[str, Any]) -> str:
    """The command line that reproduces this run."""
    parts = ["lrsearch bench"] + ([f"--{size}"] if size != "full" else [])
    for name in (
        "seeds",
        "workloads",
        "arms",
        "trials",
        "epochs",
        "sections",
        "storage_trials",
        "storage_trials_fewer",
        "curves",
        "lrfree_against",
    ):
        if opts[name] is not None:
            parts.append(f"--{name.replace('_', '-')} {opts[name]}")
    if opts["lrfree_search"]:
        parts.append("--lrfree-search")
    for flag in ("storage_proxy", "storage_fill"):
        if opts[flag] is not None:
            parts.append(f"--{'' if opts[flag] else 'no-'}{flag.replace('_', '-')}")
    return " ".join([*parts, f"--out {opts['out']}"])
