"""Your own PyTorch training script, tuned by lrsearch: digits, an MLP, AdamW, clipping.

Alone, it trains once under a fixed one-cycle schedule::

    python examples/own_loop.py

lrsearch calls ``train(ctx)`` once per trial (and once per range-test repeat) with the sampled
schedule and weight decay; the study file names it (``loop = "examples.own_loop:train"``)::

    lrsearch run examples/own_loop.toml --devices cpu
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrsearch import OneCycle, TrialContext

BATCH_SIZE = 64
GRAD_CLIP = 1.0
EPOCHS = 2


Split = tuple[torch.Tensor, torch.Tensor]


def digits(seed: int) -> tuple[DataLoader, Split, Split]:
    """scikit-learn's bundled 8x8 digits (no download): a shuffling loader, validation and
    test tensors."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))  # a fixed split
    train, val, test = order[:1437], order[1437:1617], order[1617:]
    loader = DataLoader(
        TensorDataset(x[train], y[train]),
        batch_size=BATCH_SIZE,
        shuffle=True,
        drop_last=True,  # 22 full batches: the study file's steps_per_epoch
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, (x[val], y[val]), (x[test], y[test])


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.LayerNorm(128), nn.ReLU(), nn.Linear(128, 10))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight matrices decay; biases and norm parameters do not."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean() * 100.0)


def train(ctx: TrialContext) -> float | None:
    """One run under ``ctx``'s schedule; reports validation accuracy each epoch."""
    torch.manual_seed(ctx.seed)
    loader, (x_val, y_val), (x_test, y_test) = digits(ctx.seed)
    model = build_model().to(ctx.device)
    x_val, y_val = x_val.to(ctx.device), y_val.to(ctx.device)
    # The LR given here only sets the groups' ratios: the schedule drives every step.
    optimizer = torch.optim.AdamW(param_groups(model, ctx.weight_decay), lr=1e-3)
    driver = ctx.attach(optimizer)
    step = 0
    for epoch in range(1, ctx.epochs + 1):
        model.train()
        for x, y in loader:
            driver.step()  # LR and momentum (AdamW's beta1) for this step
            loss = nn.functional.cross_entropy(model(x.to(ctx.device)), y.to(ctx.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            # a tensor: read back every sync_every steps (lr, momentum, train_loss to MLflow)
            ctx.log(step, loss=loss.detach())
            step += 1
            if ctx.should_stop:  # diverged, Ctrl-C, or (range test) the ramp is over
                return None
        if ctx.report(epoch, accuracy(model, x_val, y_val)):  # True: pruned
            return None
    # held out: recorded with the trial, never searched on
    ctx.report_test(accuracy(model, x_test.to(ctx.device), y_test.to(ctx.device)))
    return None  # the last report is the trial's value


def main() -> None:
    loader, _, _ = digits(0)
    steps = EPOCHS * len(loader)
    ctx = TrialContext(
        OneCycle(3e-3, steps),
        epochs=EPOCHS,
        steps_per_epoch=len(loader),
        params={"weight_decay": 1e-4},
    )
    train(ctx)
    for epoch, value in ctx.reports:
        print(f"epoch {epoch}: val accuracy {value:.1f}%")
    print(f"test accuracy {ctx.test_metric:.1f}%")


if __name__ == "__main__":
    main()
