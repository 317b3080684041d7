"""The report: targets met or missed, markdown, and the files written next to it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrsearch.harness.bench._config import ARMS, PRUNER_ARMS

__all__ = ["evaluate_targets", "render_markdown", "write_report"]

HEADERS = ("## Search efficiency", "## Pruning", "## Overhead", "## Storage", "## Targets")


def _fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None or not math.isfinite(value) else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [f"| {' | '.join(row)} |" for row in (header, ["---"] * len(header), *rows)]


def _status(ok: bool) -> str:
    return "met" if ok else "missed"


def _scored(section: dict[str, Any]) -> str:
    """What a section's "best" is, for its table: test, or validation without a test split."""
    if section.get("scored_on") == "test":
        return "best test metric (chosen on validation)"
    return "best validation metric (no test split)"


def _fallback(section: dict[str, Any]) -> str:
    """A cell's note where the workload has no test split, so validation stands in."""
    return "" if section.get("scored_on") == "test" else " (validation: no test split)"


def _points(section: dict[str, Any]) -> str:
    return "test" if section.get("scored_on") == "test" else "validation"


def _rank(value: float | None, maximize: bool) -> float:
    if value is None:
        return -math.inf if maximize else math.inf
    return value


FRACTIONS = (
    ("1/8", "median_best_at_eighth"),
    ("1/4", "median_best_at_quarter"),
    ("1/2", "median_best_at_half"),
    ("1", "median_best"),
)


def _anytime_target(name: str, section: dict[str, Any]) -> dict[str, str]:
    """lrsearch's median best at least every other arm's at every budget fraction."""
    arms, maximize = section["summary"]["arms"], section["direction"] == "maximize"
    ours = arms["lrsearch"]
    behind = []
    for label, key in FRACTIONS:
        mine = _rank(ours.get(key), maximize)
        for arm, a in arms.items():
            theirs = _rank(a.get(key), maximize)
            if arm != "lrsearch" and (theirs > mine if maximize else theirs < mine):
                behind.append(f"{arm} at {label} ({_fmt(a.get(key))} vs {_fmt(ours.get(key))})")
    return {
        "kind": "anytime",
        "workload": name,
        "target": f"{name}: lrsearch's median best >= every other arm's at 1/8, 1/4, 1/2 and "
        "the whole budget",
        "status": _status(not behind),
        "measured": "behind " + "; ".join(behind) if behind else "never behind",
    }


RECIPES = ("fastai-valley", "torch-steep")


def _iqr(arm: dict[str, Any], key: str) -> float | None:
    """The interquartile range of an arm's best at one budget fraction (None: unknown or
    some seed had nothing yet)."""
    lo, hi = (arm.get("iqr_best_at") or {}).get(key, (None, None))
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return abs(hi - lo)


def _near_tpe_target(name: str, section: dict[str, Any]) -> dict[str, str] | None:
    """lrsearch never worse than wide TPE by more than the larger of the two arms' IQRs."""
    arms, maximize = section["summary"]["arms"], section["direction"] == "maximize"
    if "tpe-wide" not in arms:
        return None
    ours, tpe = arms["lrsearch"], arms["tpe-wide"]
    worse, unknown = [], []
    for label, key in FRACTIONS:
        mine, theirs = ours.get(key), tpe.get(key)
        if theirs is None:
            continue  # TPE had nothing yet: lrsearch cannot be worse
        if mine is None:
            worse.append(f"{label} (nothing yet vs {_fmt(theirs)})")
            continue
        gap = theirs - mine if maximize else mine - theirs
        spreads = [v for v in (_iqr(ours, key), _iqr(tpe, key)) if v is not None]
        if not spreads:
            unknown.append(label)
        elif gap > max(spreads):
            worse.append(f"{label} ({_fmt(mine)} vs {_fmt(theirs)}, IQR {max(spreads):.2f})")
    return {
        "target": f"{name}: lrsearch never worse than wide TPE by more than the arms' IQR",
        "status": _status(not worse) if not unknown or worse else "not measured",
        "measured": "worse at " + "; ".join(worse) if worse else "within the IQR at every fraction",
    }


