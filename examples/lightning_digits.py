"""A PyTorch Lightning module and data module, tuned by lrsearch unchanged: digits, an MLP.

Alone, it trains once with the module's own Adam LR::

    python examples/lightning_digits.py

lrsearch calls ``train(ctx)`` once per trial (and once per range-test repeat); the study file
names it (``loop = "examples.lightning_digits:train"``)::

    lrsearch run examples/lightning_digits.toml --devices cpu
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrsearch.integrations import lightning_loop

BATCH_SIZE = 64


class DigitsData(L.LightningDataModule):
    """scikit-learn's bundled 8x8 digits (no download), a fixed train/validation split."""

    def setup(self, stage: str | None = None) -> None:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        self.train_set = TensorDataset(x[order[:1437]], y[order[:1437]])
        self.val_set = TensorDataset(x[order[1437:]], y[order[1437:]])

    def train_dataloader(self) -> DataLoader:
        # 1437 // 64 = 22 full batches: the study file's steps_per_epoch
        return DataLoader(self.train_set, batch_size=BATCH_SIZE, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=len(self.val_set))


class DigitsMLP(L.LightningModule):
    """An ordinary LightningModule: lrsearch needs no change to it."""

    def __init__(self, lr: float = 1e-3, weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(64, 128), nn.LayerNorm(128), nn.ReLU(), nn.Linear(128, 10)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
        x, y = batch
        accuracy = (self.net(x).argmax(dim=1) == y).float().mean() * 100.0
        self.log("val_acc", accuracy)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Under lrsearch the sampled schedule sets the LR and beta1 every step, and the sampled
        # weight decay replaces this one; biases and norms stay undecayed.
        decay = [p for p in self.parameters() if p.dim() >= 2]
        rest = [p for p in self.parameters() if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": self.hparams["weight_decay"]},
            {"params": rest, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.hparams["lr"])


# What the study file names: a trial builds DigitsMLP() and DigitsData() afresh.
train = lightning_loop(DigitsMLP, DigitsData, monitor="val_acc")


def main() -> None:
    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(DigitsMLP(), datamodule=DigitsData())
    print(f"val accuracy {float(trainer.callback_metrics['val_acc']):.1f}%")


if __name__ == "__main__":
    main()
