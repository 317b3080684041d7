"""Bring your own training, end to end: a user's module that no test imports, tuned by
`lrsearch run` with two supervised workers on PostgreSQL while one of them is SIGKILLed.

The module is written by the test into its own directory under ``tmp_path``, which only the
subprocesses get on their ``PYTHONPATH``. It uses the options a real project uses: a shuffling
``DataLoader`` seeded per epoch (a ``(epoch, seed)`` factory), AdamW with two parameter groups
(weight decay on weight matrices only; biases and LayerNorm at 0.1x the LR), ``accumulate=2``,
``grad_clip=1.0`` and ``precision="bf16"`` on the CPU. Its own code checks, at every optimizer
step, that those options are really in effect (a broken one raises, and the trial fails):

- the groups' LRs keep the 0.1 ratio and the no-decay group has weight decay 0;
- the global gradient norm is at most ``grad_clip`` (clipping happened before the step);
- exactly ``accumulate`` training forwards were made per optimizer step;
- the training forward runs under bf16 autocast.

**Which LR MLflow logs.** A trial's per-step ``lr`` metric is the schedule's LR, i.e. the base
group's: the first parameter group, built at ``lr`` (ratio 1.0). The second group runs at 0.1x
that value throughout and is not logged separately.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
import uuid

import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch.tracking import local_tracking_uri
from tests.steps_record import check_steps, steps_csv
from tests.test_distributed import ROOT, _env, _load, _trial_runs, pg_url, start_run

__all__ = ["pg_url"]  # the fixture, imported from test_distributed rather than copied

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not torch.amp.is_autocast_available("cpu"),
        reason="this torch build has no CPU autocast, so precision='bf16' cannot run on the CPU",
    ),
]

N_TRAIN = 192  # samples; batch 16, drop_last: 12 micro-batches = 6 optimizer steps an epoch
BATCH = 16
ACCUMULATE = 2
EPOCHS = 3
N_TRIALS = 4
STEPS = EPOCHS * (N_TRAIN // BATCH) // ACCUMULATE  # 18 optimizer steps per trial

USER_MODULE = f'''
"""A user's task: nothing of lrsearch's test suite imports this module."""

import math

import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate

from lrsearch import Workload
from lrsearch.workloads import ACCURACY

ACCUMULATE = {ACCUMULATE}
GRAD_CLIP = 1.0
SLOW = 0.1  # the second group's LR, as a multiple of the first's


class Net(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, 64), nn.LayerNorm(64), nn.ReLU())
        self.head = nn.Linear(64, 4)
        self.train_forwards = 0

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            if not (
                torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16
            ):
                raise RuntimeError("mytask: training forward not under bf16 autocast")
            self.train_forwards += 1
        return self.head(self.body(x))


class CheckedAdamW(torch.optim.AdamW):
    """AdamW that checks, before every step, what lrsearch promised to do around it."""

    def __init__(self, groups, model, **kwargs):
        super().__init__(groups, **kwargs)
        self.model = model
        self.steps = 0

    def step(self, closure=None):
        base, slow = (float(g["lr"]) for g in self.param_groups)
        if not math.isclose(slow, SLOW * base, rel_tol=1e-6):
            raise RuntimeError(f"mytask: LR ratio broken: {{slow}} vs {{base}}")
        if self.param_groups[1]["weight_decay"] != 0.0:
            raise RuntimeError("mytask: the no-decay group has weight decay")
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        if norm > GRAD_CLIP * (1 + 1e-4):
            raise RuntimeError(f"mytask: gradient norm {{norm}} > grad_clip {{GRAD_CLIP}}")
        self.steps += 1
        if self.model.train_forwards != ACCUMULATE * self.steps:
            raise RuntimeError(
                f"mytask: {{self.model.train_forwards}} forwards for {{self.steps}} steps"
            )
        return super().step(closure)


def adamw(model, lr, momentum=None, weight_decay=0.0):
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]  # biases, LayerNorm
    groups = [
        {{"params": matrices, "weight_decay": weight_decay}},  # the base group: ratio 1.0
        {{"params": rest, "weight_decay": 0.0, "lr": SLOW * lr}},
    ]
    beta1 = 0.9 if momentum is None else momentum
    return CheckedAdamW(groups, model, lr=lr, betas=(beta1, 0.99))


def make(n_train: int = {N_TRAIN}, dim: int = 16, seed: int = 0, pause: float = 0.0) -> Workload:
    # pause: seconds each training batch waits, like a loader reading from disk
    g = torch.Generator().manual_seed(seed)
    n = n_train * 3 // 2
    centres = torch.randn(4, dim, generator=g) * 1.5
    y = torch.randint(0, 4, (n,), generator=g)
    x = centres[y] + torch.randn(n, dim, generator=g)
    v = n_train + (n - n_train) // 2

    def train_loader(epoch: int, seed: int) -> DataLoader:
        rng = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # one stream per epoch
        return DataLoader(
            TensorDataset(x[:n_train], y[:n_train]),
            batch_size={BATCH},
            shuffle=True,
            drop_last=True,
            generator=rng,
            collate_fn=lambda batch: time.sleep(pause) or default_collate(batch),
        )

    return Workload(
        name="mytask",
        build_model=lambda: Net(dim),
        train_data=train_loader,
        val_data=DataLoader(TensorDataset(x[n_train:v], y[n_train:v]), batch_size=256),
        test_data=DataLoader(TensorDataset(x[v:], y[v:]), batch_size=256),
        loss_fn=nn.functional.cross_entropy,
        metric=ACCURACY,
        optimizer=adamw,
        batch_size={BATCH},
        epochs={EPOCHS},
        accumulate=ACCUMULATE,
        grad_clip=GRAD_CLIP,
        precision="bf16",
    )
'''

STUDY = """
[study]
name = "{name}"
workload = "mytask:make"
workload_options = {{ pause = 0.04 }}
n_trials = {n_trials}
epochs = {epochs}
[range_test]
repeats = 1
num_iter = 20
[prior]
n_startup_trials = 3
[pruner]
name = "none"
[tracking]
update_ratio_every = 0
"""


# 40 s: a SIGKILLed worker is covered in CI by test_distributed and test_proxy; this one (a
# bring-your-own loader) joins `make test-load` to keep CI within its 15 minutes.
@pytest.mark.load
def test_byo_loader_workload_survives_a_killed_worker(tmp_path, pg_url) -> None:
    usermod = tmp_path / f"usermod_{uuid.uuid4().hex[:8]}"
    usermod.mkdir()
    (usermod / "mytask.py").write_text(textwrap.dedent(USER_MODULE))
    name = "byo"
    f = tmp_path / f"{name}.toml"
    f.write_text(STUDY.format(name=name, n_trials=N_TRIALS, epochs=EPOCHS))
    # the user's directory first, then the repository (for `tests`, like the other tests);
    # `run` trusts its own study file's workload and passes that trust on to its workers
    env = _env(
        tmp_path, PYTHONPATH=os.pathsep.join([str(usermod), str(ROOT)]), LRSEARCH_GRACE_S="600"
    )
    run = start_run(f, pg_url, env, capture=True)
    try:
        victim = None
        deadline = time.monotonic() + 90
        while victim is None and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.1)
            try:
                study = _load(name, pg_url)
            except KeyError:
                continue
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                # one of the first two trials (so its retry is within the budget), at least one
                # epoch reported and another still to go: the kill lands mid-trial
                if (
                    t.number < 2
                    and t.last_step is not None
                    and t.last_step < EPOCHS - 1
                    and "worker" in t.user_attrs
                ):
                    victim = t
                    break
        if victim is None:
            run.kill()
            stdout, stderr = run.communicate()
            raise AssertionError(
                f"no worker was seen training a trial:\n{stdout}\n{stderr[-3000:]}"
            )
        pid = int(victim.user_attrs["worker"].rpartition(":")[2])
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, stderr[-3000:]
    assert f"(pid {pid}) exited with -9" in stdout

    study = _load(name, pg_url)
    trials = study.trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == N_TRIALS
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["fail_reason"] == "worker process died"
    # the only failure is the killed trial: the user's own checks (LR ratio, decay groups,
    # clipping, accumulation, bf16 autocast) never raised
    # (a surplus trial, a worker's ask that backed off at the budget, is no failure: lrsearch's
    # reports leave it out too)
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    assert [t.number for t in failed] == [victim.number], [(t.number, t.user_attrs) for t in failed]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params

    client = MlflowClient(local_tracking_uri(tmp_path)[0])
    by_id = {r.info.run_id: r for r in _trial_runs(client, name)}
    assert by_id[dead.user_attrs["mlflow_run_id"]].info.status == "FAILED"
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        run_id = t.user_attrs["mlflow_run_id"]
        assert by_id[run_id].info.status == "FINISHED"
        # the base group's LR (first group, ratio 1.0), one value per optimizer step
        check_steps(client, run_id, STEPS)
        assert all(float(row["lr"]) > 0 for row in steps_csv(client, run_id))
