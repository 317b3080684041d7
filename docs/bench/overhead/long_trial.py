"""The overhead section on a longer mnist1d-cnn trial (the target is for trials of >= 3 s; on a
quiet machine the default 25 epochs take ~1.4 s). Run from the repository root:

    PYTHONPATH=. python docs/bench/overhead/long_trial.py EPOCHS OUT_DIR

``LRSEARCH_MLFLOW_WRITER=0`` in the environment measures MLflow writing in process instead.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from lrsearch.harness.bench import BenchConfig, run_bench, write_report

epochs, out = int(sys.argv[1]), Path(sys.argv[2])
config = dataclasses.replace(
    BenchConfig(),
    sections=("overhead",),
    overhead_epochs=epochs,
    overhead_fast_workload=None,
    overhead_repeats=8,
)
write_report(run_bench(config), out, command=" ".join(["python", *sys.argv]))
