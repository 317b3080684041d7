"""Built-in workloads: MNIST-1D (CNN, MLP), scikit-learn digits (MLP), least squares."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lrsearch.workloads._base import ACCURACY, MSE, Workload


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


def _as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


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
    data = _mnist1d_arrays(data_seed)
    return Workload(
        name=name,
        build_model=build_model,
        train_data=_as_tensors(data["x"], data["y"]),
        val_data=_as_tensors(data["x_test"], data["y_test"]),
        loss_fn=nn.functional.cross_entropy,
        metric=ACCURACY,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        info={"data": "mnist1d.make_dataset (default args)", "model": model},
    )


def mnist1d_cnn(
    *, data_seed: int | None = None, epochs: int = 30, batch_size: int = 100
) -> Workload:
    """MNIST-1D (4000 train / 1000 validation) with the paper's ~5.2k-parameter CNN."""
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
    """MNIST-1D with a 40-100-100-10 ReLU MLP."""
    return _mnist1d(
        "mnist1d-mlp",
        lambda: mlp([40, 100, 100, 10]),
        "MLP 40-100-100-10",
        data_seed=data_seed,
        epochs=epochs,
        batch_size=batch_size,
    )


def digits_mlp(*, split_seed: int = 0, epochs: int = 20, batch_size: int = 64) -> Workload:
    """scikit-learn's bundled 8x8 digits (1797 images), fixed seeded 80/20 split, MLP 64-64-10."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(split_seed).permutation(len(y))
    x, y = x[order] / 16.0, y[order]
    cut = int(0.8 * len(y))
    return Workload(
        name="digits-mlp",
        build_model=lambda: mlp([64, 64, 10]),
        train_data=_as_tensors(x[:cut], y[:cut]),
        val_data=_as_tensors(x[cut:], y[cut:]),
        loss_fn=nn.functional.cross_entropy,
        metric=ACCURACY,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        info={"data": "sklearn.datasets.load_digits, 80/20 split", "model": "MLP 64-64-10"},
    )


def least_squares(
    *,
    n: int = 512,
    dim: int = 20,
    noise: float = 0.1,
    seed: int = 0,
    epochs: int = 5,
    batch_size: int = 512,
) -> Workload:
    """Linear regression with a known curvature (tests: where plain SGD must diverge).

    The MSE loss ``mean((Xw - y)^2)`` has Hessian ``2 X^T X / n``; with full-batch SGD the
    iteration diverges once the LR passes ``2 / L``, L the Hessian's largest eigenvalue
    (``info["lr_diverge"]``).
    """
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 3.0, dim)  # uneven curvature, so steep and diverge differ
    x = rng.standard_normal((n, dim)) * scales
    w = rng.standard_normal(dim)
    y = x @ w + noise * rng.standard_normal(n)
    hessian = 2.0 * x.T @ x / n
    top = float(np.linalg.eigvalsh(hessian)[-1])
    xt, yt = (
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y[:, None], dtype=torch.float32),
    )
    return Workload(
        name="least-squares",
        build_model=lambda: nn.Linear(dim, 1, bias=False),
        train_data=(xt, yt),
        val_data=(xt, yt),
        loss_fn=nn.functional.mse_loss,
        metric=MSE,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        info={"hessian_max_eig": top, "lr_diverge": 2.0 / top},
    )


BUILTIN: dict[str, Any] = {
    "mnist1d-cnn": mnist1d_cnn,
    "mnist1d-mlp": mnist1d_mlp,
    "digits-mlp": digits_mlp,
    "least-squares": least_squares,
}
