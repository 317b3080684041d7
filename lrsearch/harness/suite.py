"""A suite of small CPU workloads of many kinds, split before any measurement into a calibration
half and a held-out half (issue 19).

Each workload is a ``module:function`` (``lrsearch.harness.suite:gru_first_token``) taking
``seed`` (data generation and the train / validation / test split), ``epochs`` (8 by default)
and ``batch_size``. Data are generated locally with numpy or read from scikit-learn's bundled
tables: nothing is downloaded. An 8-epoch trial takes about 0.3-4 s on one CPU core.

The split (:data:`CALIBRATION`, :data:`HELD_OUT`) is fixed by a written rule, not by results:
the suite is listed in pairs of related kinds, the first of each pair held out, the second
calibrating (``docs/prior-calibration.md``, "The workload suite and its split"). Calibrate with

    lrsearch calibrate-prior --workloads "$(python -c 'from lrsearch.harness.suite import \
specs, CALIBRATION; print(specs(CALIBRATION))')" ...
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lrsearch.harness.suite_parts import (
    Arrays,
    Autoencoder,
    DigitsCNN,
    DigitsMixer,
    DigitsViT,
    EmbeddingClassifier,
    RecurrentHead,
    ResidualMLP,
    TokenTransformer,
    adding_problem,
    first_token_sequences,
    linear_classes,
    noisy_friedman,
    planted_majority,
    signal_tokens,
    split_indices,
    standardized,
    two_spirals,
)
from lrsearch.workloads import ACCURACY, MEAN_LOSS, MSE, Metric, Workload

__all__ = [
    "CALIBRATION",
    "HELD_OUT",
    "PAIRS",
    "SUITE",
    "breast_cancer_mlp",
    "diabetes_mlp",
    "digits_autoencoder",
    "digits_cnn_bn",
    "digits_mixer",
    "digits_vit",
    "embedding_bag",
    "friedman_resmlp",
    "gru_first_token",
    "logreg_large_batch",
    "lstm_adding",
    "majority_transformer",
    "specs",
    "spirals_mlp",
    "wine_mlp",
]

EPOCHS = 8
Task = Literal["classify", "regress", "reconstruct"]


def _mlp(*sizes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _workload(
    name: str,
    arrays: Arrays,
    build_model: Callable[[], nn.Module],
    *,
    task: Task,
    seed: int,
    optimizer: str,
    batch_size: int,
    epochs: int,
    info: dict[str, Any],
    scale: bool = False,
    metric: Metric | None = None,
) -> Workload:
    """Split ``arrays`` 60/20/20 under ``seed`` and make a classification (cross-entropy,
    accuracy), regression or reconstruction (MSE) workload; ``scale`` standardises the
    inputs by the training rows; ``metric`` overrides the task's."""
    x, y = arrays
    train, val, test = split_indices(len(x), seed)
    if scale:
        x = standardized(x, train)
    label_type = torch.long if task == "classify" else torch.float32
    xt = torch.as_tensor(x, dtype=torch.long if x.dtype == np.int64 else torch.float32)
    yt = xt if task == "reconstruct" else torch.as_tensor(y, dtype=label_type)
    return Workload(
        name=name,
        build_model=build_model,
        train_data=(xt[train], yt[train]),
        val_data=(xt[val], yt[val]),
        test_data=(xt[test], yt[test]),
        loss_fn=nn.functional.cross_entropy if task == "classify" else nn.functional.mse_loss,
        metric=metric or (ACCURACY if task == "classify" else MSE),
        optimizer=optimizer,
        batch_size=batch_size,
        epochs=epochs,
        info={**info, "rows": f"{len(train)}/{len(val)}/{len(test)}", "data_seed": seed},
    )


def _sklearn(loader: str) -> Arrays:
    from sklearn import datasets

    x, y = getattr(datasets, loader)(return_X_y=True)
    return np.asarray(x, np.float32), np.asarray(y)


# --- the workloads, in pairs (held out first, then calibration) -------------------------------


def gru_first_token(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 32) -> Workload:
    """GRU classifier, AdamW: the class is written in the first of 30 noisy steps (4 classes).

    Slow to start on purpose: the loss sits at chance until the GRU learns to carry step 0's
    signal through 29 steps of noise, then drops (AdamW learns it only at max_lr ~0.1).
    """
    data = first_token_sequences(1600, length=30, dim=8, n_classes=4, noise=0.5, seed=seed)
    return _workload(
        "suite-gru-first-token",
        data,
        lambda: RecurrentHead("gru", 8, 32, 4),
        task="classify",
        seed=seed,
        optimizer="adamw",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "recurrent-gru", "model": "GRU(8, 32) + Linear(32, 4)"},
    )


