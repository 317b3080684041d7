"""Per-component cost of one lrsearch trial (cProfile on the main thread), and its wall and CPU
against the bare loop, the pairs compared as the bench's overhead section compares them (a
pruned trial on the epochs it trained). Run from the repository root:

    PYTHONPATH=. python docs/bench/overhead/components.py WORKLOAD EPOCHS STORAGE REPEATS

STORAGE is ``journal`` (``lrsearch run``'s default) or ``sqlite``; REPEATS timed trials follow
one untimed warm-up trial, with MLflow recording through the writer process. Prints the medians
over the pairs proven the same run (seconds per trial per component, ratios) as JSON. The
ratios include cProfile's own cost on the trial's side: compare components, and take the
ratios from ``lrsearch bench --sections overhead``.
"""

from __future__ import annotations

import cProfile
import fnmatch
import json
import os
import pstats
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from lrsearch.config import parse_study_config
from lrsearch.harness.bench import _overhead as o
from lrsearch.recording import open_recorder
from lrsearch.study import open_study
from lrsearch.tracking import MlflowTracker

# component -> cProfile entries ("file:line(function)") whose cumulative seconds it sums
PATTERNS = {
    "per-epoch storage (report + should_prune)": [
        "optuna/trial/_trial.py:*(report)",
        "optuna/trial/_trial.py:*(should_prune)",
    ],
    "per-step callbacks (objective + recorder)": ["objective.py:*(step_done)"],
    "MLflow trial start (main thread)": ["recording.py:*(observe)"],
    "MLflow trial end (main thread)": ["recorder.py:*(end)"],
    "sample + claim + trial attrs": [
        "objective.py:*(sample)",
        "objective.py:*(claim)",
        "optuna/trial/_trial.py:*(set_user_attr)",
    ],
    "checkpoints": ["checkpoints.py:*(save)", "objective.py:*(_close_checkpoints)"],
}


def components(profile: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of each component of :data:`PATTERNS` in ``profile``."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    out = {}
    for name, patterns in PATTERNS.items():
        out[name] = sum(
            cumulative
            for (path, line, func), (_, _, _, cumulative, _) in stats.items()
            if any(fnmatch.fnmatch(f"{path}:{line}({func})", "*" + p) for p in patterns)
        )
    return out


def one_pair(handle, recorder, *, bare_first: bool) -> dict:
    """One profiled trial and its bare twin, as ``_overhead._pair`` times them."""
    upcoming = o._upcoming(handle)
    if bare_first:
        bare = o._bare(handle, upcoming)
    profile = cProfile.Profile()
    profile.enable()
    ours, writer_cpu, trial = o._one_trial(handle, recorder, upcoming.number)
    profile.disable()
    if not bare_first:
        pruned = trial.state.name == "PRUNED" and trial.intermediate_values
        bare = o._bare(handle, trial, stop_after=max(trial.intermediate_values) if pruned else None)
    compared = o._compare(trial, bare, handle.plan.epochs)
    if isinstance(compared, str):
        return {"same": False, "why": compared}
    bare_wall, bare_cpu, epochs = compared
    return {
        "same": True,
        "state": trial.state.name,
        "epochs": epochs,
        "ratio": ours.wall / bare_wall,
        "cpu_ratio": ours.cpu / bare_cpu,
        "total_cpu_ratio": (ours.cpu + writer_cpu) / bare_cpu,
        "wall": ours.wall,
        "bare": bare_wall,
        "cpu": ours.cpu,
        "bare_cpu": bare_cpu,
        "writer_cpu": writer_cpu,
        **components(profile),
    }


def main(workload: str, epochs: int, storage: str, repeats: int) -> dict:
    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp())
    cfg = parse_study_config(
        {
            "study": {"name": "c", "workload": workload, "epochs": epochs, "n_trials": 10_000},
            "range_test": {"repeats": 1},
        }
    )
    if storage == "sqlite":
        url = f"sqlite:///{workdir / 'optuna.db'}"
    else:
        url = f"journal:{workdir / 'optuna.journal'}"
    handle = open_study(cfg, url, tracking_uri=str(workdir))
    recorder = open_recorder(handle, MlflowTracker(str(workdir)), log_parent=True)
    pairs = [one_pair(handle, recorder, bare_first=bool(r % 2)) for r in range(repeats + 1)][1:]
    recorder.tracker.drain()
    same = [p for p in pairs if p["same"]]
    numbers = [k for k in (same[0] if same else {}) if k not in ("same", "state")]
    out: dict = {k: statistics.median(p[k] for p in same) for k in numbers}
    out["pairs"] = len(same)
    out["states"] = [p.get("state") for p in same]
    out["left_out"] = [p["why"] for p in pairs if not p["same"]]
    out["load"] = os.getloadavg()
    out["steps"] = handle.plan.total_steps
    return out


if __name__ == "__main__":
    workload, epochs, storage, repeats = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
    )
    print(json.dumps(main(workload, epochs, storage, repeats), indent=1))
