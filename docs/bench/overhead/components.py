"""Per-component cost of one lrsearch trial (main thread, cProfile) + wall/CPU vs the bare loop.
usage: components.py WORKLOAD EPOCHS STORAGE(journal|sqlite) REPEATS"""
import cProfile, pstats, sys, time, tempfile, json, os, statistics
from pathlib import Path
import torch
torch.set_num_threads(1)
from lrsearch.harness.bench import _overhead as o
from lrsearch.config import parse_study_config
from lrsearch.recording import open_recorder
from lrsearch.study import open_study
from lrsearch.tracking import MlflowTracker
workload, epochs, storage, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
workdir = Path(tempfile.mkdtemp())
cfg = parse_study_config({"study": {"name": "c", "workload": workload, "epochs": epochs, "n_trials": 10000}, "range_test": {"repeats": 1}})
url = f"sqlite:///{workdir/'optuna.db'}" if storage == "sqlite" else f"journal:{workdir/'optuna.journal'}"
handle = open_study(cfg, url, tracking_uri=str(workdir))
recorder = open_recorder(handle, MlflowTracker(str(workdir)), log_parent=True)
PATTERNS = {
    "per-epoch storage (report + should_prune)": ["optuna/trial/_trial.py:412(report)", "optuna/trial/_trial.py:513(should_prune)"],
    "per-step callbacks (objective + recorder)": ["objective.py:*(step_done)"],
    "MLflow trial start (main thread)": ["recording.py:*(observe)"],
    "MLflow trial end (main thread)": ["recorder.py:*(end)"],
    "sample + claim + trial attrs": ["objective.py:*(sample)", "objective.py:*(claim)", "_trial.py:545(set_user_attr)"],
    "checkpoints": ["checkpoints.py:*(save)", "objective.py:*(_close_checkpoints)"],
}
import fnmatch
rows = []
for r in range(repeats + 1):
    up = o._upcoming(handle)
    bare_first = bool(r % 2)
    if bare_first:
        bare, metric = o._bare(handle, up, epochs)
    prof = cProfile.Profile(); prof.enable()
    ours, trial = o._one_trial(handle, recorder, up.number)
    prof.disable()
    if not bare_first:
        bare, metric = o._bare(handle, trial, len(trial.intermediate_values) or epochs)
    st = pstats.Stats(prof).stats
    comp = {}
    for name, pats in PATTERNS.items():
        tot = 0.0
        for (fn, line, func), (cc, nc, tt, ct, callers) in st.items():
            key = f"{fn}:{line}({func})"
            if any(fnmatch.fnmatch(key, "*" + p) for p in pats):
                tot += ct
        comp[name] = tot
    if r:
        rows.append(dict(ratio=ours.wall / bare.wall, cpu_ratio=ours.cpu / bare.cpu, wall=ours.wall, bare=bare.wall, cpu=ours.cpu, bare_cpu=bare.cpu, same=metric == trial.value, state=trial.state.name, **comp))
rows = [r for r in rows if r["same"]]  # the pruner stopped the others: not the same run
out = {k: statistics.median([row[k] for row in rows]) for k in rows[0] if k not in ("same", "state")}
out["same"] = [row["same"] for row in rows]
out["load"] = os.getloadavg()
out["steps"] = handle.plan.total_steps
print(json.dumps(out, indent=1))