def lstm_adding(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 32) -> Workload:
    """LSTM regression, Adam: the adding problem over 20 steps (MSE; predicting the mean gives 0.167)."""
    return _workload(
        "suite-lstm-adding",
        adding_problem(3000, length=20, seed=seed),
        lambda: RecurrentHead("lstm", 2, 32, 1),
        task="regress",
        seed=seed,
        optimizer="adam",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "recurrent-lstm", "model": "LSTM(2, 32) + Linear(32, 1)"},
    )


def diabetes_mlp(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 16) -> Workload:
    """MLP regression, Adam, on scikit-learn's diabetes table (442 rows, 264 to train; MSE on
    the standardised target: a noisy loss)."""
    x, y = _sklearn("load_diabetes")
    y = ((y - y.mean()) / y.std()).astype(np.float32)[:, None]
    return _workload(
        "suite-diabetes-mlp",
        (x, y),
        lambda: _mlp(10, 64, 64, 1),
        task="regress",
        seed=seed,
        optimizer="adam",
        batch_size=batch_size,
        epochs=epochs,
        scale=True,
        info={"kind": "table-regression", "model": "MLP 10-64-64-1"},
    )


def friedman_resmlp(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 64) -> Workload:
    """Residual MLP with LayerNorm, SGD: Friedman #1 regression, 2,000 generated rows (MSE)."""
    return _workload(
        "suite-friedman-resmlp",
        noisy_friedman(2000, noise=1.0, seed=seed),
        lambda: ResidualMLP(10, 64, 2, 1),
        task="regress",
        seed=seed,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "residual-mlp-regression", "model": "ResMLP 10-64 x2 blocks-1"},
    )


def wine_mlp(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 8) -> Workload:
    """MLP classifier, Adagrad, on scikit-learn's wine table (178 rows, 3 classes), selected on
    the validation loss (36 validation rows: accuracy there saturates at 100%)."""
    return _workload(
        "suite-wine-mlp",
        _sklearn("load_wine"),
        lambda: _mlp(13, 32, 3),
        task="classify",
        seed=seed,
        optimizer="adagrad",
        batch_size=batch_size,
        epochs=epochs,
        scale=True,
        metric=MEAN_LOSS,
        info={"kind": "tabular-small", "model": "MLP 13-32-3"},
    )


def breast_cancer_mlp(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 32) -> Workload:
    """MLP classifier, RMSprop, on scikit-learn's breast-cancer table (569 rows, 2 classes)."""
    return _workload(
        "suite-breast-cancer-mlp",
        _sklearn("load_breast_cancer"),
        lambda: _mlp(30, 64, 32, 2),
        task="classify",
        seed=seed,
        optimizer="rmsprop",
        batch_size=batch_size,
        epochs=epochs,
        scale=True,
        info={"kind": "tabular", "model": "MLP 30-64-32-2"},
    )


def _digits() -> Arrays:
    x, y = _sklearn("load_digits")
    return x / 16.0, y


def digits_mixer(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 64) -> Workload:
    """MLP-Mixer, Adam, on the 8x8 digits' 2x2 patches (1,797 images, 10 classes)."""
    return _workload(
        "suite-digits-mixer",
        _digits(),
        DigitsMixer,
        task="classify",
        seed=seed,
        optimizer="adam",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "mlp-mixer", "model": "Mixer: 16 patches, width 32, 2 blocks"},
    )


def digits_vit(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 64) -> Workload:
    """Tiny ViT, AdamW, on the 8x8 digits' 2x2 patches (1,797 images, 10 classes)."""
    return _workload(
        "suite-digits-vit",
        _digits(),
        DigitsViT,
        task="classify",
        seed=seed,
        optimizer="adamw",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "vision-transformer", "model": "ViT: 16 patches + cls, width 32, 2 layers"},
    )


def digits_autoencoder(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 32) -> Workload:
    """Dense autoencoder 64-32-8-32-64, RMSprop: reconstruct the digits' pixels (MSE)."""
    return _workload(
        "suite-digits-autoencoder",
        _digits(),
        Autoencoder,
        task="reconstruct",
        seed=seed,
        optimizer="rmsprop",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "autoencoder", "model": "MLP 64-32-8-32-64"},
    )


def digits_cnn_bn(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 32) -> Workload:
    """CNN with BatchNorm, SGD, on the 8x8 digits (1,797 images, 10 classes)."""
    return _workload(
        "suite-digits-cnn-bn",
        _digits(),
        DigitsCNN,
        task="classify",
        seed=seed,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "cnn-batchnorm", "model": "3 x (Conv3x3 + BN + ReLU) 16-32-32 + Linear"},
    )


def majority_transformer(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 32) -> Workload:
    """Transformer encoder classifier, AdamW: the class is the token planted 4 times in a
    16-token sequence over 8 tokens (1,600 sequences)."""
    return _workload(
        "suite-majority-transformer",
        planted_majority(1600, length=16, vocab=8, planted=4, seed=seed),
        lambda: TokenTransformer(8, 16, 8),
        task="classify",
        seed=seed,
        optimizer="adamw",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "transformer", "model": "2-layer pre-norm encoder, width 32, 4 heads"},
    )


