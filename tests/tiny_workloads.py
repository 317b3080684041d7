"""Workloads for tests, importable by path (``tests.tiny_workloads:blobs``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrsearch.workloads import ACCURACY, Workload


def blobs(
    *, n: int = 256, dim: int = 8, epochs: int = 3, batch_size: int = 32, seed: int = 0
) -> Workload:
    """Four Gaussian blobs, a 2-layer MLP: trains in well under a second."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, dim, generator=g) * 2.0
    y = torch.randint(0, 4, (n,), generator=g)
    x = centres[y] + torch.randn(n, dim, generator=g)
    cut = n * 3 // 4
    return Workload(
        name="blobs",
        build_model=lambda: nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 4)),
        train_data=(x[:cut], y[:cut]),
        val_data=(x[cut:], y[cut:]),
        loss_fn=nn.functional.cross_entropy,
        metric=ACCURACY,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
    )


def blobs_with_test(**kwargs: int) -> Workload:
    """``blobs`` with half its validation split held out as a test split (``test_metric``)."""
    base = blobs(**kwargs)
    x, y = base.val_data
    half = len(y) // 2
    return dataclasses.replace(
        base, name="blobs-test", val_data=(x[:half], y[:half]), test_data=(x[half:], y[half:])
    )


def blobs_adagrad(**kwargs: int) -> Workload:
    """``blobs`` trained with Adagrad: an optimizer without momentum."""
    return dataclasses.replace(blobs(**kwargs), name="blobs-adagrad", optimizer="adagrad")


def not_a_workload() -> dict[str, int]:
    return {"model": 1}


def raises() -> Workload:
    raise RuntimeError("boom in user code")


class _Flaky(nn.Module):
    """Raises in forward for odd training seeds (lrsearch seeds trial n with seed + n)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 4))
        self.fail = torch.initial_seed() % 2 == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail and self.training:
            raise RuntimeError("boom in the user's model")
        return self.net(x)


def flaky(**kwargs: int) -> Workload:
    """``blobs`` whose model raises on odd trials."""
    base = blobs(**kwargs)
    dim = base.train_data[0].shape[1]
    return Workload(**{**base.__dict__, "name": "flaky", "build_model": lambda: _Flaky(dim)})


class _OutOfMemory(nn.Module):
    """Raises torch's CUDA out-of-memory error (constructible without a GPU) on odd seeds."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Linear(dim, 4)
        self.fail = torch.initial_seed() % 2 == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail and self.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.net(x)


def oom(**kwargs: int) -> Workload:
    """``blobs`` whose model runs out of (simulated) GPU memory on odd trials."""
    base = blobs(**kwargs)
    dim = base.train_data[0].shape[1]
    return Workload(**{**base.__dict__, "name": "oom", "build_model": lambda: _OutOfMemory(dim)})


def blobs_loader(
    *, n: int = 256, dim: int = 8, epochs: int = 3, batch_size: int = 32, seed: int = 0
) -> Workload:
    """``blobs`` with its data in DataLoaders: a shuffling one to train, a plain one to validate."""
    base = blobs(n=n, dim=dim, epochs=epochs, batch_size=batch_size, seed=seed)
    train = DataLoader(TensorDataset(*base.train_data), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(*base.val_data), batch_size=50)
    return dataclasses.replace(base, name="blobs-loader", train_data=train, val_data=val)


def same_order_loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> Callable[[int, int], DataLoader]:
    """A ``train_loader(epoch, seed)`` factory that yields the tensor path's batches exactly.

    The tensor path draws one permutation per epoch from a generator seeded with ``seed``.
    """

    def factory(epoch: int, seed: int) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epoch + 1):
            order = torch.randperm(len(x), generator=generator)
        chunks = [order[b : b + batch_size].tolist() for b in range(0, len(x), batch_size)]
        sampler = [c for c in chunks if len(c) == batch_size]
        return DataLoader(TensorDataset(x, y), batch_sampler=sampler)

    return factory


class TinyLM(nn.Module):
    """Embedding → linear next-token logits: a language model small enough for a test."""

    def __init__(self, vocab: int, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


def lm_step(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy: the loss is not ``loss_fn(model(x), y)``."""
    tokens = batch[0]
    logits = model(tokens[:, :-1])
    return nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())


def tiny_lm(
    *, n: int = 256, length: int = 12, vocab: int = 11, epochs: int = 2, seed: int = 0
) -> Workload:
    """Sequences where each token follows from the last (``t -> 3t + 1 mod vocab``): an LM."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.empty(n, length, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for i in range(1, length):
        tokens[:, i] = (3 * tokens[:, i - 1] + 1) % vocab
    cut = n * 3 // 4
    return Workload(
        name="tiny-lm",
        build_model=lambda: TinyLM(vocab),
        train_data=DataLoader(TensorDataset(tokens[:cut]), batch_size=16, shuffle=True),
        val_data=DataLoader(TensorDataset(tokens[cut:]), batch_size=32),
        step_fn=lm_step,
        optimizer="adam",
        batch_size=16,
        epochs=epochs,
    )


def _two_groups(
    model: nn.Module, lr: float, momentum: float | None = None, weight_decay: float = 0.0
) -> torch.optim.SGD:
    """SGD with the first layer at the run's LR and weight decay, the rest at 0.1x LR, no decay."""
    first, *rest = model.children()
    return torch.optim.SGD(
        [
            {"params": first.parameters(), "weight_decay": weight_decay},
            {"params": [p for m in rest for p in m.parameters()], "lr": lr * 0.1},
        ],
        lr=lr,
        momentum=momentum or 0.0,
    )


def blobs_two_groups(**kwargs: int) -> Workload:
    """``blobs`` whose optimizer has two parameter groups (LR ratio 0.1, decay on one)."""
    return dataclasses.replace(blobs(**kwargs), name="blobs-two-groups", optimizer=_two_groups)


class _FailsToEvaluate(nn.Module):
    """Trains (the range test passes) but raises when evaluated: every trial fails."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            raise RuntimeError("boom in evaluation")
        return self.net(x)


def fails_eval(**kwargs: int) -> Workload:
    """``blobs`` whose every trial fails (at its first evaluation)."""
    base = blobs(**kwargs)
    dim = base.train_data[0].shape[1]
    return dataclasses.replace(base, name="fails-eval", build_model=lambda: _FailsToEvaluate(dim))


def no_params(**kwargs: int) -> Workload:
    """``blobs`` with a model that has nothing to train."""
    return dataclasses.replace(blobs(**kwargs), name="no-params", build_model=nn.Flatten)


def slow_blobs(*, step_ms: float = 4.0, **kwargs: int) -> Workload:
    """``blobs`` whose every training step also waits ``step_ms`` (no CPU): epochs long enough
    for a test to act in the middle of one, on a loaded machine too."""
    import time

    base = blobs(**kwargs)
    loss_fn = base.loss_fn
    assert loss_fn is not None

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # a training step, not validation
            time.sleep(step_ms / 1000)
        return loss_fn(out, y)

    return dataclasses.replace(base, name="slow-blobs", loss_fn=loss)
