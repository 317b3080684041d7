"""The benchmark's targets: which are met or missed, measured from the report's sections."""

from __future__ import annotations

import math
from typing import Any

from lrsearch.harness.bench._config import OVERHEAD_TRIAL_S

__all__ = ["evaluate_targets", "overhead_target"]


def _fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None or not math.isfinite(value) else format(value, spec)


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


OVERHEAD_MAX = 1.03


def overhead_target(overhead: dict[str, Any]) -> dict[str, str]:
    """Issue 21's overhead target, on the MLflow variant's pairs of trials of >= 3 s (their
    bare runs; where a report has no such subset, all its pairs): met iff there are some, and
    their median wall ratio and median CPU ratio with the MLflow writer process's CPU are both
    <= 1.03 (moving CPU to another process does not remove it)."""
    target = (
        f"overhead ratio <= {OVERHEAD_MAX} (wall, and CPU with the MLflow writer) for a trial "
        f"of >= {OVERHEAD_TRIAL_S:.0f} s"
    )
    every = overhead["variants"]["optuna+mlflow"]
    v = every.get("long", every)
    if not every.get("pairs"):
        return {"target": target, "status": "not measured", "measured": "no pair compared"}
    if not v["pairs"]:
        longest = every["median_bare_seconds"]
        return {
            "target": target,
            "status": "missed",
            "measured": f"no pair of a >= {OVERHEAD_TRIAL_S:.0f} s trial "
            f"(median {longest:.1f} s); over: trial {longest:.1f} s < {OVERHEAD_TRIAL_S:.0f} s",
        }
    bare, wall, cpu = v["median_bare_seconds"], v["median_ratio"], v["median_cpu_ratio"]
    total = v.get("median_total_cpu_ratio", cpu)
    over = [
        f"{name} {value:.3f} > {OVERHEAD_MAX}"
        for name, value in (("wall", wall), ("CPU with the writer", total))
        if value > OVERHEAD_MAX
    ]
    if bare < OVERHEAD_TRIAL_S:
        over.append(f"trial {bare:.1f} s < {OVERHEAD_TRIAL_S:.0f} s")
    which = f"{v['pairs']} of {every['pairs']} pairs" if v is not every else f"{v['pairs']} pairs"
    ci = v.get("ci90_ratio")
    interval = f" (90% interval of the median {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    measured = (
        f"wall {wall:.3f}{interval}, CPU {cpu:.3f} (training process), {total:.3f} with the "
        f"MLflow writer process, on a {bare:.1f} s trial (median of {which})"
    )
    if over:
        measured += "; over: " + ", ".join(over)
    return {"target": target, "status": _status(not over), "measured": measured}


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, str]]:
    """Each target of the issue: ``{"target", "status": met|missed|not measured, "measured"}``."""
    rows: list[dict[str, str]] = []
    search = report.get("search", {})
    for name, section in search.items():
        rows += _search_targets(name, section)
    rows += _across_workloads(list(rows), len(search))
    rows += _pruning_targets(report.get("pruning", {}))
    if "overhead" in report:
        rows.append(overhead_target(report["overhead"]))
    storage = report.get("storage")
    if storage is not None:
        rows += _storage_targets(storage)
    return rows