def embedding_bag(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 32) -> Workload:
    """Embedding + mean pooling, Adagrad: bags of 24 tokens of a 500-token vocabulary, the
    class (4) told by 2 class-owned tokens among them (2,000 bags)."""
    data = signal_tokens(2000, length=24, vocab=500, n_classes=4, per_class=25, hits=2, seed=seed)
    return _workload(
        "suite-embedding-bag",
        data,
        lambda: EmbeddingClassifier(500, 16, 4),
        task="classify",
        seed=seed,
        optimizer="adagrad",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "embedding", "model": "Embedding(500, 16), mean pool, Linear(16, 4)"},
    )


def spirals_mlp(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 16) -> Workload:
    """MLP, SGD, small batches: two interleaved spirals in the plane (1,000 points)."""
    return _workload(
        "suite-spirals-mlp",
        two_spirals(1000, turns=1.5, noise=0.03, seed=seed),
        lambda: _mlp(2, 64, 64, 2),
        task="classify",
        seed=seed,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "mlp-2d", "model": "MLP 2-64-64-2"},
    )


def logreg_large_batch(*, seed: int = 0, epochs: int = EPOCHS, batch_size: int = 512) -> Workload:
    """Logistic regression (one linear layer), SGD, batch 512: 4,000 rows of 20 features of
    uneven scale, two classes, 10% of labels flipped."""
    return _workload(
        "suite-logreg-large-batch",
        linear_classes(4000, dim=20, flip=0.1, seed=seed),
        lambda: nn.Linear(20, 2),
        task="classify",
        seed=seed,
        optimizer="sgd",
        batch_size=batch_size,
        epochs=epochs,
        info={"kind": "logistic-regression", "model": "Linear(20, 2)"},
    )


# --- the suite and its split ------------------------------------------------------------------

SUITE: dict[str, str] = {
    "gru_first_token": "recurrent GRU classifier, long-range (30 steps), slow starter; AdamW, "
    "batch 32; 960/320/320 generated",
    "lstm_adding": "recurrent LSTM regression, the adding problem (20 steps); Adam, batch 32; "
    "1800/600/600 generated",
    "diabetes_mlp": "MLP regression (MSE) on a small table; Adam, batch 16; "
    "sklearn diabetes 266/88/88",
    "friedman_resmlp": "residual MLP + LayerNorm regression (MSE); SGD, batch 64; "
    "Friedman #1 1200/400/400 generated",
    "wine_mlp": "tabular MLP classifier on a tiny table, validation loss; Adagrad, batch 8; "
    "sklearn wine 106/36/36",
    "breast_cancer_mlp": "tabular MLP classifier; RMSprop, batch 32; "
    "sklearn breast cancer 341/114/114",
    "digits_mixer": "MLP-Mixer on 2x2 patches; Adam, batch 64; sklearn digits 1079/359/359",
    "digits_vit": "tiny ViT on 2x2 patches; AdamW, batch 64; sklearn digits 1079/359/359",
    "digits_autoencoder": "dense autoencoder, reconstruction MSE; RMSprop, batch 32; "
    "sklearn digits 1079/359/359",
    "digits_cnn_bn": "CNN with BatchNorm; SGD, batch 32; sklearn digits 1079/359/359",
    "majority_transformer": "transformer encoder classifier, the planted (majority) token; "
    "AdamW, batch 32; 960/320/320 generated",
    "embedding_bag": "embedding + mean pooling, token classification; Adagrad, batch 32; "
    "1200/400/400 generated",
    "spirals_mlp": "MLP on two spirals (2-D); SGD, batch 16; 600/200/200 generated",
    "logreg_large_batch": "logistic regression (one linear layer); SGD, batch 512; "
    "2400/800/800 generated",
}

# Pairs of related kinds; the rule: the first of each pair is held out, the second calibrates.
# Within a pair the order was fixed before any measurement so that the two shapes issue 19
# found fragile (the slow GRU, the small-table regression) are held out and each half has
# all five optimizers.
PAIRS: tuple[tuple[str, str], ...] = (
    ("gru_first_token", "lstm_adding"),  # recurrent
    ("diabetes_mlp", "friedman_resmlp"),  # regression
    ("wine_mlp", "breast_cancer_mlp"),  # tabular classification
    ("digits_mixer", "digits_vit"),  # patch models on images
    ("digits_autoencoder", "digits_cnn_bn"),  # other image models
    ("majority_transformer", "embedding_bag"),  # token sequences
    ("spirals_mlp", "logreg_large_batch"),  # small dense models on generated data
)
HELD_OUT: tuple[str, ...] = tuple(held for held, _ in PAIRS)
CALIBRATION: tuple[str, ...] = tuple(calibrating for _, calibrating in PAIRS)


def specs(names: Iterable[str]) -> str:
    """Comma-separated import paths of suite workloads, for ``--workloads``."""
    return ",".join(f"{__name__}:{name}" for name in names)
