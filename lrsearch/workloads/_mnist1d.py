"""MNIST-1D workloads: the paper's CNN, an MLP and a small residual CNN trained from a loader.

Every one splits MNIST-1D the same way: its 4,000 training samples into 3,000 for training and
the last 1,000 for validation (what the search selects on), its 1,000 test samples kept as the
test split (what is reported).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lrsearch.workloads._metrics import ACCURACY
from lrsearch.workloads._workload import Workload

N_VAL = 1000  # validation: the last N_VAL of MNIST-1D's training samples


def cache_dir() -> Path:
    """Where generated datasets are cached (``LRSEARCH_CACHE_DIR`` overrides)."""
    env = os.environ.get("LRSEARCH_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("lrsearch"))


def _mnist1d_arrays(seed: int | None) -> dict[str, np.ndarray]:
    """MNIST-1D at the package's default arguments, generated locally and cached on disk."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if seed is not None:
        args.seed = seed
    key = json.dumps({k: v for k, v in vars(args).items() if k != "url"}, sort_keys=True)
    path = cache_dir() / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    # make_dataset seeds the global RNGs; put them back so callers keep their streams.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)  # atomic: concurrent workers never read a half-written file
    return arrays


Split = tuple[torch.Tensor, torch.Tensor]


def as_tensors(x: np.ndarray, y: np.ndarray) -> Split:
    """Float inputs and long class labels."""
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


def mnist1d_splits(data_seed: int | None) -> tuple[Split, Split, Split]:
    """Train (3,000), validation (the last 1,000 training samples) and test (1,000) tensors."""
    data = _mnist1d_arrays(data_seed)
    x, y = data["x"], data["y"]
    cut = len(y) - N_VAL
    return (
        as_tensors(x[:cut], y[:cut]),
        as_tensors(x[cut:], y[cut:]),
        as_tensors(data["x_test"], data["y_test"]),
    )