def _across_workloads(rows: list[dict[str, str]], n: int) -> list[dict[str, str]]:
    """The issue's tallies: the anytime and trial-epochs targets on at least 3 of 4 workloads
    (3/4 of the workloads, rounded up, where there are more or fewer)."""
    need = math.ceil(0.75 * n)
    out = []
    for kind, what in (
        ("anytime", "anytime: lrsearch's median best >= every other arm's at every budget "
         "fraction"),
        ("to_target", "lrsearch reaches the target in <= 1/3 of TPE-wide's trial-epochs"),
    ):  # fmt: skip
        mine = [r for r in rows if r.get("kind") == kind]
        if not mine or n < 2:
            continue
        met = [r["workload"] for r in mine if r["status"] == "met"]
        out.append(
            {
                "target": f"{what}, on at least {need} of {n} workloads",
                "status": _status(len(met) >= need),
                "measured": f"met on {len(met)} of {n}" + (f" ({', '.join(met)})" if met else ""),
            }
        )
    return out


def _search_targets(name: str, section: dict[str, Any]) -> list[dict[str, str]]:
    """The search section's targets, each against the arms it names (left out where an arm
    did not run: ``--arms``)."""
    arms, maximize = section["summary"]["arms"], section["direction"] == "maximize"
    ours, rows = arms["lrsearch"], []
    if "tpe-wide" in arms:
        a = ours["median_trial_epochs_to_target"]
        b = arms["tpe-wide"]["median_trial_epochs_to_target"]
        ok = a is not None and (b is None or a <= b / 3)
        ratio = f" = {a / b:.2f}x" if a is not None and b is not None else ""
        rows.append(
            {
                "kind": "to_target",
                "workload": name,
                "target": f"{name}: lrsearch reaches the target in <= 1/3 of TPE-wide's "
                "trial-epochs",
                "status": _status(ok),
                "measured": f"{_fmt(a, '.1f', 'never')} vs {_fmt(b, '.1f', 'never')} "
                f"trial-epochs{ratio} (median over seeds)",
            }
        )
    best = _rank(ours["median_best"], maximize)
    others = {arm: _rank(arms[arm]["median_best"], maximize) for arm in RECIPES if arm in arms}
    if others:
        beats = all(best > v if maximize else best < v for v in others.values())
        rows.append(
            {
                "target": f"{name}: lrsearch beats the fastai and torch recipes on "
                + _scored(section),
                "status": _status(beats),
                "measured": f"{_fmt(ours['median_best'])} vs "
                + ", ".join(
                    f"{arm} {_fmt(arms[arm]['median_best'], none='diverged')}" for arm in others
                ),
            }
        )
    rows.append(_anytime_target(name, section))
    near = _near_tpe_target(name, section)
    return rows if near is None else [*rows, near]


OPTUNA_PRUNERS = ("median", "percentile", "successive-halving", "hyperband", "patient-median")


def _lost_ok(section: dict[str, Any], p: dict[str, Any]) -> bool:
    """At most 0.2 points lost (1% of the value for a loss metric), median over seeds."""
    if section["direction"] == "maximize":
        return p["median_points_lost"] <= 0.2
    return p["median_relative_lost"] <= 0.01


