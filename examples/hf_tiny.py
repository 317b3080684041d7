"""A Hugging Face ``Trainer`` setup, tuned by lrsearch: a tiny ``PreTrainedModel`` built from its
config (randomly initialised, no download) on scikit-learn's bundled 8x8 digits.

Alone, it trains once under the Trainer's own linear schedule::

    python examples/hf_tiny.py

lrsearch calls ``train(ctx)`` once per trial (and once per range-test repeat); the study file
names it (``loop = "examples.hf_tiny:train"``)::

    lrsearch run examples/hf_tiny.toml --devices cpu
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import EvalPrediction, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from lrsearch.integrations import hf_loop

BATCH_SIZE = 64


class DigitsConfig(PretrainedConfig):
    model_type = "lrsearch-digits-mlp"

    def __init__(self, hidden: int = 128, num_labels: int = 10, **kwargs: Any) -> None:
        super().__init__(num_labels=num_labels, **kwargs)
        self.hidden = hidden


class DigitsMLP(PreTrainedModel):
    """A Transformers model like any other: a config, ``forward`` returning the loss."""

    config_class = DigitsConfig

    def __init__(self, config: DigitsConfig) -> None:
        super().__init__(config)
        self.net = nn.Sequential(
            nn.Linear(64, config.hidden),
            nn.LayerNorm(config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.num_labels),
        )
        self.post_init()

    def forward(
        self, pixels: torch.Tensor, labels: torch.Tensor | None = None
    ) -> SequenceClassifierOutput:
        logits = self.net(pixels)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class Digits(torch.utils.data.Dataset):
    """The digits: ``pixels`` (64 intensities in [0, 1]) and ``labels``; a fixed split."""

    def __init__(self, part: str) -> None:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(x))
        rows = order[:1437] if part == "train" else order[1437:]
        self.pixels = torch.tensor(x[rows] / 16.0, dtype=torch.float32)
        self.labels = torch.tensor(y[rows])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixels": self.pixels[i], "labels": self.labels[i]}


def build_model() -> DigitsMLP:
    return DigitsMLP(DigitsConfig())


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    logits = np.asarray(prediction.predictions)
    return {"accuracy": float((logits.argmax(-1) == prediction.label_ids).mean() * 100.0)}


ARGS = {
    "per_device_train_batch_size": BATCH_SIZE,
    "per_device_eval_batch_size": 360,
    "dataloader_drop_last": True,  # 1437 // 64 = 22 steps: the study file's steps_per_epoch
    "max_grad_norm": 1.0,
}

# What the study file names: the sampled schedule replaces the Trainer's LR scheduler.
train = hf_loop(
    build_model,
    train_dataset=Digits("train"),
    eval_dataset=Digits("val"),
    monitor="accuracy",
    args=ARGS,
    compute_metrics=accuracy,
)


def main() -> None:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir="hf-tiny-out", num_train_epochs=2, learning_rate=1e-3, eval_strategy="epoch",
        save_strategy="no", report_to="none", use_cpu=True, **ARGS,
    )  # fmt: skip
    trainer = Trainer(
        model_init=build_model,
        args=args,
        train_dataset=Digits("train"),
        eval_dataset=Digits("val"),
        compute_metrics=accuracy,
    )
    trainer.train()
    print(f"val accuracy {trainer.evaluate()['eval_accuracy']:.1f}%")


if __name__ == "__main__":
    main()
