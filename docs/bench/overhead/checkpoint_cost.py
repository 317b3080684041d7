"""What a trial checkpoint costs: seconds per save against the epoch's seconds, and its size.

usage: PYTHONPATH=. python docs/bench/overhead/checkpoint_cost.py WORKLOAD [EPOCHS]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from lrsearch.checkpoints import TrialCheckpoints
from lrsearch.schedules import OneCycle
from lrsearch.training import train
from lrsearch.workloads import get_workload

torch.set_num_threads(1)
os.environ["LRSEARCH_CHECKPOINT_SHARE"] = "1"  # every epoch: measure each save
name = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 6
workload = get_workload(name)
steps = epochs * workload.steps_per_epoch(workload.batch_size)
store = TrialCheckpoints(Path(tempfile.mkdtemp()), "cost", 0, {})
started = time.perf_counter()
train(workload, OneCycle(0.1, total_steps=steps), epochs=epochs, on_checkpoint=store.save)
total = time.perf_counter() - started
epoch_s = (total - store.seconds) / epochs
stats = store.stats()
share = stats["checkpoint_s"] / epoch_s
print(
    f"{name}: {stats['checkpoints']} checkpoints, {stats['checkpoint_s'] * 1000:.1f} ms each, "
    f"{stats['checkpoint_bytes'] / 1024:.0f} KiB; epoch {epoch_s * 1000:.0f} ms "
    f"(a checkpoint every epoch would cost {100 * share:.1f}%)"
)
store.remove()