def _pruning_targets(sections: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    plane: dict[str, list[str]] = {}
    for name, section in sections.items():
        p = section["summary"]["plateau"]
        ok = p["median_saved_fraction"] >= 0.5 and _lost_ok(section, p)
        loss = (
            f"{p['median_points_lost']:.2f} {_points(section)} points"
            if section["direction"] == "maximize"
            else f"{p['median_relative_lost']:.2%} of the {_points(section)} value"
        )
        rows.append(
            {
                "target": f"{name}: plateau saves >= 50% trial-epochs and loses <= 0.2 points "
                "(1% for a loss)",
                "status": _status(ok),
                "measured": f"saves {p['median_saved_fraction']:.0%}, loses {loss} of the "
                "validation-chosen trial (median over seeds)",
            }
        )
        n = len(section["runs"]["plateau"])
        rows.append(
            {
                "target": f"{name}: no top-3 trial (without pruning) pruned in more than 1 of "
                f"{n} seeds",
                "status": _status(p["seeds_top3_pruned"] <= max(1, n // 5)),
                "measured": f"a top-3 trial was pruned in {p['seeds_top3_pruned']} of {n} seeds",
            }
        )
        for arm in OPTUNA_PRUNERS:
            o = section["summary"].get(arm)
            if o is None:
                continue
            as_good = (
                p["median_saved_fraction"] >= o["median_saved_fraction"]
                and p["median_points_lost"] <= o["median_points_lost"]
            )
            if not as_good:
                plane.setdefault(arm, []).append(name)
    if sections:
        arms = [a for a in OPTUNA_PRUNERS if any(a in s["summary"] for s in sections.values())]
        need = min(3, len(sections))
        failing = {a: ws for a, ws in plane.items() if len(sections) - len(ws) < need}
        measured = "; ".join(
            f"{a}: as good on {len(sections) - len(plane.get(a, []))} of {len(sections)}"
            for a in arms
        )
        rows.append(
            {
                "target": "plateau is at least as good as each Optuna pruner on the (saved, "
                f"lost) plane on >= {need} of {len(sections)} workloads",
                "status": _status(not failing),
                "measured": measured + " (as good: saves at least as much and loses no more)",
            }
        )
    return rows


GROWTH_TRIALS = 20_000  # the study size for the growth target
GROWTH_RATIO = 1.2


def _arm_runs(storage: dict[str, Any], arm: str) -> list[dict[str, Any]]:
    """A storage arm's runs, largest study of the most workers first (old reports: direct)."""
    runs = [r for r in storage.get("runs", []) if r.get("arm", "direct") == arm]
    return sorted(runs, key=lambda r: (r["workers"], r["trials"]), reverse=True)


def _storage_targets(storage: dict[str, Any]) -> list[dict[str, str]]:
    """The storage targets: latency at 8 workers, growth, proxy vs direct, the projection."""
    skipped = storage.get("skipped")
    rows: list[dict[str, str]] = []
    direct = [r for r in _arm_runs(storage, "direct") if r["workers"] == 8 and r["trials"] >= 5000]
    row = {"target": "storage p95 ask+tell < 50 ms at 5,000 trials with 8 workers"}
    if direct:
        p95 = direct[0]["p95_ms_last_tenth"]
        row |= {"status": _status(p95 < 50.0), "measured": f"{p95:.1f} ms (last tenth, direct)"}
    else:
        row |= {
            "status": "not measured",
            "measured": skipped or "this run had no 8-worker study of >= 5,000 trials",
        }
    rows.append(row)
    for arm in ("direct", "proxy"):
        target = (
            f"storage p95 at the last tenth within {GROWTH_RATIO}x of the first tenth, study of "
            f"{GROWTH_TRIALS:,} trials ({arm})"
        )
        runs = _arm_runs(storage, arm)
        run = runs[0] if runs else None
        if run is None or run.get("p95_ms_first_tenth") is None:
            why = skipped or (storage.get("proxy_skipped") if arm == "proxy" else None)
            rows.append(
                {"target": target, "status": "not measured", "measured": why or "no such run"}
            )
            continue
        first, last = run["p95_ms_first_tenth"], run["p95_ms_last_tenth"]
        ratio = last / first
        how = f"{run['workers']} workers, {run['trials']:,} trials"
        if run.get("filled"):
            how += f", {run['filled']:,} of them written in bulk"
        status = (
            _status(ratio <= GROWTH_RATIO) if run["trials"] >= GROWTH_TRIALS else "not measured"
        )
        rows.append(
            {
                "target": target,
                "status": status,
                "measured": f"{last:.1f} vs {first:.1f} ms = {ratio:.2f}x ({how})",
            }
        )
    eight = {
        arm: next((r for r in _arm_runs(storage, arm) if r["workers"] == 8), None)
        for arm in ("direct", "proxy")
    }
    row = {"target": "storage with 8 workers: p95 through the proxy no worse than direct"}
    d, p = eight["direct"], eight["proxy"]
    if d is not None and p is not None:
        row |= {
            "status": _status(p["p95_ms"] <= d["p95_ms"]),
            "measured": f"{p['p95_ms']:.1f} vs {d['p95_ms']:.1f} ms = {p['p95_ms'] / d['p95_ms']:.2f}x"
            f" (every timed trial of the {p['trials']:,}-trial studies)",
        }
    else:
        why = skipped or storage.get("proxy_skipped") or "this run had no 8-worker studies of both"
        row |= {"status": "not measured", "measured": why}
    rows.append(row)
    projection = storage.get("projection") or {}
    if projection:
        workers = max(p["workers"] for p in projection.values())
        parts = [
            f"{arm}: p95 {p['p95_ms']:.0f} ms, {p['trials_per_s']:.0f} trials/s (bound by "
            f"{p.get('bound', 'cores')}), {p['server_cores']:.1f} server cores busy"
            for arm, p in projection.items()
        ]
        rows.append(
            {
                "target": f"storage p95 < 50 ms with {workers} workers on a machine with a core "
                "per worker and enough for the server (projection)",
                "status": "not measured",
                "measured": "projected from CPU time per trial, not measured: " + "; ".join(parts),
            }
        )
    if "round_trips" in storage:
        rt = storage["round_trips"]
        rows.append(
            {
                "target": f"storage round trips per trial <= {rt['max_per_trial']}",
                "status": _status(rt["per_trial"] <= rt["max_per_trial"]),
                "measured": f"{rt['per_trial']} (heartbeat apart)",
            }
        )
    return rows


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, str]]:
    """Each target of the issue: ``{"target", "status": met|missed|not measured, "measured"}``."""
    rows: list[dict[str, str]] = []
    search = report.get("search", {})
    for name, section in search.items():
        rows += _search_targets(name, section)
    rows += _across_workloads(list(rows), len(search))
    rows += _pruning_targets(report.get("pruning", {}))
    if "overhead" in report:
        v = report["overhead"]["variants"]["optuna+mlflow"]
        bare = v["median_bare_seconds"]
        status = _status(v["median_ratio"] <= 1.03) if bare >= 3.0 else "not measured"
        rows.append(
            {
                "target": "overhead ratio <= 1.03 for a trial of >= 3 s",
                "status": status,
                "measured": f"{v['median_ratio']:.3f} on a {bare:.1f} s trial",
            }
        )
    storage = report.get("storage")
    if storage is not None:
        rows += _storage_targets(storage)
    return rows


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
        "`run_trials` on a SQLite study (PriorGuidedSampler, PlateauPruner), against the "
        "bare `lrsearch.training.train` call with the same schedule and seed, in "
        f"alternating order; median of {o['repeats']} pairs after one untimed warm-up pair.",
        "",
    ]
    head = [
        "variant",
        "trial wall s",
        "bare train s",
        "extra s",
        "ratio",
        "ratio 25-75%",
        "CPU-time ratio",
        "warm-up ratio",
        "pairs (left out)",
        "same final metric",
    ]
    rows = [
        [
            name,
            _fmt(v["median_seconds"], ".3f"),
            _fmt(v["median_bare_seconds"], ".3f"),
            _fmt(v["median_extra_s"], ".3f"),
            _fmt(v["median_ratio"], ".3f"),
            f"{v['q25_ratio']:.3f} - {v['q75_ratio']:.3f}",
            _fmt(v["median_cpu_ratio"], ".3f"),
            _fmt(v["warm_up_ratio"], ".3f"),
            f"{v['pairs']} ({v['left_out']})",
            "yes" if v["same_result"] else "no",
        ]
        for name, v in o["variants"].items()
    ]
    note = (
        "Medians over pairs; a pair whose trial the pruner stopped is left out. CPU time is "
        "this process's (not other processes' load, nor time spent waiting on disk). Rendering a "
        f"schedule PNG costs {o['schedule_png_s']:.3f} s: the study's parent run gets one for "
        "all trials at the end, trial runs get the schedule as JSON only."
    )
    return [*lines, *_table(head, rows), "", note]


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
            "(`lrsearch.harness.bench._storage.project`). A trial costs the workers' CPU time c "
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
