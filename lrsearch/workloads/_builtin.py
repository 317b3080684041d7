"""The built-in workloads' registry; scikit-learn digits (MLP) and least squares live here."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lrsearch.workloads._metrics import ACCURACY, MSE
from lrsearch.workloads._mnist1d import as_tensors, mlp, mnist1d_cnn, mnist1d_mlp, mnist1d_resnet
from lrsearch.workloads._text import char_transformer
from lrsearch.workloads._workload import Workload

DIGITS_HELD_OUT = 360  # digits in each of validation and test (20% of 1797)


def digits_splits(split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a fixed, seeded, stratified 1077 / 360 / 360 split of the 1797 digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    rest, test = train_test_split(
        np.arange(len(y)), test_size=DIGITS_HELD_OUT, stratify=y, random_state=split_seed
    )
    train, val = train_test_split(
        rest, test_size=DIGITS_HELD_OUT, stratify=y[rest], random_state=split_seed
    )
    return train, val, test


def digits_mlp(*, split_seed: int = 0, epochs: int = 20, batch_size: int = 64) -> Workload:
    """scikit-learn's bundled 8x8 digits (1797 images), a fixed seeded stratified
    1077 / 360 / 360 train / validation / test split, MLP 64-64-10."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    train, val, test = digits_splits(split_seed)
    return Workload(
        name="digits-mlp",
        build_model=lambda: mlp([64, 64, 10]),
        train_data=as_tensors(x[train], y[train]),
        val_data=as_tensors(x[val], y[val]),
        test_data=as_tensors(x[test], y[test]),
        loss_fn=nn.functional.cross_entropy,
        metric=ACCURACY,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        info={
            "data": "sklearn.datasets.load_digits, stratified 1077/360/360 split",
            "model": "MLP 64-64-10",
        },
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

    Validation is the training set itself (no test split): the task is the optimisation.

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
    "mnist1d-resnet": mnist1d_resnet,
    "char-transformer": char_transformer,
    "digits-mlp": digits_mlp,
    "least-squares": least_squares,
}
