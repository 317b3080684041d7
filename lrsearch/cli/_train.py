"""``lrsearch train`` and ``lrsearch range-test``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from lrsearch.cli._common import (
    allow_workload_option,
    check_device,
    cli,
    device_option,
    positive,
    progress,
    set_threads,
    workload_option,
)
from lrsearch.errors import ConfigError
from lrsearch.policies import DEFAULT_POLICY, POLICIES, SMITH_DEFAULTS, build_schedule

if TYPE_CHECKING:
    from lrsearch.schedules import Schedule
    from lrsearch.trainers import Trainer
    from lrsearch.training import TrainResult


def schedule_from_options(
    opts: dict[str, Any], *, total_steps: int, steps_per_epoch: int
) -> Schedule:
    """The schedule ``--schedule`` and its options describe, as a study trial with them builds
    it; a bad value raises ConfigError naming the option."""
    name = opts["schedule"]
    try:
        return build_schedule(name, opts, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    except ValueError as exc:
        raise ConfigError(f"schedule {name}: {exc}".replace("_", "-")) from exc


@cli.command()
@workload_option
@click.option(
    "--schedule",
    type=click.Choice(list(POLICIES)),
    default=DEFAULT_POLICY,
    show_default=True,
    help="LR policy.",
)
@click.option(
    "--max-lr",
    type=float,
    default=0.1,
    show_default=True,
    callback=positive("max-lr"),
    help="Peak LR (one-cycle/cyclic) or the LR (constant/plateau).",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    callback=positive("epochs"),
    help="Epochs (default: the workload's).",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    callback=positive("batch-size"),
    help="Mini-batch size (default: the workload's).",
)
@click.option(
    "--div-factor",
    type=float,
    default=SMITH_DEFAULTS["div_factor"],
    show_default=True,
    help="Lower LR = max-lr / div-factor.",
)
@click.option(
    "--cycle-frac",
    type=float,
    default=SMITH_DEFAULTS["cycle_frac"],
    show_default=True,
    help="Fraction of steps in the cycle; the rest is annihilation.",
)
@click.option(
    "--annihilation",
    type=float,
    default=SMITH_DEFAULTS["annihilation"],
    show_default=True,
    help="Final LR = lower LR / annihilation.",
)
@click.option(
    "--momentum-high",
    type=float,
    default=SMITH_DEFAULTS["momentum_high"],
    show_default=True,
    help="Momentum at the ends of the cycle.",
)
@click.option(
    "--momentum-low",
    type=float,
    default=SMITH_DEFAULTS["momentum_low"],
    show_default=True,
    help="Momentum at the LR peak.",
)
@click.option(
    "--weight-decay", type=float, default=0.0, show_default=True, help="Optimizer weight decay."
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seeds model init and data order (default: 0, or the trial's seed with --from-study).",
)
@click.option(
    "--seeds",
    type=int,
    default=1,
    show_default=True,
    callback=positive("seeds"),
    help="Train with this many seeds (seed, seed+1, ...) and report mean ± std.",
)
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option(
    "--from-study",
    default=None,
    help="Retrain the best schedule of this study (other schedule options are ignored).",
)
@click.option("--storage", default=None, help="Storage of --from-study (default: as for 'run').")
@allow_workload_option
def train(**opts: Any) -> None:
    """Train one schedule on a workload and print the final validation metric (and the test
    metric, scored once at the end, where the workload has a test split)."""
    set_threads()
    device = check_device(opts["device"])
    job = _from_study(opts) if opts["from_study"] else _from_options(opts)
    seed = job.seed if opts["seed"] is None else opts["seed"]
    if job.origin:
        click.echo(f"retraining {job.origin} with seed {seed}", err=True)
    results = [_train_once(job, device, seed + k) for k in range(opts["seeds"])]
    if opts["as_json"]:
        click.echo(json.dumps(_json_record(results, seed, job)))
    else:
        _print_results(results, seed, job)


def _print_results(results: list[TrainResult], seed: int, job: _Job) -> None:
    """One line per seed, then the mean ± std over seeds; test next to validation if any."""
    has_test = _has_test(job, results)
    for k, result in enumerate(results):
        status = f"diverged: {result.diverge_reason}" if result.diverged else "finished"
        test = f" test_{result.metric_name}={result.test_metric:.2f}" if has_test else ""
        # a loop reports its metric only: no validation loss to show
        loss = f" val_loss={result.val_loss:.4f}" if math.isfinite(result.val_loss) else ""
        click.echo(
            f"{job.trainer.workload.name} {job.label} seed {seed + k}: {status} after "
            f"{result.epochs} epochs in {result.seconds:.1f}s; val_{result.metric_name}={result.val_metric:.2f}"
            f"{loss}{test}"
        )
    if len(results) > 1:
        record = _seeds_record(results, seed, has_test=has_test)
        name = results[0].metric_name
        line = f"over {len(results)} seeds: val_{name}={_mean_std(record, 'val_metric')}"
        click.echo(line + (f" test_{name}={_mean_std(record, 'test_metric')}" if has_test else ""))


def _json_record(results: list[TrainResult], seed: int, job: _Job) -> dict[str, Any]:
    """``train --json``'s object: one run's result (and its ``seed``), or the seeds' summary
    with each seed's run under ``runs``; test scores only where the workload has a test split."""
    has_test = _has_test(job, results)
    if len(results) == 1:
        record = {"seed": seed, **_run_record(results[0], has_test=has_test)}
    else:
        record = _seeds_record(results, seed, has_test=has_test)
        record["runs"] = [
            {"seed": seed + k, **_run_record(r, has_test=has_test)} for k, r in enumerate(results)
        ]
    record["schedule"] = job.schedule.to_dict()
    return record


