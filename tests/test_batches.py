"""lrsearch.workloads._batches: batches per epoch, reproducible under a run's seed."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lrsearch import train
from lrsearch.errors import WorkloadError
from lrsearch.schedules import Constant
from lrsearch.workloads import ACCURACY, Batches, Workload, describe, split_batch, to_device

CPU = torch.device("cpu")


def _loader(seed: int = 123) -> DataLoader:
    x = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    return DataLoader(
        TensorDataset(x, torch.arange(20)),
        batch_size=5,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def _order(batches: Batches, epoch: int) -> list[int]:
    return [int(i) for _, y in batches.epoch(epoch) for i in y]


def test_a_loaders_own_generator_is_reseeded_per_run() -> None:
    loader = _loader()
    first = Batches(loader, batch_size=5, seed=7, device=CPU)
    a = [_order(first, e) for e in range(3)]
    # A second run (the next trial in the same worker) sees the same order, not the
    # generator's state where the first run left it.
    second = Batches(loader, batch_size=5, seed=7, device=CPU)
    assert [_order(second, e) for e in range(3)] == a
    assert a[0] != a[1]  # epochs still differ
    other = Batches(loader, batch_size=5, seed=8, device=CPU)
    assert _order(other, 0) != a[0]
    assert first.order is loader.generator  # what a snapshot keeps


def test_tensor_data_reshuffles_per_epoch_under_the_seed() -> None:
    data = (torch.arange(12, dtype=torch.float32), torch.arange(12))
    one = Batches(data, batch_size=4, seed=1, device=CPU)
    two = Batches(data, batch_size=4, seed=1, device=CPU)
    assert one.per_epoch == 3
    e0, e1 = _order(one, 0), _order(one, 1)
    assert sorted(e0) == list(range(12)) and e0 != e1
    assert [_order(two, 0), _order(two, 1)] == [e0, e1]


def test_a_factory_is_called_with_epoch_and_seed() -> None:
    calls: list[tuple[int, int]] = []

    def factory(epoch: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        calls.append((epoch, seed))
        return [(torch.zeros(2), torch.zeros(2))]

    batches = Batches(factory, batch_size=2, seed=5, device=CPU)
    list(batches.epoch(0)), list(batches.epoch(3))
    assert calls == [(0, 5), (3, 5)]


def test_to_device_walks_containers() -> None:
    Pair = namedtuple("Pair", "x y")
    batch = {"a": [torch.ones(1)], "b": Pair(torch.ones(1), 3)}
    moved = to_device(batch, CPU)
    assert isinstance(moved["b"], Pair) and moved["b"].y == 3
    assert torch.equal(moved["a"][0], torch.ones(1))


def test_split_batch_and_describe() -> None:
    assert split_batch([1, 2]) == (1, 2)
    assert describe((torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64))) == (
        "(Tensor[3, 2] float32, Tensor[3] int64)"
    )
    with pytest.raises(WorkloadError, match=r"expected \(inputs, targets\).*step_fn"):
        split_batch((1, 2, 3))


def test_a_seeded_loader_workload_trains_the_same_twice_in_one_process() -> None:
    """What ``train --from-study`` relies on: a run does not depend on the runs before it."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    loader = DataLoader(
        TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator()
    )
    workload = Workload(
        name="seeded-loader",
        build_model=lambda: torch.nn.Linear(4, 2),
        train_data=loader,
        val_data=(x, y),
        loss_fn=torch.nn.functional.cross_entropy,
        metric=ACCURACY,
        optimizer="sgd",
        batch_size=16,
        epochs=2,
    )
    runs = [train(workload, Constant(lr=0.3), epochs=2, seed=3) for _ in range(2)]
    assert runs[0].val_loss == runs[1].val_loss
