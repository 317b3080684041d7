"""The report: markdown by section (its targets from :mod:`._targets`), and the files."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrsearch.harness.bench._config import ARMS, PRUNER_ARMS
from lrsearch.harness.bench._targets import RECIPES, _fallback, _fmt, _scored

__all__ = ["render_markdown", "write_report"]

HEADERS = ("## Search efficiency", "## Pruning", "## Overhead", "## Storage", "## Targets")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [f"| {' | '.join(row)} |" for row in (header, ["---"] * len(header), *rows)]


def _seeds(section: dict[str, Any]) -> int:
    return max((len(runs) for runs in section["runs"].values()), default=0)


def _with_iqr(arm: dict[str, Any], key: str) -> str:
    """``median (25%-75%)`` of an arm's best at one budget fraction; the median alone where
    the report predates the IQRs or a seed had nothing yet."""
    cell = _fmt(arm.get(key), none="-")
    lo, hi = (arm.get("iqr_best_at") or {}).get(key, (None, None))
    if cell == "-" or lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return cell
    return f"{cell} ({lo:.2f}-{hi:.2f})"


def _search_md(report: dict[str, Any], prefix: str) -> list[str]:
    s = report["settings"]
    size = (
        f"Same workload, {s['epochs']} epochs per trial, a budget of {s['trials']} trials x "
        f"{s['epochs']} epochs = {s['trials'] * s['epochs']} trial-epochs per arm and seed "
        f"({s['seeds']} seeds)."
    )
    if "merged_from" in s:
        size = (
            f"Merged from {len(s['merged_from'])} runs ({'; '.join(s['merged_from'])}): each "
            "workload's budget and seeds are in its section."
        )
    lines = [
        HEADERS[0],
        "",
        f"{size} Range-test steps count as trial-epochs (steps / steps per "
        "epoch); a trial crossing the budget does not count. Every arm selects on validation "
        "and is scored on test: best = the test metric of the completed trial with the best "
        "final validation metric so far (a workload without a test split is scored on "
        "validation, as its table says). Target = "
        f"{s['target_tolerance']:g} points short of the best arm's median best (1% above it "
        "for a metric to minimise, a loss). Trials, "
        "trial-epochs and wall s: what was spent within the budget; report.json keeps the "
        "chosen trial's validation value too.",
        "",
    ]
    ran = set(s.get("arms", ARMS))
    lines += [f"- **{arm}**: {desc}" for arm, desc in ARMS.items() if arm in ran]
    for name, section in report.get("search", {}).items():
        summary = section["summary"]
        head = [
            "arm",
            _scored(section),
            "25-75%",
            "at 1/8 budget",
            "at 1/4 budget",
            "at 1/2 budget",
            "trial-epochs to target",
            "wall s to target",
            "seeds reaching it",
            "trials",
            "trial-epochs",
            "wall s",
        ]
        rows = [
            [
                arm,
                _fmt(a["median_best"], none="diverged"),
                f"{_fmt(a['q25_best'], none='diverged')} - {_fmt(a['q75_best'], none='diverged')}",
                _with_iqr(a, "median_best_at_eighth"),
                _with_iqr(a, "median_best_at_quarter"),
                _with_iqr(a, "median_best_at_half"),
                _fmt(a["median_trial_epochs_to_target"], ".1f", "not reached"),
                _fmt(a["median_wall_s_to_target"], ".1f", "not reached"),
                f"{a['reached_target']}/{a['seeds']}",
                _fmt(a["median_trials"], ".0f"),
                _fmt(a["median_trial_epochs"], ".1f"),
                _fmt(a["median_wall_s"], ".1f"),
            ]
            for arm, a in summary["arms"].items()
        ]
        recipe = next((summary["arms"][a] for a in RECIPES if a in summary["arms"]), None)
        lines += [
            "",
            f"### {name}",
            "",
            f"{_scored(section).capitalize()}: {section['metric']}, "
            f"{section['steps_per_epoch']} steps per epoch; budget {section['budget']} "
            f"trial-epochs ({section['budget'] // section['epochs']} trials x "
            f"{section['epochs']} epochs), {_seeds(section)} seeds; "
            f"target {_fmt(summary['target'])}. Medians over seeds; the range test of "
            f"lrsearch cost {summary['arms']['lrsearch']['median_range_test_trial_epochs']:.1f}"
            " trial-epochs"
            + (
                ""
                if recipe is None
                else f", that of the recipes {recipe['median_range_test_trial_epochs']:.1f}"
            )
            + ".",
            "",
            *_table(head, rows),
            "",
            f"![{name}]({prefix}search_{name}.png)",
        ]
    return lines


def _pruning_md(report: dict[str, Any], prefix: str) -> list[str]:
    lines = [
        HEADERS[1],
        "",
        "Each workload and seed: one study of "
        f"{report['settings']['trials']} trials x {report['settings']['epochs']} epochs run "
        "**without pruning** (lrsearch's range-test prior and sampler; each trial's "
        "`cycle_frac` sampled as in a real study), then every pruner replayed on the same "
        "trials in the same order (`lrsearch/harness/bench/_curves.py`): a trial stops where "
        "the pruner says, and its remaining epochs are saved. Paired, so the differences are "
        "the pruners'; not modelled: a sampler that saw pruned trials would have sampled "
        "differently afterwards, and concurrent workers. plateau: lrsearch's pruner as "
        "`lrsearch run` builds it (confidence 0.9, keep top 3, warm-up 1 epoch, 3 startup "
        "trials); stall: its predecessor (stalled for 3 epochs and below the median); "
        "Optuna's pruners with their defaults (percentile 25; Hyperband from 1 to "
        "`epochs`; patient-median: patience 2). Best = the test metric of the trial with the "
        "best validation value among those that finished; lost compares it with no pruning "
        "(median, and the worst seed); top-3 pruned = seeds in which a trial that ends "
        "among the best 3 without pruning was pruned.",
        "",
    ]
    head = [
        "workload",
        "pruner",
        "trial-epochs",
        "saved vs none",
        "best test metric (chosen on validation)",
        "test points lost (median / worst)",
        "seeds with a top-3 trial pruned",
        "pruned trials",
    ]
    rows = []
    for name, section in report.get("pruning", {}).items():
        n = len(section["runs"]["none"])
        for pruner in PRUNER_ARMS:
            p = section["summary"].get(pruner)
            if p is None:
                continue
            rows.append(
                [
                    name,
                    pruner,
                    _fmt(p["median_trial_epochs"], ".1f"),
                    f"{p['median_saved_fraction']:.0%}",
                    _fmt(p["median_best"], none="-") + _fallback(section),
                    _fmt(p["median_points_lost"])
                    + " / "
                    + _fmt(p["max_points_lost"])
                    + _fallback(section),
                    f"{p['seeds_top3_pruned']} of {n}",
                    _fmt(p["median_pruned"], ".0f"),
                ]
            )
    return [*lines, *_table(head, rows), "", f"![pruning]({prefix}pruning.png)"]


def _overhead_md(report: dict[str, Any]) -> list[str]:
    o = report["overhead"]
    lines = [
        HEADERS[2],
        "",
        f"One trial of {o['workload']} ({o['epochs']} epochs, {o['steps']} steps) through "
        f"`run_trials` on a {o.get('storage', 'sqlite')} study (PriorGuidedSampler, "
        "PlateauPruner), against the bare `lrsearch.training.train` call with the same "
        "schedule and seed, in alternating order; median of "
        f"{o['repeats']} pairs after one untimed warm-up pair. The fast-step row (where "
        "measured) is a trial of the workload named there. Load average (1/5/15 min) at the "
        f"end: {o.get('load_average')}.",
        "",
    ]
    head = [
        "variant",
        "trial wall s",
        "bare train s",
        "extra s",
        "ratio",
        "ratio 25-75%",
        "CPU ratio (training process)",
        "CPU ratio with writer",
        "writer CPU s",
        "warm-up ratio",
        "epochs compared (median)",
        "pairs: pruned (left out)",
    ]
    rows = [
        [
            name,
            _fmt(v["median_seconds"], ".3f"),
            _fmt(v["median_bare_seconds"], ".3f"),
            _fmt(v["median_extra_s"], ".3f"),
            _fmt(v["median_ratio"], ".3f"),
            f"{_fmt(v['q25_ratio'], '.3f')} - {_fmt(v['q75_ratio'], '.3f')}",
            _fmt(v["median_cpu_ratio"], ".3f"),
            _fmt(v.get("median_total_cpu_ratio"), ".3f"),
            _fmt(v.get("median_writer_cpu_s"), ".3f"),
            _fmt(v["warm_up_ratio"], ".3f"),
            _fmt(v.get("median_epochs"), ".0f"),
            f"{v['pairs']}: {_fmt(v.get('pruned_pairs'), '.0f')} ({v['left_out']})",
        ]
        for name, v in o["variants"].items()
    ]
    for row, (name, v) in zip(rows, o["variants"].items(), strict=True):
        if v.get("step_ms") is not None:  # which workload, and how long its bare step takes
            row[0] = f"{name} ({v['workload']}, {v['step_ms']:.2f} ms/step)"
    why = {
        name: ", ".join(f"{n} {reason}" for reason, n in v["left_out_why"].items())
        for name, v in o["variants"].items()
        if v.get("left_out_why")
    }
    note = (
        "Medians over pairs proven the same run: a COMPLETE trial against the whole bare run "
        "(same final metric), a trial the pruner stopped after epoch k against the bare run's "
        "first k epochs and its test scoring (same validation metric at epoch k; the bare run "
        "notes each epoch's end, microseconds each). Left out: pairs not proven the same run"
        + (" (" + "; ".join(f"{n}: {w}" for n, w in why.items()) + ")" if why else "")
        + ". CPU time is "
        "the training process's (not other processes' load, nor time spent waiting on disk); "
        "'CPU ratio with writer' adds the MLflow writer process's CPU for the trial's writes, "
        "its run's end included (it is drained after the trial, outside the wall time). "
        f"Rendering a schedule PNG costs {o['schedule_png_s']:.3f} s: the study's parent run "
        "gets one for all trials at the end, trial runs get the schedule as JSON only."
    )
    return [*lines, *_table(head, rows), "", *_long_md(o), note]


def _long_md(o: dict[str, Any]) -> list[str]:
    """The medians of the pairs of trials of >= 3 s, the ones the target is judged on."""
    parts = [
        f"{name}: {_fmt(v['long']['median_ratio'], '.3f')} wall{_interval(v['long'], 'ratio')}, "
        f"CPU {_fmt(v['long']['median_cpu_ratio'], '.3f')} (with writer "
        f"{_fmt(v['long']['median_total_cpu_ratio'], '.3f')}"
        f"{_interval(v['long'], 'total_cpu_ratio')}), {v['long']['pairs']} pairs"
        if v["long"]["pairs"]
        else f"{name}: none"
        for name, v in o["variants"].items()
        if "long" in v
    ]
    if not parts:
        return []
    seconds = next(v["long"]["min_seconds"] for v in o["variants"].values() if "long" in v)
    return [
        f"Pairs whose bare run took >= {seconds:.0f} s (the target's): " + "; ".join(parts) + ". "
        "In brackets: a 90% bootstrap interval of the median, the resolution this machine's "
        "run-to-run noise allows.",
        "",
    ]


def _interval(long: dict[str, Any], key: str) -> str:
    """`` [lo-hi]``: the 90% bootstrap interval of a median ratio, where the report has one."""
    ci = long.get(f"ci90_{key}")
    return f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else ""


def _storage_md(report: dict[str, Any], prefix: str) -> list[str]:
    st = report["storage"]
    if "skipped" in st:
        return [HEADERS[3], "", f"Skipped: {st['skipped']}."]
    arms = "directly and through `lrsearch storage-proxy` (Optuna's gRPC proxy, started for the run"
    arms += " on a free port in front of the same database)"
    if "proxy_skipped" in st:
        arms = f"directly (the proxy arm did not run: {st['proxy_skipped']})"
    lines = [
        HEADERS[3],
        "",
        f"PostgreSQL at {st['server']} (a throwaway database, dropped afterwards), reached "
        f"{arms}; a fresh study per worker count and way, grown to the trials shown; each "
        "round trip is ask + suggest of the lrsearch space (7 parameters) + tell, with "
        f"{st['sampler']} so the latency is the storage's. First and last tenth: the trials "
        "numbered in the study's first and last tenth; where the middle was written in bulk "
        "(copies of the last trial, by SQL), the workers made only those two tenths. Round "
        "trips: the worker's (database transactions direct, gRPC calls through the proxy); "
        "DB transactions: what PostgreSQL counted for the database (pg_stat_database, up to a "
        "second late). CPU: per timed trial, the workers' own, PostgreSQL's (the whole "
        "server) and the proxy's.",
        "",
    ]
    head = [
        "workers",
        "storage",
        "study trials (timed)",
        "trials/s",
        "p50 ms",
        "p95 ms",
        "p95 ms, first tenth",
        "p95 ms, last tenth",
        "last / first",
        "round trips / trial",
        "DB transactions / trial",
        "CPU ms / trial: workers, PostgreSQL, proxy",
    ]
    rows = []
    for r in sorted(st["runs"], key=lambda r: (r["workers"], r.get("arm", "direct"))):
        first, last = r.get("p95_ms_first_tenth"), r["p95_ms_last_tenth"]
        cpu = [r.get(f"{k}_cpu_ms_per_trial") for k in ("client", "postgres", "proxy")]
        rows.append(
            [
                str(r["workers"]),
                r.get("arm", "direct"),
                f"{r['trials']}" + (f" ({r['timed']})" if r.get("filled") else ""),
                _fmt(r["trials_per_s"], ".0f"),
                _fmt(r["p50_ms"], ".1f"),
                _fmt(r["p95_ms"], ".1f"),
                _fmt(first, ".1f"),
                _fmt(last, ".1f"),
                _fmt(last / first if first else None, ".2f"),
                _fmt(r.get("round_trips_per_trial"), ".1f"),
                _fmt(r.get("db_transactions_per_trial"), ".1f"),
                ", ".join(_fmt(c, ".0f") for c in cpu),
            ]
        )
    lines = [*lines, *_table(head, rows), "", f"![storage]({prefix}storage.png)"]
    projection = st.get("projection") or {}
    if projection:
        lines += [
            "",
            "**Projection, not a measurement**: the most workers on a machine with a core per "
            "worker and enough for the server, from the CPU time per trial measured above "
            "(`lrsearch.harness.bench._storage_stats.project`). A trial costs the workers' CPU time c "
            "and the server's s (PostgreSQL + proxy) as measured with that many workers, plus "
            "the time w a trial of the 1-worker run waited on neither (its mean latency less "
            "its c and s: commit flushes, network, scheduler). With no trial queueing for a "
            "CPU, throughput is workers / (c + s + w), except that the proxy, one Python "
            "process, runs on one core at a time (the GIL) and serves at most 1 / (its CPU "
            "time per trial) trials/s: where that is less, throughput is that cap and a trial "
            "takes workers / cap. p50 and p95 are the 1-worker run's scaled by that time per "
            "trial / its mean latency; the server keeps throughput x s cores busy. Here: the "
            "ceiling cores / (c + s) this machine's CPUs allow, next to the throughput "
            "measured.",
            "",
        ]
        head = [
            "storage",
            "workers",
            "trials/s measured here",
            "CPU-bound ceiling here",
            "c ms",
            "s ms",
            "w ms",
            "projected p50 ms",
            "projected p95 ms",
            "projected trials/s",
            "bound by",
            "server cores busy",
            "trials/s per PostgreSQL core",
        ]
        rows = [
            [
                arm,
                str(p["workers"]),
                _fmt(p["measured_trials_per_s"], ".0f"),
                _fmt(p["cpu_bound_trials_per_s"], ".0f"),
                _fmt(p["client_cpu_ms"], ".1f"),
                _fmt(p["server_cpu_ms"], ".1f"),
                _fmt(p["wait_ms"], ".1f"),
                _fmt(p["p50_ms"], ".1f"),
                _fmt(p["p95_ms"], ".1f"),
                _fmt(p["trials_per_s"], ".0f"),
                p.get("bound", "-"),
                _fmt(p["server_cores"], ".1f"),
                _fmt(p.get("trials_per_s_per_postgres_core"), ".0f"),
            ]
            for arm, p in projection.items()
        ]
        lines += _table(head, rows)
    rt = st.get("round_trips")
    if not rt:
        return lines
    # Round trips per trial, by what each is for (python -m lrsearch.harness.round_trips).
    lines += [
        "",
        f"Storage round trips (database transactions) per lrsearch trial: {rt['per_trial']} "
        f"at most, Optuna's heartbeat apart (a small {rt['workload']} study run as "
        "`lrsearch run` runs it, 3 epochs, no pruner; every trial: "
        f"{', '.join(str(n) for n in rt['trials'])}). What they are for, in that trial:",
        "",
    ]
    rows = [[purpose, str(n)] for purpose, n in rt["by_purpose"].items()]
    return [*lines, *_table(["round trip for", "per trial"], rows)]


def render_markdown(report: dict[str, Any], *, command: str, prefix: str = "") -> str:
    """The report as markdown; images are linked as ``prefix + file name``."""
    m = report["machine"]
    lines = [
        "# lrsearch benchmark",
        "",
        "Produced by:",
        "",
        f"    {command}",
        "",
        f"Machine: {m['cpu']} ({m['cpu_count']} cores, no GPU used), {m['platform']}, "
        f"Python {m['python']}, torch {m['torch']} on 1 thread, optuna {m['optuna']}. "
        f"Load average {m['load_start']:.1f} at the start, {m['load_end']:.1f} at the end; "
        f"{report['seconds']:.0f} s in all.",
        "",
    ]
    if "search" in report:
        lines += [*_search_md(report, prefix), ""]
    if "pruning" in report:
        lines += [*_pruning_md(report, prefix), ""]
    if report.get("lrfree"):
        from lrsearch.harness.bench._lrfree import lrfree_markdown

        lines += [*lrfree_markdown(report), ""]
    if "overhead" in report:
        lines += [*_overhead_md(report), ""]
    if "storage" in report:
        lines += [*_storage_md(report, prefix), ""]
    rows = [[t["target"], t["status"], t["measured"]] for t in report["targets"]]
    lines += [HEADERS[4], "", *_table(["target", "status", "measured"], rows), ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path, *, command: str) -> list[Path]:
    """``report.md``, ``report.json`` and the PNGs in ``out``; the paths written."""
    from lrsearch.harness.bench import _plots

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, section in report.get("search", {}).items():
        paths.append(
            _plots.search_png(name, section, section["summary"], out / f"search_{name}.png")
        )
    if report.get("pruning"):
        paths.append(_plots.pruning_png(report["pruning"], out / "pruning.png"))
    if report.get("storage", {}).get("runs"):
        paths.append(_plots.storage_png(report["storage"], out / "storage.png"))
    md, js = out / "report.md", out / "report.json"
    md.write_text(render_markdown(report, command=command))
    js.write_text(json.dumps({**report, "command": command}, indent=1) + "\n")
    return [md, js, *paths]