def _run_record(result: TrainResult, *, has_test: bool) -> dict[str, Any]:
    """One run's result for ``--json``: no per-epoch history; test scores only if any."""
    record = result.to_dict()
    record.pop("history", None)
    if not has_test:
        record.pop("test_metric", None)
        record.pop("test_loss", None)
    return record


def _mean_std(record: dict[str, Any], key: str) -> str:
    return f"{record[key + '_mean']:.2f} ± {record[key + '_std']:.2f}"


@dataclass(frozen=True)
class _Job:
    """What ``train`` trains: a trainer, a schedule, the parameters and seed around them."""

    trainer: Trainer
    schedule: Schedule
    params: dict[str, Any]
    seed: int
    label: str
    origin: str = ""


def _train_once(job: _Job, device: str, seed: int) -> TrainResult:
    return job.trainer.train(job.schedule, params=job.params, seed=seed, device=device)


def _has_test(job: _Job, results: list[TrainResult]) -> bool:
    """Whether to show test scores: the workload has a test split, or the trainer scored one."""
    return job.trainer.workload.has_test or any(math.isfinite(r.test_metric) for r in results)


def _seeds_record(
    results: list[TrainResult], seed: int, *, has_test: bool = False
) -> dict[str, Any]:
    """Per-seed metrics with their mean and std: validation, and test where there is one."""
    import statistics

    record: dict[str, Any] = {"seeds": list(range(seed, seed + len(results)))}
    for key in ("val_metric", "test_metric") if has_test else ("val_metric",):
        values = [getattr(r, key) for r in results]
        record[key] = values
        record[f"{key}_mean"] = statistics.fmean(values)
        record[f"{key}_std"] = statistics.stdev(values)
    record["metric_name"] = results[0].metric_name
    record["diverged"] = [r.diverged for r in results]
    return record


def _from_options(opts: dict[str, Any]) -> _Job:
    from lrsearch.trainers import WorkloadTrainer
    from lrsearch.workloads import get_workload

    trainer = WorkloadTrainer(
        get_workload(opts["workload"]), epochs=opts["epochs"] or 0, batch_size=opts["batch_size"]
    )
    per_epoch = trainer.steps_per_epoch
    schedule = schedule_from_options(
        opts, total_steps=trainer.epochs * per_epoch, steps_per_epoch=per_epoch
    )
    label = f"{opts['schedule']} max_lr={opts['max_lr']:g}"
    return _Job(trainer, schedule, {"weight_decay": opts["weight_decay"]}, 0, label)


def _from_study(opts: dict[str, Any]) -> _Job:
    """The best trial of a study, exactly as it trained (its schedule, settings and seed)."""
    from lrsearch.reporting import best_trial
    from lrsearch.storage import default_storage
    from lrsearch.study import load_study
    from lrsearch.trials import seed_of, trial_params, trial_schedule

    handle = load_study(
        opts["from_study"],
        opts["storage"] or default_storage(),
        allow_workloads=tuple(opts["allow_workloads"]),
    )
    trial = best_trial(handle)
    params = trial_params(handle, trial)
    return _Job(
        trainer=handle.plan.trainer,  # the study's: its workload, or its own loop
        schedule=trial_schedule(handle, trial),
        params=dict(params),
        seed=seed_of(handle.config, trial),  # an annihilation tail: its parent's seed
        label=f"{params.get('policy', 'one-cycle')} "
        + " ".join(f"{k}={params[k]:g}" for k in ("max_lr", "lr", "d_coef") if k in params),
        origin=f"trial {trial.number} of study {handle.name!r} (val {trial.value:.4g})",
    )


