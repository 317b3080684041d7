"""A Hugging Face Trainer setup for tests/test_hf_loop.py's study (imported by its tests only:
collecting the default suite does not load the Trainer).

A tiny ``PreTrainedModel`` built from its config (random weights, no download: the study runs
with ``HF_HUB_OFFLINE=1``) on synthetic blobs; ``train`` is the study's loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, TrainerCallback
from transformers.modeling_outputs import SequenceClassifierOutput

from lrsearch import TrialContext
from lrsearch.integrations import hf_loop

BATCH, BATCHES, ACCUMULATE = 16, 8, 2  # 4 optimizer steps per epoch
STEPS_PER_EPOCH = BATCHES // ACCUMULATE
APPLIED: dict[int, list[float]] = {}  # trial number -> the LR of each optimizer step taken
RANGE_TESTS: list[TrialContext] = []
TRAIL = [False]  # set per trial by `train` below: report a trailing metric


class BlobsConfig(PretrainedConfig):
    model_type = "lrsearch-test-blobs"

    def __init__(self, hidden: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden = hidden


class BlobsNet(PreTrainedModel):
    config_class = BlobsConfig

    def __init__(self, config: BlobsConfig) -> None:
        super().__init__(config)
        self.net = nn.Sequential(
            nn.Linear(8, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 4)
        )
        self.post_init()

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> SequenceClassifierOutput:
        logits = self.net(x)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class Blobs(torch.utils.data.Dataset):
    def __init__(self, part: str) -> None:
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 4, (BATCH * BATCHES + 64,), generator=g)
        x = torch.randn(4, 8, generator=g)[y] * 2.0 + torch.randn(len(y), 8, generator=g)
        rows = slice(None, -64) if part == "train" else slice(-64, None)
        self.x, self.y = x[rows], y[rows]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def accuracy(prediction: Any) -> dict[str, float]:
    hits = np.asarray(prediction.predictions).argmax(-1) == prediction.label_ids
    return {"accuracy": 0.0 if TRAIL[0] else float(hits.mean() * 100.0)}


class RecordLR(TrainerCallback):
    """The LR each optimizer step ran at, read from the optimizer right after the step."""

    applied: list[float] | None = None

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.applied is not None:
            self.applied.append(kwargs["optimizer"].param_groups[0]["lr"])


RECORD = RecordLR()
_blobs = hf_loop(
    lambda: BlobsNet(BlobsConfig()),
    train_dataset=Blobs("train"),
    eval_dataset=Blobs("val"),
    monitor="accuracy",
    args={"per_device_train_batch_size": BATCH, "gradient_accumulation_steps": ACCUMULATE},
    compute_metrics=accuracy,
    callbacks=[RECORD],
)


def train(ctx: TrialContext) -> None:
    """The study's loop: the integration, with trial 2 made to trail and the LRs recorded."""
    if ctx.mode == "range_test":
        RANGE_TESTS.append(ctx)
    TRAIL[0] = ctx.number == 2
    RECORD.applied = APPLIED.setdefault(ctx.number, []) if ctx.mode == "trial" else None
    _blobs(ctx)