class MNIST1DConv(nn.Module):
    """The MNIST-1D paper's CNN: three stride-2 Conv1d layers of 25 channels, then Linear."""

    def __init__(self, channels: int = 25, length: int = 40, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        out_len = length
        for kernel in (5, 3, 3):
            out_len = (out_len + 2 - kernel) // 2 + 1
        self.linear = nn.Linear(channels * out_len, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.view(x.shape[0], 1, x.shape[-1])
        h = torch.relu(self.conv1(h))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.linear(h.flatten(1))


def mlp(sizes: list[int]) -> nn.Sequential:
    """A ReLU MLP with the given layer sizes."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _mnist1d(
    name: str, build_model: Any, model: str, *, data_seed: int | None, epochs: int, batch_size: int
) -> Workload:
    train, val, test = mnist1d_splits(data_seed)
    return Workload(
        name=name,
        build_model=build_model,
        train_data=train,
        val_data=val,
        test_data=test,
        loss_fn=nn.functional.cross_entropy,
        metric=ACCURACY,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        info={"data": "mnist1d.make_dataset (default args), 3000/1000/1000", "model": model},
    )


def mnist1d_cnn(
    *, data_seed: int | None = None, epochs: int = 30, batch_size: int = 100
) -> Workload:
    """MNIST-1D (3000 train / 1000 validation / 1000 test), the paper's ~5.2k-parameter CNN."""
    return _mnist1d(
        "mnist1d-cnn",
        MNIST1DConv,
        "paper CNN",
        data_seed=data_seed,
        epochs=epochs,
        batch_size=batch_size,
    )


def mnist1d_mlp(
    *, data_seed: int | None = None, epochs: int = 30, batch_size: int = 100
) -> Workload:
    """MNIST-1D (3000 / 1000 / 1000) with a 40-100-100-10 ReLU MLP."""
    return _mnist1d(
        "mnist1d-mlp",
        lambda: mlp([40, 100, 100, 10]),
        "MLP 40-100-100-10",
        data_seed=data_seed,
        epochs=epochs,
        batch_size=batch_size,
    )


# --- the residual CNN, trained from a DataLoader with augmentation ----------------------------


class _Block(nn.Module):
    """A basic residual block: conv-BN-ReLU-conv-BN plus a (projected) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet1d(nn.Module):
    """A small 1-D ResNet: a conv stem, one block per stage (stride 1, 2, 2), global pooling.

    Args:
        width: channels of the first stage; the later two have twice as many.
        n_classes: output classes.
    """

    def __init__(self, width: int = 32, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(1, width, 3, padding=1, bias=False), nn.BatchNorm1d(width), nn.ReLU()
        )
        self.stages = nn.Sequential(
            _Block(width, width, 1), _Block(width, 2 * width, 2), _Block(2 * width, 2 * width, 2)
        )
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x.view(x.shape[0], 1, x.shape[-1])))
        return self.head(h.mean(dim=2))


class Augmented(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One epoch's augmented copy of a dataset: each sample circularly shifted and noised.

    The shifts (uniform in ``[-max_shift, max_shift]``) and the Gaussian noise are drawn up
    front from a generator seeded by ``(epoch, seed)``, so an epoch's samples are the same
    however the loader batches or parallelises them, and different from the next epoch's.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        epoch: int,
        seed: int,
        max_shift: int,
        noise: float,
    ) -> None:
        g = torch.Generator().manual_seed(_epoch_seed(epoch, seed))
        self.x, self.y = x, y
        self.shifts = torch.randint(-max_shift, max_shift + 1, (len(x),), generator=g).tolist()
        self.noise = torch.randn(x.shape, generator=g) * noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.roll(self.x[i], self.shifts[i]) + self.noise[i], self.y[i]


def _epoch_seed(epoch: int, seed: int) -> int:
    """One generator seed per (epoch, seed) pair, far apart for nearby pairs."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


def augmented_loader(
    train: Split, *, batch_size: int, max_shift: int, noise: float
) -> Callable[[int, int], DataLoader[Any]]:
    """A per-epoch factory ``(epoch, seed) -> DataLoader`` of freshly augmented, shuffled data."""
    x, y = train

    def loader(epoch: int, seed: int) -> DataLoader[Any]:
        data = Augmented(x, y, epoch=epoch, seed=seed, max_shift=max_shift, noise=noise)
        order = torch.Generator().manual_seed(_epoch_seed(epoch, seed) + 1)
        return DataLoader(
            data, batch_size=batch_size, shuffle=True, drop_last=True, generator=order
        )

    return loader


def mnist1d_resnet(
    *,
    data_seed: int | None = None,
    width: int = 32,
    epochs: int = 20,
    batch_size: int = 100,
    max_shift: int = 3,
    noise: float = 0.05,
) -> Workload:
    """MNIST-1D (3000 / 1000 / 1000) with a small residual CNN, augmented through a DataLoader.

    Each epoch the training samples are circularly shifted by up to ``max_shift`` positions
    and get Gaussian noise of standard deviation ``noise`` (MNIST-1D's inputs have unit
    scale), seeded by (epoch, run seed); SGD with momentum.
    """
    train, val, test = mnist1d_splits(data_seed)
    return Workload(
        name="mnist1d-resnet",
        build_model=lambda: ResNet1d(width),
        train_data=augmented_loader(train, batch_size=batch_size, max_shift=max_shift, noise=noise),
        val_data=val,
        test_data=test,
        loss_fn=nn.functional.cross_entropy,
        metric=ACCURACY,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        batches_per_epoch=len(train[0]) // batch_size,
        info={
            "data": "mnist1d.make_dataset (default args), 3000/1000/1000",
            "model": f"ResNet1d width {width}, BatchNorm",
            "augmentation": f"circular shift <= {max_shift}, Gaussian noise {noise}",
        },
    )
