"""The workload suite's parts: locally generated data sets, seeded splits and small models.

Everything here is generated with numpy from a seed or read from scikit-learn's bundled tables,
so a suite workload never downloads anything. :mod:`lrsearch.harness.suite` assembles them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "Arrays",
    "Autoencoder",
    "DigitsCNN",
    "DigitsMixer",
    "DigitsViT",
    "EmbeddingClassifier",
    "RecurrentHead",
    "ResidualMLP",
    "TokenTransformer",
    "adding_problem",
    "first_token_sequences",
    "linear_classes",
    "noisy_friedman",
    "planted_majority",
    "signal_tokens",
    "split_indices",
    "standardized",
    "two_spirals",
]

Arrays = tuple[np.ndarray, np.ndarray]


# --- splits -----------------------------------------------------------------------------------


def split_indices(
    n: int, seed: int, *, val: float = 0.2, test: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint train / validation / test indices of ``n`` rows: a permutation under ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * val), round(n * test)
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def standardized(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``x`` scaled to zero mean, unit variance by the training rows' statistics only."""
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    return (x - mean) / np.where(std > 0, std, 1.0)


# --- generated data ---------------------------------------------------------------------------


def first_token_sequences(
    n: int, *, length: int, dim: int, n_classes: int, noise: float, seed: int
) -> Arrays:
    """Sequences whose class is written only in their first step, then ``length - 1`` steps of
    noise: a recurrent model has to carry it to the end (long-range dependence).

    Step 0 holds the class's one-hot code (in the first ``n_classes`` of ``dim`` channels);
    every step, the first included, gets Gaussian noise of std ``noise``.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = noise * rng.standard_normal((n, length, dim))
    x[np.arange(n), 0, y] += 1.0
    return x.astype(np.float32), y


def adding_problem(n: int, *, length: int, seed: int) -> Arrays:
    """Hochreiter's adding problem: channel 0 uniform values, channel 1 marks two steps (one
    in each half); the target is the sum of the two marked values (variance 1/6)."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, (n, length))
    first = rng.integers(0, length // 2, n)
    second = rng.integers(length // 2, length, n)
    marks = np.zeros((n, length))
    marks[np.arange(n), first] = 1.0
    marks[np.arange(n), second] = 1.0
    x = np.stack([values, marks], axis=-1).astype(np.float32)
    y = (values * marks).sum(axis=1, keepdims=True).astype(np.float32)
    return x, y


def noisy_friedman(n: int, *, noise: float, seed: int) -> Arrays:
    """Friedman's #1 regression: ``10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4 + noise``
    on 10 uniform features (the last five irrelevant); the target standardised."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, 10))
    y = (
        10 * np.sin(math.pi * x[:, 0] * x[:, 1])
        + 20 * (x[:, 2] - 0.5) ** 2
        + 10 * x[:, 3]
        + 5 * x[:, 4]
        + noise * rng.standard_normal(n)
    )
    y = (y - y.mean()) / y.std()
    return x.astype(np.float32), y[:, None].astype(np.float32)


def linear_classes(n: int, *, dim: int, flip: float, seed: int) -> Arrays:
    """Two classes split by a random hyperplane, features of uneven scale, a ``flip`` share of
    labels flipped (so no model beats ``1 - flip``)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)) * np.linspace(0.3, 3.0, dim)
    y = (x @ rng.standard_normal(dim) > 0).astype(np.int64)
    flipped = rng.uniform(size=n) < flip
    y[flipped] = 1 - y[flipped]
    return x.astype(np.float32), y


def two_spirals(n: int, *, turns: float, noise: float, seed: int) -> Arrays:
    """Two interleaved spirals in the plane, ``n // 2`` points each, Gaussian jitter ``noise``."""
    rng = np.random.default_rng(seed)
    half = n // 2
    t = np.sqrt(rng.uniform(0.0, 1.0, half)) * turns * 2 * math.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (turns * 2 * math.pi)
    x = np.concatenate([arm, -arm]) + noise * rng.standard_normal((2 * half, 2))
    y = np.concatenate([np.zeros(half, np.int64), np.ones(half, np.int64)])
    return x.astype(np.float32), y


