"""A character-level GPT on the pydoc topics that ship with Python (no download).

The text is Python's own ``pydoc_data.topics`` (about 465k characters), cut into contiguous
80 / 10 / 10 % blocks for train / validation / test. Training samples random windows, drawn
afresh each epoch from (epoch, seed); validation and test are scored on fixed, non-overlapping
windows, in bits per character.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lrsearch.workloads._metrics import Metric
from lrsearch.workloads._workload import Workload

BPC = Metric("bpc", "minimize")  # bits per character, from eval_fn
Windows = tuple[torch.Tensor, torch.Tensor]


@functools.cache
def pydoc_text() -> str:
    """Python's bundled pydoc topics, joined in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def encode_splits(text: str) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The vocabulary and the text's train / val / test blocks (80 / 10 / 10 %) as char ids."""
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    a, b = int(0.8 * len(ids)), int(0.9 * len(ids))
    return vocab, ids[:a], ids[a:b], ids[b:]


def fixed_windows(ids: torch.Tensor, block_size: int) -> Windows:
    """Non-overlapping ``(inputs, next-char targets)`` windows covering ``ids``."""
    n = (len(ids) - 1) // block_size
    x = ids[: n * block_size].view(n, block_size)
    y = ids[1 : n * block_size + 1].view(n, block_size)
    return x, y


class RandomWindows(Iterable[Windows]):
    """One epoch of ``n_batches`` batches of random windows, drawn from (epoch, seed)."""

    def __init__(
        self, ids: torch.Tensor, *, block_size: int, batch_size: int, n_batches: int, seed: int
    ) -> None:
        self.ids, self.block_size, self.batch_size = ids, block_size, batch_size
        self.n_batches, self.seed = n_batches, seed

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[Windows]:
        g = torch.Generator().manual_seed(self.seed)
        offsets = torch.arange(self.block_size)
        for _ in range(self.n_batches):
            starts = torch.randint(
                len(self.ids) - self.block_size, (self.batch_size, 1), generator=g
            )
            yield self.ids[starts + offsets], self.ids[starts + offsets + 1]


# --- the model ---------------------------------------------------------------------------------


class _Block(nn.Module):
    """A pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
            for z in self.qkv(x).split(c, dim=2)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class CharGPT(nn.Module):
    """A small GPT: token + learned position embeddings, pre-norm blocks, a final LayerNorm and
    a linear head (its weight tied to the token embedding's when ``tie_weights``)."""

    def __init__(
        self,
        vocab_size: int,
        *,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*(_Block(n_embd, n_head) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.tok.weight
        self.apply(_init)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        h = self.blocks(self.tok(idx) + self.pos(positions))
        return self.head(self.ln_f(h))


def _init(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decayed, not decayed)``: the Linear layers' weight matrices, and everything else
    (biases, LayerNorm gains, embeddings, and a head tied to an embedding)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    matrices = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.Linear) and id(m.weight) not in embeddings  # a tied head is not
    }
    params = list(model.parameters())  # each shared parameter once
    return [p for p in params if id(p) in matrices], [p for p in params if id(p) not in matrices]


def adamw_two_groups(
    model: nn.Module, lr: float, momentum: float | None = None, weight_decay: float = 0.0
) -> torch.optim.AdamW:
    """AdamW whose weight decay (the run's) falls on weight matrices only, not on norms,
    biases or embeddings; ``momentum`` is beta1."""
    decayed, rest = param_groups(model)
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    beta1 = 0.9 if momentum is None else momentum
    return torch.optim.AdamW(groups, lr=lr, betas=(beta1, 0.99))


def next_char_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Mean next-character cross-entropy (nats) of a ``(inputs, targets)`` batch of windows."""
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def bits_per_char(model: nn.Module, batches: Iterable[Any]) -> tuple[float, float]:
    """``(loss in nats, bits per character)`` over every window of a held-out split."""
    total, count = 0.0, 0
    for batch in batches:
        n = batch[1].numel()
        total += float(next_char_loss(model, batch)) * n
        count += n
    loss = total / count
    return loss, loss / math.log(2)


def char_transformer(
    *,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 64,
    block_size: int = 64,
    batch_size: int = 32,
    steps_per_epoch: int = 25,
    epochs: int = 10,
    tie_weights: bool = True,
    precision: str | None = None,
) -> Workload:
    """A character-level GPT on Python's pydoc topics, scored in bits per character.

    Defaults are CPU-sized (about 0.1M parameters, an epoch in a few seconds); ``n_layer``,
    ``n_embd``, ``block_size``, ``batch_size`` and ``steps_per_epoch`` scale it up on a GPU.
    AdamW (weight decay on weight matrices only), gradient clipping at 1.0, bf16 autocast
    where CUDA is available (``precision`` overrides).
    """
    if n_embd % n_head:
        raise ValueError(f"n_embd must be a multiple of n_head, got {n_embd=} {n_head=}")
    vocab, train, val, test = encode_splits(pydoc_text())
    model_args = {"block_size": block_size, "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd}

    def train_windows(epoch: int, seed: int) -> RandomWindows:
        return RandomWindows(
            train,
            block_size=block_size,
            batch_size=batch_size,
            n_batches=steps_per_epoch,
            seed=seed * 1_000_003 + epoch,
        )

    return Workload(
        name="char-transformer",
        build_model=lambda: CharGPT(len(vocab), tie_weights=tie_weights, **model_args),
        train_data=train_windows,
        val_data=fixed_windows(val, block_size),
        test_data=fixed_windows(test, block_size),
        step_fn=next_char_loss,
        eval_fn=bits_per_char,
        metric=BPC,
        optimizer=adamw_two_groups,
        batch_size=batch_size,
        epochs=epochs,
        batches_per_epoch=steps_per_epoch,
        grad_clip=1.0,
        precision=precision or ("bf16" if torch.cuda.is_available() else "fp32"),  # type: ignore[arg-type]
        info={
            "data": "pydoc_data.topics (ships with Python), 80/10/10 contiguous split",
            "chars": {"train": len(train), "val": len(val), "test": len(test)},
            "vocab_size": len(vocab),
            "model": f"GPT {n_layer} layers x {n_embd} wide, {n_head} heads, context {block_size}",
        },
    )
