"""Trial checkpoints: a run stopped at an epoch boundary and resumed from its file ends bit for
bit where the uninterrupted run does (CPU); files are whole, matched, and removed."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import numpy as np
import pytest
import torch

from lrsearch.checkpoints import TrialCheckpoints, checkpoint_root, remove_stale
from lrsearch.config import parse_study_config
from lrsearch.errors import ConfigError
from lrsearch.objective import Objective
from lrsearch.prior import LRPrior
from lrsearch.schedules import OneCycle
from lrsearch.study import StudyHandle
from lrsearch.training import Snapshot, train
from tests.tiny_workloads import blobs

EPOCHS = 6


@pytest.fixture(autouse=True)
def _every_epoch(monkeypatch):
    """A checkpoint at every epoch boundary (by default they keep to 1% of training time)."""
    monkeypatch.setenv("LRSEARCH_CHECKPOINT_SHARE", "1")


class Preempted(Exception):
    """Stands for the worker being killed right after a checkpoint."""


def _run(workload, *, on_checkpoint=None, resume=None):
    steps = EPOCHS * workload.steps_per_epoch(workload.batch_size)
    schedule = OneCycle(max_lr=0.2, total_steps=steps)
    return train(
        workload,
        schedule,
        epochs=EPOCHS,
        seed=3,
        sync_every=4,
        on_checkpoint=on_checkpoint,
        resume=resume,
    )


def _noisy_blobs():
    """``blobs`` with a draw from Python's and NumPy's generators in every batch."""
    base = blobs(n=192, epochs=EPOCHS)
    loss_fn = base.loss_fn

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        jitter = random.random() * 1e-3 + float(np.random.rand()) * 1e-3
        return loss_fn(out, y) * (1.0 + jitter)

    return dataclasses.replace(base, loss_fn=loss)


@pytest.mark.parametrize("kill_after", [1, 4])
def test_a_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_one(
    tmp_path, kill_after: int
) -> None:
    workload = _noisy_blobs()
    random.seed(11)
    np.random.seed(11)
    whole = _run(workload)

    store = TrialCheckpoints(tmp_path, "s/1", 0, {"max_lr": 0.2, "seed": 3})

    def save_then_die(take: Callable[[], Snapshot]) -> None:
        snapshot = take()
        store.save(lambda: snapshot)
        if snapshot.epoch == kill_after:
            store.wait()  # killed once that checkpoint is on disk (it is written in the background)
            raise Preempted

    random.seed(11)
    np.random.seed(11)
    with pytest.raises(Preempted):
        _run(workload, on_checkpoint=save_then_die)
    random.seed(999)  # a fresh worker: its generators are anywhere
    np.random.seed(999)
    torch.manual_seed(999)

    fresh = TrialCheckpoints(tmp_path, "s/1", 0, {"max_lr": 0.2, "seed": 3})
    resume = fresh.load()
    assert resume is not None and resume.epoch == kill_after
    assert [p.name for p in fresh.directory.iterdir()] == [f"epoch-{kill_after}.pt"]
    resumed = _run(workload, resume=resume)
    assert resumed.val_metric == whole.val_metric
    assert resumed.val_loss == whole.val_loss
    assert resumed.history == whole.history
    assert resumed.steps_trained == whole.steps - resume.step


def test_a_checkpoint_of_other_params_is_ignored_and_a_torn_file_skipped(tmp_path) -> None:
    workload = blobs(n=128, epochs=EPOCHS)
    store = TrialCheckpoints(tmp_path, "s", 2, {"max_lr": 0.2, "seed": 3})
    _run(workload, on_checkpoint=store.save)
    assert store.stats()["checkpoints"] == EPOCHS - 1  # none after the last epoch
    assert store.stats()["checkpoint_bytes"] > 0
    assert TrialCheckpoints(tmp_path, "s", 2, {"max_lr": 0.3, "seed": 3}).load() is None
    assert TrialCheckpoints(tmp_path, "s", 3, {"max_lr": 0.2, "seed": 3}).load() is None
    (store.directory / f"epoch-{EPOCHS}.pt").write_bytes(b"cut short")  # newest, but torn
    assert store.load().epoch == EPOCHS - 1
    store.remove()
    assert not store.directory.exists() and store.load() is None


def test_where_checkpoints_go(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LRSEARCH_CHECKPOINT_DIR", raising=False)
    assert checkpoint_root(f"journal:{tmp_path}/optuna.journal") == tmp_path / "checkpoints"
    assert checkpoint_root("postgresql://db/x") is None  # no directory every host shares
    monkeypatch.setenv("LRSEARCH_CHECKPOINT_DIR", str(tmp_path / "shared"))
    assert checkpoint_root("postgresql://db/x") == tmp_path / "shared"
    monkeypatch.setenv("LRSEARCH_CHECKPOINT_DIR", "off")
    assert checkpoint_root(f"journal:{tmp_path}/optuna.journal") is None


def test_checkpoints_keep_to_their_share_of_training_time(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LRSEARCH_CHECKPOINT_SHARE", "0.0001")  # epochs here take milliseconds
    store = TrialCheckpoints(tmp_path, "s", 0, {})
    taken: list[int] = []

    def save(take: Callable[[], Snapshot]) -> None:
        store.save(lambda: taken.append(1) or take())

    _run(blobs(n=128, epochs=EPOCHS), on_checkpoint=save)
    assert store.stats()["checkpoints"] == 1  # the first epoch's, then none was worth it
    assert len(taken) == 1  # and no snapshot was taken for the epochs without one
    monkeypatch.setenv("LRSEARCH_CHECKPOINT_SHARE", "2")
    with pytest.raises(ConfigError, match="LRSEARCH_CHECKPOINT_SHARE must be"):
        TrialCheckpoints(tmp_path, "s", 0, {})


def test_a_known_cost_makes_the_first_checkpoint_wait_for_its_share(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LRSEARCH_CHECKPOINT_SHARE", "0.01")
    store = TrialCheckpoints(tmp_path, "s", 0, {}, expected_s=60.0)  # a worker's earlier trials
    _run(blobs(n=128, epochs=EPOCHS), on_checkpoint=store.save)
    assert store.stats() == {}  # epochs of milliseconds never earn a minute-long save
    monkeypatch.setenv("LRSEARCH_CHECKPOINT_SHARE", "1")
    store = TrialCheckpoints(tmp_path, "s", 1, {}, expected_s=60.0)
    _run(blobs(n=128, epochs=EPOCHS), on_checkpoint=store.save)
    assert store.stats()["checkpoints"] == EPOCHS - 1  # 1: every epoch, whatever it costs


def test_checkpoints_no_trial_will_resume_are_removed(tmp_path) -> None:
    for origin in (1, 2, 3):
        store = TrialCheckpoints(tmp_path, "my study", origin, {})
        store.directory.mkdir(parents=True)
        (store.directory / "epoch-1.pt").write_bytes(b"x")
    assert remove_stale(tmp_path, "my study", live={2}) == [1, 3]
    assert [p.name for p in (tmp_path / "my_study").iterdir()] == ["trial-2"]
    assert remove_stale(tmp_path, "another study", live=set()) == []


def test_a_workers_later_trials_expect_the_checkpoint_cost_it_measured(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("LRSEARCH_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("LRSEARCH_CHECKPOINT_SHARE", "0.001")  # epochs here take milliseconds
    config = {
        "study": {"name": "ck", "workload": "tests.tiny_workloads:blobs", "n_trials": 2},
        "range_test": {"repeats": 1, "num_iter": 20},
        "pruner": {"name": "none"},
    }
    config["study"]["epochs"] = EPOCHS
    prior = LRPrior(center=0.1, sigma_decades=0.5, low=1e-3, high=1.0)
    handle = StudyHandle.in_memory(parse_study_config(config), prior, blobs())
    handle.study.optimize(Objective(handle), n_trials=2)
    first, second = (t.user_attrs["training"] for t in handle.study.trials)
    assert first["checkpoints"] == 1  # a worker's first trial: at epoch 1, its cost unknown
    assert "checkpoints" not in second  # then known: milliseconds of training never earn one
