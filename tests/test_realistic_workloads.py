"""Honest scoring (a test split the search never sees) and the realistic built-ins."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lrsearch.schedules import Constant, OneCycle
from lrsearch.training import EpochInfo, train
from lrsearch.workloads import Workload, get_workload
from tests.tiny_workloads import blobs

# --- the test split: scored once, at the end, never shown to a callback or to Optuna ----------


class _Recorded(list):
    """Batches that note in ``log`` each time someone iterates them."""

    def __init__(self, batches: list, log: list) -> None:
        super().__init__(batches)
        self.log = log

    def __iter__(self):
        self.log.append("test")
        return super().__iter__()


def _with_test(log: list, *, wrong_labels: bool = False) -> Workload:
    """blobs with a test split: fresh blobs (labels shifted by one when ``wrong_labels``)."""
    base = blobs(seed=0)
    x, y = blobs(seed=0, n=200).val_data
    if wrong_labels:
        y = (y + 1) % 4
    return dataclasses.replace(base, test_data=_Recorded([(x, y)], log))


def test_the_test_split_is_scored_once_after_the_last_epoch() -> None:
    log: list = []
    w = _with_test(log)

    def on_epoch(info: EpochInfo) -> None:
        log.append(info)

    result = train(w, OneCycle(0.2, 3 * w.steps_per_epoch()), epochs=3, on_epoch=on_epoch)
    assert [type(e).__name__ for e in log[:3]] == ["EpochInfo"] * 3 and log[3:] == ["test"]
    assert not any("test" in f.name for f in dataclasses.fields(EpochInfo))
    assert math.isfinite(result.test_metric) and math.isfinite(result.test_loss)
    assert "test_metric" in result.to_dict()


def test_a_run_without_a_test_split_or_that_diverged_has_nan_test_scores() -> None:
    plain = train(blobs(), Constant(0.1), epochs=1)
    assert math.isnan(plain.test_metric) and math.isnan(plain.test_loss)
    log: list = []
    blown = train(_with_test(log), Constant(1e6), epochs=2)
    assert blown.diverged and math.isnan(blown.test_metric) and log == []


def test_optuna_sees_validation_only() -> None:
    from lrsearch.config import parse_study_config
    from lrsearch.export import best_record
    from lrsearch.objective import Objective
    from lrsearch.prior import LRPrior
    from lrsearch.study import StudyHandle
    from lrsearch.trials import trial_params, trial_schedule, trial_seed

    config = {
        "study": {"name": "honest", "workload": "tests.tiny_workloads:blobs", "n_trials": 1},
        "pruner": {"name": "none"},
        "tracking": {"update_ratio_every": 0},
    }
    log: list = []
    prior = LRPrior(center=0.1, sigma_decades=0.3, low=1e-2, high=0.5)
    w = _with_test(log, wrong_labels=True)  # test accuracy far from validation's
    handle = StudyHandle.in_memory(parse_study_config(config), prior, w)
    handle.study.optimize(Objective(handle), n_trials=1)
    trial = handle.study.trials[0]
    assert log == ["test"]  # scored once, after the trial's last report
    again = train(
        w,
        trial_schedule(handle, trial),
        epochs=handle.plan.epochs,
        seed=trial_seed(handle.config, trial.number),
        weight_decay=float(trial_params(handle, trial)["weight_decay"]),
    )
    assert trial.value == again.val_metric and again.test_metric < again.val_metric - 20
    assert sorted(trial.intermediate_values.values()) == sorted(e.val_metric for e in again.history)
    # the chosen trial's test score is kept for reporting (best, bench), beside its value
    assert best_record(handle)["test_metric"] == again.test_metric


# --- char-transformer --------------------------------------------------------------------------

SMALL_LM = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 8,
    "steps_per_epoch": 4,
    "epochs": 1,
}


def test_the_text_splits_are_contiguous_80_10_10() -> None:
    from lrsearch.workloads._text import encode_splits, pydoc_text

    text = pydoc_text()
    assert len(text) > 400_000  # Python's own pydoc topics, no download
    vocab, train_ids, val_ids, test_ids = encode_splits(text)
    n = len(text)
    assert [len(train_ids), len(val_ids), len(test_ids)] == [
        int(0.8 * n),
        int(0.9 * n) - int(0.8 * n),
        n - int(0.9 * n),
    ]
    decoded = "".join(vocab[i] for i in torch.cat([train_ids, val_ids, test_ids]).tolist())
    assert decoded == text  # three blocks, in order, nothing shared or lost


def test_char_transformer_windows_cover_their_split_and_sample_per_epoch() -> None:
    w = get_workload("char-transformer", **SMALL_LM)
    x, y = w.val_data
    assert x.shape[1] == 32 and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x.flatten()[32:64], x[1])  # non-overlapping, in order
    first = [b[0] for b in w.train_data(0, 0)]
    assert len(first) == 4 and first[0].shape == (8, 32)
    assert all(torch.equal(a, b[0]) for a, b in zip(first, w.train_data(0, 0), strict=True))
    assert not torch.equal(first[0], next(iter(w.train_data(1, 0)))[0])
    assert not torch.equal(first[0], next(iter(w.train_data(0, 1)))[0])


def test_char_transformer_trains_reproducibly_on_cpu() -> None:
    w = get_workload("char-transformer", **SMALL_LM)
    assert w.precision == ("bf16" if torch.cuda.is_available() else "fp32")
    assert w.grad_clip == 1.0 and w.metric.name == "bpc" and w.metric.direction == "minimize"
    runs = [train(w, OneCycle(3e-3, w.steps_per_epoch()), seed=3) for _ in range(2)]
    first, second = runs
    assert not first.diverged and math.isfinite(first.history[0].train_loss)
    assert first.val_metric == pytest.approx(first.val_loss / math.log(2))
    assert math.isfinite(first.test_metric) and first.test_metric < 8  # log2(103) ≈ 6.7 at init
    assert (first.val_metric, first.test_metric) == (second.val_metric, second.test_metric)


def test_char_transformer_is_causal() -> None:
    model = get_workload("char-transformer", **SMALL_LM).build_model().eval()
    x = torch.randint(0, 50, (2, 32))
    changed = x.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 50
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.allclose(a[:, :20], b[:, :20], atol=1e-6)
    assert not torch.allclose(a[:, 20:], b[:, 20:], atol=1e-6)


def test_char_transformer_decays_weight_matrices_only() -> None:
    from torch import nn

    w = get_workload("char-transformer", **SMALL_LM)
    model = w.build_model()
    assert model.head.weight is model.tok.weight  # tied
    optimizer = w.make_optimizer(model, lr=1e-3, momentum=0.9, weight_decay=0.1)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, rest = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    no_decay = {id(p) for p in rest["params"]}
    for module in model.modules():
        if isinstance(module, nn.LayerNorm | nn.Embedding):
            assert all(id(p) in no_decay for p in module.parameters(recurse=False))
        if isinstance(module, nn.Linear) and module.bias is not None:
            assert id(module.bias) in no_decay
    assert all(p.dim() == 2 for p in decayed["params"])
    n_grouped = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert n_grouped == sum(p.numel() for p in model.parameters())  # each parameter once


# --- mnist1d-resnet ----------------------------------------------------------------------------


def test_mnist1d_resnet_splits_and_model() -> None:
    w = get_workload("mnist1d-resnet")
    assert [len(w.val_data[0]), len(w.test_data[0])] == [1000, 1000]
    loader = w.train_data(0, 0)
    assert isinstance(loader, torch.utils.data.DataLoader) and len(loader.dataset) == 3000
    assert w.steps_per_epoch() == 30
    model = w.build_model()
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert model(w.val_data[0][:5]).shape == (5, 10)


def _epoch_inputs(w: Workload, epoch: int, seed: int) -> torch.Tensor:
    return torch.cat([x for x, _ in w.train_data(epoch, seed)])


def test_mnist1d_resnet_augments_per_epoch_and_seed() -> None:
    w = get_workload("mnist1d-resnet")
    same = _epoch_inputs(w, 2, 5)
    assert torch.equal(same, _epoch_inputs(w, 2, 5))
    assert not torch.equal(same, _epoch_inputs(w, 3, 5))
    assert not torch.equal(same, _epoch_inputs(w, 2, 6))
    data = w.train_data(0, 0).dataset
    x0, _ = data[0]
    assert not torch.equal(x0, data.x[0])  # shifted and noised, not the raw sample
    assert (x0 - torch.roll(data.x[0], data.shifts[0])).abs().max() < 0.5


def test_mnist1d_resnet_trains_reproducibly_on_cpu() -> None:
    w = get_workload("mnist1d-resnet", batch_size=50).with_options(batches_per_epoch=8)
    runs = [train(w, OneCycle(0.1, w.steps_per_epoch()), epochs=1, seed=1) for _ in range(2)]
    assert not runs[0].diverged and math.isfinite(runs[0].history[0].train_loss)
    assert (runs[0].val_metric, runs[0].test_metric) == (runs[1].val_metric, runs[1].test_metric)
    assert math.isfinite(runs[0].test_loss)
