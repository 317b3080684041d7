"""LR-free optimizers against lrsearch: search the LR, or skip it?

Each LR-free arm is one trial per seed with its published defaults and recommended warm-up,
as long as one lrsearch trial, scored on test like every arm: Schedule-Free AdamW
(``schedulefree``: lr 0.0025, weight decay 0, warm-up 5% of the steps, constant after; its
``train()``/``eval()`` switch and BatchNorm refresh by :mod:`lrsearch.lrfree`) and Prodigy
(``prodigyopt``: lr 1, d_coef 1, ``safeguard_warmup`` and ``use_bias_correction`` on, weight
decay 0.01, warm-up 5% then cosine annealing). Its curve is that of a one-shot recipe: one
point, at the trial-epochs it trained.

lrsearch's numbers come from an earlier report's search section where it ran the same
workload (``against``: the same seeds, epochs and test scoring, reused as they are, not
rerun), else the section runs the lrsearch arm itself. The section is then summarised by the
search section's own code (:func:`~lrsearch.harness.bench._stats.summarize_search`), so the
budget fractions 1/8, 1/4, 1/2, 1 mean what they mean there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from lrsearch.harness.bench._config import BenchConfig
from lrsearch.harness.bench._search import (
    WIDE,
    RangeTests,
    Task,
    _guided,
    _lrsearch_arm,
    _search,
    one_trial_record,
    section_head,
)
from lrsearch.harness.bench._stats import FRACTION_OF_BUDGET, summarize_search
from lrsearch.policies import LRFREE_DEFAULTS, build_schedule

__all__ = [
    "LRFREE_ARMS",
    "SEARCHED_ARMS",
    "lrfree_arm",
    "lrfree_markdown",
    "run_lrfree",
    "searched_arm",
]

# arm -> (optimizer, policy, weight decay): the published defaults
_SETTINGS: dict[str, tuple[str, str, float]] = {
    "schedulefree-default": ("schedulefree_adamw", "schedulefree", 0.0),
    "prodigy-default": ("prodigy", "prodigy", 0.01),
}
LRFREE_ARMS = tuple(_SETTINGS)
# arm -> optimizer: a study of it, as `lrsearch run` with [study.training] optimizer = ...
# searches it (its lr or d_coef, warm-up and weight decay; defaults first), same budget
SEARCHED_ARMS = {"schedulefree-search": "schedulefree_adamw", "prodigy-search": "prodigy"}


def lrfree_arm(task: Task, seed: int, arm: str) -> dict[str, Any]:
    """One trial of LR-free optimizer ``arm`` at its defaults: a run as the search keeps it."""
    from lrsearch.training import train

    optimizer, policy, weight_decay = _SETTINGS[arm]
    total = task.epochs * task.steps_per_epoch
    schedule = build_schedule(
        policy,
        dict(LRFREE_DEFAULTS[policy]),
        total_steps=total,
        steps_per_epoch=task.steps_per_epoch,
    )
    started = time.perf_counter()
    result = train(
        task.workload.with_options(optimizer=optimizer),
        schedule,
        epochs=task.epochs,
        weight_decay=weight_decay,
        seed=seed * 1000,
    )
    return one_trial_record(task, result, 0.0, 0.0, time.perf_counter() - started)


def searched_arm(task: Task, seed: int, arm: str, budget: float, max_trials: int) -> dict[str, Any]:
    """A study of LR-free optimizer ``arm``: lrsearch's sampler (no max_lr, so TPE after its
    startup, the published defaults first) and plateau pruner; no range test is paid."""
    from lrsearch.config import parse_study_config

    optimizer = SEARCHED_ARMS[arm]
    study = {"name": "bench", "workload": task.name, "epochs": task.epochs, "seed": seed * 1000}
    config = parse_study_config(
        {
            "study": {**study, "training": {"optimizer": optimizer}},
            "tracking": {"enabled": False, "update_ratio_every": 0},
        }
    )
    own = Task(task.name, task.workload.with_options(optimizer=optimizer), task.epochs)
    handle = _guided(own, f"{arm}-{seed}", config, WIDE, seed)
    return _search(handle, own, budget=budget, max_trials=max_trials)


def run_lrfree(
    config: BenchConfig,
    ranges: RangeTests,
    advance: Callable[[], None],
    against: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every LR-free arm on every workload and seed, beside lrsearch; summarised.

    Args:
        against: an earlier report whose search section has lrsearch's runs: a workload it
            has is run at its epochs and budget, with its seeds, and its lrsearch runs reused.
    """
    searched = (against or {}).get("search", {})
    out: dict[str, Any] = {}
    for name in config.workloads:
        earlier = searched.get(name)
        reuse = earlier is not None and "lrsearch" in earlier["runs"]
        epochs = int(earlier["epochs"]) if reuse else config.epochs
        task = Task.load(name, epochs)
        budget = float(earlier["budget"]) if reuse else float(config.budget)
        seeds = len(earlier["runs"]["lrsearch"]) if reuse else config.seeds
        runs: dict[str, list[dict[str, Any]]] = {
            "lrsearch": list(earlier["runs"]["lrsearch"]) if reuse else []
        }
        for seed in range(seeds):
            if not reuse:
                max_trials = config.trials * config.max_trials_factor
                run = _lrsearch_arm(task, seed, ranges, budget, max_trials)
                runs["lrsearch"].append({"seed": seed, **run})
            for arm in LRFREE_ARMS:
                runs.setdefault(arm, []).append({"seed": seed, **lrfree_arm(task, seed, arm)})
                advance()
            for arm in SEARCHED_ARMS if config.lrfree_search else ():
                max_trials = int(budget // epochs) * config.max_trials_factor
                run = searched_arm(task, seed, arm, budget, max_trials)
                runs.setdefault(arm, []).append({"seed": seed, **run})
        section = {**section_head(task), "budget": budget, "runs": runs}
        section["lrsearch_from"] = "reused" if reuse else "run"
        section["summary"] = summarize_search(section, tolerance=config.target_tolerance)
        section["beats_lrsearch"] = _beats(section)
        out[name] = section
    return out


def _beats(section: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per LR-free arm: the budget fractions where its median beats lrsearch's median."""
    maximize = section["direction"] == "maximize"
    arms = section["summary"]["arms"]
    ours = arms["lrsearch"]
    out: dict[str, list[str]] = {}
    for arm in [a for a in arms if a != "lrsearch"]:
        wins = []
        for key, fraction in FRACTION_OF_BUDGET.items():
            theirs, mine = arms[arm][key], ours[key]
            if theirs is not None and (
                mine is None or (theirs > mine if maximize else theirs < mine)
            ):
                wins.append(_fraction(fraction))
        out[arm] = wins
    return out


def _fraction(f: float) -> str:
    return "1" if f == 1 else f"1/{round(1 / f)}"


_FROM = {"reused": "lrsearch's runs reused from the earlier report", "run": "lrsearch ran here"}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def lrfree_markdown(report: Mapping[str, Any]) -> list[str]:
    """The section's part of ``report.md``: one table per workload, wins named."""
    lines = [
        "## LR-free optimizers",
        "",
        "One trial per seed of each LR-free optimizer at its published defaults (as long as "
        "one lrsearch trial, scored on test), against lrsearch at 1/8, 1/4, 1/2 and the whole "
        "of its budget (medians over seeds; `-`: nothing finished yet; wall s: the arm's "
        "median time within the budget). `*-search` arms (with `--lrfree-search`): a study "
        "of the LR-free optimizer, its lr or d_coef, warm-up and weight decay searched by "
        "lrsearch's sampler and pruner at the same budget, its defaults first.",
        "",
    ]
    for name, section in report.get("lrfree", {}).items():
        arms = section["summary"]["arms"]
        rows = [
            [arm, *(_cell(a[key]) for key in FRACTION_OF_BUDGET), f"{a['median_wall_s']:.1f}"]
            for arm, a in arms.items()
        ]
        head = ["arm", "at 1/8", "at 1/4", "at 1/2", "whole budget", "wall s"]
        wins = "; ".join(
            f"{arm} beats lrsearch at {', '.join(w) or 'no fraction'}"
            for arm, w in section["beats_lrsearch"].items()
        )
        lines += [
            f"### {name}",
            "",
            f"{section['scored_on'].capitalize()} {section['metric']} ({section['direction']}); "
            f"budget {section['budget']:g} trial-epochs of {section['epochs']}-epoch trials, "
            f"seeds: {len(section['runs']['lrsearch'])}; "
            f"{_FROM[section['lrsearch_from']]}. {wins}.",
            "",
            *[f"| {' | '.join(r)} |" for r in (head, ["---"] * len(head), *rows)],
            "",
        ]
    return lines
