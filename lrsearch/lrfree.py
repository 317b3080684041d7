"""LR-free optimizers: Schedule-Free AdamW and Prodigy, built and handled as their docs say.

A study or workload names them as optimizers (``schedulefree_adamw``, ``prodigy``); the
factories here build them at their recommended settings, and :func:`optimizer_modes` gives the
training loop the one thing such an optimizer needs from it: Schedule-Free's
``optimizer.train()`` before training and ``optimizer.eval()`` before evaluation (its
evaluation weights are an average, not the weights it steps), with BatchNorm statistics
recomputed at those averaged weights (its README's caveat: the running statistics were
gathered at the other point).

Both packages are optional (``pip install lrsearch[lrfree]``); naming one without its
package is a one-line :class:`~lrsearch.errors.WorkloadError`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from lrsearch.errors import WorkloadError

if TYPE_CHECKING:
    from lrsearch.workloads import Workload

__all__ = [
    "BN_BATCHES",
    "LRFREE_OPTIMIZERS",
    "OptimizerModes",
    "lrfree_factory",
    "optimizer_modes",
    "prodigy",
    "schedulefree_adamw",
]

# forward passes that refresh BatchNorm statistics at Schedule-Free's evaluation weights
# (its README's example: 50 training batches)
BN_BATCHES = 50


def _load(package: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(package), name)
    except ImportError:
        raise WorkloadError(
            f"optimizer {name} needs the {package!r} package — fix: pip install lrsearch[lrfree]"
        ) from None


def schedulefree_adamw(
    params: Iterable[Any], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``schedulefree.AdamWScheduleFree`` at its defaults, in train mode.

    Its warm-up is the schedule's (``lrsearch.schedules.Warmup`` uses the package's own
    formula), so ``warmup_steps`` stays 0 here. Returned in train mode, so that anything that
    steps it (the range test, a loop) may; :func:`optimizer_modes` switches it after that.
    """
    cls = _load("schedulefree", "AdamWScheduleFree")
    optimizer: torch.optim.Optimizer = cls(params, lr=lr, weight_decay=weight_decay)
    optimizer.train()  # type: ignore[attr-defined]
    return optimizer


def prodigy(params: Iterable[Any], lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``prodigyopt.Prodigy`` as its README recommends with a warm-up: ``safeguard_warmup``
    and ``use_bias_correction`` on, decoupled weight decay; ``lr`` is its multiplier (1.0)
    and ``d_coef`` comes from the schedule (``group_settings``)."""
    cls = _load("prodigyopt", "Prodigy")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Using decoupled weight decay"
        optimizer: torch.optim.Optimizer = cls(
            params,
            lr=lr,
            weight_decay=weight_decay,
            safeguard_warmup=True,
            use_bias_correction=True,
        )
    return optimizer


LRFREE_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "schedulefree_adamw": schedulefree_adamw,
    "prodigy": prodigy,
}
"""Optimizer names a workload or study may use -> their factories."""
_PACKAGES = {
    "schedulefree_adamw": ("schedulefree", "AdamWScheduleFree"),
    "prodigy": ("prodigyopt", "Prodigy"),
}


def lrfree_factory(name: str) -> Callable[..., torch.optim.Optimizer]:
    """The factory of LR-free optimizer ``name``, its package checked to be installed.

    Raises:
        WorkloadError: the package is missing (one line: what to install).
    """
    package, cls = _PACKAGES[name]
    if importlib.util.find_spec(package) is None:
        _load(package, cls)
    return LRFREE_OPTIMIZERS[name]


class OptimizerModes:
    """What the training loop calls around evaluation; nothing, for most optimizers."""

    def train(self) -> None:
        """Before a training epoch."""

    def eval(self) -> None:
        """Before evaluating (validation, test)."""


class _ScheduleFree(OptimizerModes):
    """Schedule-Free's train/eval switch, with BatchNorm statistics recomputed at eval."""

    def __init__(self, optimizer: Any, model: torch.nn.Module, refresh: Callable[[], None]):
        self.optimizer, self.model, self.refresh = optimizer, model, refresh

    def train(self) -> None:
        self.optimizer.train()

    def eval(self) -> None:
        self.optimizer.eval()
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            self.refresh()


def optimizer_modes(
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module,
    workload: Workload,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> OptimizerModes:
    """The train/eval hook ``optimizer`` needs: any optimizer with ``train()`` and ``eval()``
    (Schedule-Free's, whatever built it) gets switched; others get a hook that does nothing."""
    if not (
        callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))
    ):
        return OptimizerModes()
    batches = workload.train_batches(batch_size, seed=seed + 1, device=device)
    n = min(BN_BATCHES, workload.steps_per_epoch(batch_size) * workload.accumulate)
    rounds = itertools.count()

    @torch.no_grad()
    def refresh() -> None:
        # training-mode forward passes at the evaluation weights; the RNG (dropout) is left
        # as it was, so training goes on exactly as without them
        cuda = device.type == "cuda"
        devices = (
            [torch.cuda.current_device() if device.index is None else device.index] if cuda else []
        )
        with torch.random.fork_rng(devices=devices):
            model.train()
            for batch in itertools.islice(batches.epoch(next(rounds)), n):
                workload.batch_loss(model, batch)
            model.eval()

    return _ScheduleFree(optimizer, model, refresh)