def planted_majority(n: int, *, length: int, vocab: int, planted: int, seed: int) -> Arrays:
    """Token sequences with one token (the class) planted at ``planted`` random positions among
    tokens drawn uniformly from the rest of the vocabulary: the class is (almost always) the
    most frequent token, which a transformer finds by comparing tokens across positions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, vocab, n)
    others = rng.integers(1, vocab, (n, length))
    x = (y[:, None] + others) % vocab  # uniform over the tokens other than y
    slots = np.argsort(rng.uniform(size=(n, length)), axis=1)[:, :planted]
    np.put_along_axis(x, slots, np.repeat(y[:, None], planted, axis=1), axis=1)
    return x.astype(np.int64), y.astype(np.int64)


def signal_tokens(
    n: int, *, length: int, vocab: int, n_classes: int, per_class: int, hits: int, seed: int
) -> Arrays:
    """Bags of tokens: each class owns ``per_class`` tokens and a sequence holds ``hits`` of its
    class's among ``length`` tokens drawn from the shared rest of the vocabulary."""
    rng = np.random.default_rng(seed)
    shared = n_classes * per_class
    y = rng.integers(0, n_classes, n)
    x = rng.integers(shared, vocab, (n, length))
    own = y[:, None] * per_class + rng.integers(0, per_class, (n, hits))
    slots = np.argsort(rng.uniform(size=(n, length)), axis=1)[:, :hits]
    np.put_along_axis(x, slots, own, axis=1)
    return x.astype(np.int64), y.astype(np.int64)


# --- models -----------------------------------------------------------------------------------


class RecurrentHead(nn.Module):
    """A one-layer GRU or LSTM over the sequence, a linear head on its last hidden state."""

    def __init__(self, cell: str, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(n_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])  # type: ignore[no-any-return]


class ResidualMLP(nn.Module):
    """Pre-norm residual blocks (LayerNorm, Linear, GELU, Linear) between a stem and a head."""

    def __init__(self, n_in: int, width: int, blocks: int, n_out: int) -> None:
        super().__init__()
        self.stem = nn.Linear(n_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width),
                nn.Linear(width, 2 * width),
                nn.GELU(),
                nn.Linear(2 * width, width),
            )
            for _ in range(blocks)
        )
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)  # type: ignore[no-any-return]


def _conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class DigitsCNN(nn.Module):
    """Three 3x3 conv + BatchNorm + ReLU layers on the 8x8 digits (the last two stride 2)."""

    def __init__(self, channels: int = 16, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(1, channels, 1),
            _conv_bn(channels, 2 * channels, 2),
            _conv_bn(2 * channels, 2 * channels, 2),
        )
        self.head = nn.Linear(2 * channels * 2 * 2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.view(-1, 1, 8, 8))
        return self.head(h.flatten(1))  # type: ignore[no-any-return]


def patches(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Flat 8x8 images ``[N, 64]`` as ``[N, (8 / size)^2, size^2]`` non-overlapping patches."""
    n, side = x.shape[0], 8 // size
    grid = x.view(n, side, size, side, size).permute(0, 1, 3, 2, 4)
    return grid.reshape(n, side * side, size * size)


class _MixerBlock(nn.Module):
    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.token_mix = nn.Sequential(
            nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens)
        )
        self.channel_mix = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.token_mix(self.norm1(h).transpose(1, 2)).transpose(1, 2)
        return h + self.channel_mix(self.norm2(h))  # type: ignore[no-any-return]


class DigitsMixer(nn.Module):
    """An MLP-Mixer on the digits' sixteen 2x2 patches: token- and channel-mixing MLPs."""

    def __init__(self, width: int = 32, blocks: int = 2, n_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.blocks = nn.Sequential(*(_MixerBlock(16, width) for _ in range(blocks)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(patches(x)))
        return self.head(self.norm(h).mean(dim=1))  # type: ignore[no-any-return]


def _encoder(width: int, heads: int, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True, norm_first=True
    )
    # nested tensors only speed up padded batches, and warn with norm_first
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class DigitsViT(nn.Module):
    """A tiny vision transformer: 2x2 patches, a class token, learned positions, pre-norm."""

    def __init__(self, width: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 17, width))
        self.encoder = _encoder(width, heads, layers)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(patches(x))
        h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1) + self.pos
        return self.head(self.encoder(h)[:, 0])  # type: ignore[no-any-return]


class TokenTransformer(nn.Module):
    """A transformer encoder classifier over token sequences, mean-pooled."""

    def __init__(
        self, vocab: int, length: int, n_classes: int, width: int = 32, layers: int = 2
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(0.02 * torch.randn(1, length, width))
        self.encoder = _encoder(width, 4, layers)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.tokens(x) + self.pos)
        return self.head(h.mean(dim=1))  # type: ignore[no-any-return]


class EmbeddingClassifier(nn.Module):
    """Token embeddings averaged over the sequence (a bag of words), then a linear head."""

    def __init__(self, vocab: int, width: int, n_classes: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokens(x).mean(dim=1))  # type: ignore[no-any-return]


class Autoencoder(nn.Module):
    """A dense autoencoder 64-32-8-32-64 (ReLU), reconstructing the digits' pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, 8),
            nn.ReLU(),
            nn.Linear(8, 32),
            nn.ReLU(),
            nn.Linear(32, 64),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]
