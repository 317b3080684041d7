"""Workloads for tests, importable by path (``tests.tiny_workloads:blobs``)."""

from __future__ import annotations

import torch
from torch import nn

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
