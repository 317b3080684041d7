"""Run the benchmark's sections in order and collect one JSON-ready report."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrsearch.harness.bench._config import PRUNER_ARMS, BenchConfig

__all__ = ["run_bench"]


class _Silent:
    """Stands in for a rich ``Progress`` when none is given."""

    def add_task(self, description: str, total: float | None = None) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        pass


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import optuna
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
    return {
        "platform": platform.platform(),
        "cpu": (cpu or [platform.machine()])[0],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "cuda_used": False,
        "load_start": os.getloadavg()[0],
    }


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Earlier reports as one, summarised and judged again by this version's code.

    Sections of a workload that several reports measured come from the last of them; the
    overhead and storage sections too. Settings are the first report's, with
    ``merged_from`` listing each report's command; each search section keeps its own budget
    and epochs.
    """
    from lrsearch.harness.bench._stats import summarize_pruning, summarize_search
    from lrsearch.harness.bench._targets import evaluate_targets

    if not reports:
        raise ValueError("nothing to merge: name at least one report")
    merged: dict[str, Any] = {
        "settings": {
            **reports[0]["settings"],
            "merged_from": [r.get("command", "?") for r in reports],
        },
        "machine": reports[0].get("machine", {}),
        "seconds": sum(float(r.get("seconds", 0.0)) for r in reports),
    }
    for report in reports:
        for name in ("search", "pruning"):
            merged.setdefault(name, {}).update(report.get(name, {}))
        merged.setdefault("lrfree", {}).update(report.get("lrfree", {}))
        for name in ("overhead", "storage"):
            if name in report:
                merged[name] = report[name]
    tolerance = float(merged["settings"].get("target_tolerance", 0.3))
    for section in merged.get("search", {}).values():
        section["summary"] = summarize_search(section, tolerance=tolerance)
    for section in merged.get("pruning", {}).values():
        section["summary"] = summarize_pruning(section)
    merged = {k: v for k, v in merged.items() if v != {}}
    merged["targets"] = evaluate_targets(merged)
    return merged


def _against(config: BenchConfig, report: dict[str, Any]) -> dict[str, Any] | None:
    """The report whose lrsearch runs the LR-free section reuses: the file named, or this one."""
    import json

    if config.lrfree_against is not None:
        loaded: dict[str, Any] = json.loads(Path(config.lrfree_against).read_text())
        return loaded
    return report if "search" in report else None


def _stepper(progress: Any, description: str, total: int) -> Callable[[], None]:
    task = progress.add_task(description, total=total)
    return lambda: progress.advance(task)


def run_bench(
    config: BenchConfig, *, progress: Any = None, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run every section of ``config.sections``; the report that :func:`write_report` writes.

    Args:
        config: what to run, and how much.
        progress: a ``rich.progress.Progress`` (one task per section), or None.
        log: gets one line as each section ends.
    """
    import optuna
    import torch

    from lrsearch.harness.bench._pruning import run_pruning
    from lrsearch.harness.bench._search import RangeTests, Task, run_search
    from lrsearch.harness.bench._stats import summarize_pruning, summarize_search

    torch.set_num_threads(1)  # tiny models train fastest on one thread; the timings assume it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    progress = progress or _Silent()
    say = log or (lambda _: None)
    started = time.perf_counter()
    report: dict[str, Any] = {"settings": config.to_dict(), "machine": machine()}
    tasks = {}
    if {"search", "pruning"} & set(config.sections):
        tasks = {name: Task.load(name, config.epochs) for name in config.workloads}
    ranges = RangeTests(config.range_test)
    n_runs = len(tasks) * config.seeds
    if "search" in config.sections:
        t0 = time.perf_counter()
        report["search"] = run_search(
            config, tasks, ranges, _stepper(progress, "search", n_runs * len(config.arms))
        )
        for section in report["search"].values():
            section["summary"] = summarize_search(section, tolerance=config.target_tolerance)
        say(f"search efficiency: {time.perf_counter() - t0:.0f} s")
    if "pruning" in config.sections:
        t0 = time.perf_counter()
        report["pruning"] = run_pruning(
            config, tasks, ranges, _stepper(progress, "pruning", n_runs * len(PRUNER_ARMS))
        )
        for section in report["pruning"].values():
            section["summary"] = summarize_pruning(section)
        say(f"pruning: {time.perf_counter() - t0:.0f} s")
    if "lrfree" in config.sections:
        from lrsearch.harness.bench._lrfree import LRFREE_ARMS, run_lrfree

        t0 = time.perf_counter()
        step = _stepper(progress, "lrfree", len(config.workloads) * config.seeds * len(LRFREE_ARMS))
        report["lrfree"] = run_lrfree(config, ranges, step, against=_against(config, report))
        say(f"LR-free optimizers: {time.perf_counter() - t0:.0f} s")
    if "overhead" in config.sections:
        from lrsearch.harness.bench._overhead import run_overhead

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="lrsearch-bench-") as tmp:
            step = _stepper(progress, "overhead", 2 * (config.overhead_repeats + 1))
            report["overhead"] = run_overhead(config, Path(tmp), step)
        say(f"overhead: {time.perf_counter() - t0:.0f} s")
    if "storage" in config.sections:
        from lrsearch.harness.bench._storage import run_storage

        t0 = time.perf_counter()
        step = _stepper(progress, "storage", len(config.storage_workers))
        report["storage"] = run_storage(config, step)
        say(f"storage: {time.perf_counter() - t0:.0f} s")
    from lrsearch.harness.bench._targets import evaluate_targets

    report["targets"] = evaluate_targets(report)
    report["machine"]["load_end"] = os.getloadavg()[0]
    report["seconds"] = time.perf_counter() - started
    return report