@cli.command("range-test")
@workload_option
@click.option(
    "--repeats",
    type=int,
    default=3,
    show_default=True,
    callback=positive("repeats"),
    help="Runs with different data orders from the same initial weights.",
)
@click.option(
    "--start-lr",
    type=float,
    default=1e-7,
    show_default=True,
    callback=positive("start-lr"),
    help="First LR of the ramp.",
)
@click.option(
    "--end-lr",
    type=float,
    default=10.0,
    show_default=True,
    callback=positive("end-lr"),
    help="Last LR of the ramp.",
)
@click.option(
    "--num-iter", type=int, default=None, help="Steps per repeat (default: max(100, one epoch))."
)
@click.option(
    "--ramp",
    type=click.Choice(["exp", "linear"]),
    default="exp",
    show_default=True,
    help="Exponential (geometric) or linear LR ramp.",
)
@click.option(
    "--diverge-factor",
    type=float,
    default=4.0,
    show_default=True,
    help="Stop once the smoothed loss exceeds the best by this factor.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seeds weights and data orders."
)
@device_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="range-test",
    show_default=True,
    help="Directory for range_test.json/.csv/.png.",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="Also log one MLflow run (curve as step metrics, JSON/CSV/PNG) here.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print range_test.json to stdout instead of a table."
)
def range_test(**opts: Any) -> None:
    """Run the LR range test: suggestions, the max_lr prior, and a plot."""
    from pathlib import Path

    from lrsearch import plots
    from lrsearch.range_test import range_test_workload

    set_threads()
    from lrsearch.workloads import get_workload

    if opts["start_lr"] >= opts["end_lr"]:
        raise ConfigError("--start-lr must be below --end-lr; e.g. --start-lr 1e-7 --end-lr 10")
    if opts["num_iter"] is not None and opts["num_iter"] < 10:
        raise ConfigError(f"--num-iter must be >= 10, got {opts['num_iter']}")
    if opts["diverge_factor"] <= 1:
        raise ConfigError(f"--diverge-factor must be > 1, got {opts['diverge_factor']}")
    workload = get_workload(opts["workload"])
    device = check_device(opts["device"])
    with progress(quiet=opts["as_json"]) as bar:
        task = bar.add_task("range test", total=opts["repeats"])
        result = range_test_workload(
            workload,
            device=device,
            seed=opts["seed"],
            start_lr=opts["start_lr"],
            end_lr=opts["end_lr"],
            num_iter=opts["num_iter"],
            ramp=opts["ramp"],
            repeats=opts["repeats"],
            diverge_factor=opts["diverge_factor"],
            on_repeat=lambda done, total: bar.update(task, completed=done),
        )
    out = Path(opts["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "range_test.json").write_text(result.to_json())
    (out / "range_test.csv").write_text(result.to_csv())
    plots.range_test_png(result, out / "range_test.png")
    if opts["tracking_uri"]:
        from lrsearch.tracking import log_range_test

        log_range_test(result, out, tracking_uri=opts["tracking_uri"], workload=workload.name)
    if opts["as_json"]:
        click.echo(result.to_json())
        return
    _print_range_test(result, out)


def _print_range_test(result: Any, out: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"LR range test: {len(result.curves)} repeats, {result.seconds:.1f}s")
    table.add_column("suggestion")
    table.add_column("median", justify="right")
    table.add_column("spread (decades)", justify="right")
    table.add_column("per repeat", justify="right")
    for name, s in result.summary.items():
        table.add_row(
            name,
            f"{s.median:.3g}",
            f"{s.spread_decades:.2f}",
            "  ".join(f"{v:.3g}" for v in s.values),
        )
    prior = result.prior
    console = Console()
    console.print(table)
    lo, hi = prior.interval(0.9)
    console.print(
        f"max_lr prior: centre {prior.center:.3g}, sigma {prior.sigma_decades:.2f} decades, "
        f"bounds [{prior.low:.3g}, {prior.high:.3g}], 90% in [{lo:.3g}, {hi:.3g}]"
    )
    console.print(f"wrote {out}/range_test.json, range_test.csv, range_test.png")
