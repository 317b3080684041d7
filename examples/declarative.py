"""The task of ``own_loop.py`` as a declarative Workload: lrsearch runs the loop.

The same digits loader, model, AdamW with two parameter groups and gradient clipping;
lrsearch's built-in loop (``lrsearch.train``) trains it::

    lrsearch run examples/declarative.toml --devices cpu
"""

from __future__ import annotations

import torch
from torch import nn

from examples.own_loop import BATCH_SIZE, EPOCHS, GRAD_CLIP, build_model, digits, param_groups
from lrsearch.workloads import ACCURACY, Workload


def adamw(model: nn.Module, lr: float, *, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Both groups at ``lr`` (the schedule keeps their ratio), decay on weights only."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)


def digits_workload(*, epochs: int = EPOCHS, seed: int = 0) -> Workload:
    loader, val, test = digits(seed)
    return Workload(
        name="examples.declarative:digits_workload",
        build_model=build_model,
        train_data=loader,
        val_data=val,
        test_data=test,  # scored once after the last epoch, as own_loop.py's report_test
        loss_fn=nn.functional.cross_entropy,
        metric=ACCURACY,
        optimizer=adamw,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        grad_clip=GRAD_CLIP,
    )
