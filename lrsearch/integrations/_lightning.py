"""PyTorch Lightning: your unchanged LightningModule and LightningDataModule, tuned by lrsearch.

:func:`lightning_loop` turns them into the ``train(ctx)`` function a study file names. Per
trial it builds the module and data module, a ``lightning.Trainer`` on the trial's device for
``ctx.epochs`` epochs and a callback that lets the sampled schedule drive the optimizer
``configure_optimizers`` returned (one step before every optimizer step, gradient accumulation
included), logs each step's loss, reports the metric the module logs in validation and stops
the Trainer when the trial is pruned. The study's range test runs through the same Trainer.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from lrsearch import interrupt
from lrsearch.errors import WorkloadError
from lrsearch.integrations._common import (
    Driver,
    StepLosses,
    check_steps_per_epoch,
    refuse_owned,
    set_weight_decay,
)

if TYPE_CHECKING:
    from lrsearch import TrialContext

__all__ = ["LightningLoop", "lightning_loop"]

# Trainer options lrsearch sets from the study and the trial: name -> why.
OWNED = {
    "max_epochs": "the study's epochs",
    "min_epochs": "the study's epochs",
    "max_steps": "epochs x steps_per_epoch",
    "min_steps": "epochs x steps_per_epoch",
    "max_time": "the study's budget",
    "accelerator": "the worker's device",
    "devices": "the worker's device",
    "num_nodes": "one trial per device slot",
    "val_check_interval": "one validation per epoch, reported to the pruner",
    "check_val_every_n_epoch": "one validation per epoch, reported to the pruner",
}
QUIET = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


def _accelerator(device: str) -> dict[str, Any]:
    """Trainer keywords for one lrsearch device: ``cpu``, ``cuda``, ``cuda:N``, ``mps``."""
    kind, _, index = device.partition(":")
    if kind == "cuda":
        return {"accelerator": "gpu", "devices": [int(index)] if index else 1}
    return {"accelerator": kind, "devices": 1}


class _Schedule(L.Callback):
    """The trial inside the Trainer: schedule per optimizer step, losses, reports, stopping."""

    def __init__(self, ctx: TrialContext, monitor: str, override_weight_decay: bool) -> None:
        self.ctx = ctx
        self.monitor = monitor
        self.override_weight_decay = override_weight_decay
        self.losses = StepLosses(ctx)
        self.driver: Driver | None = None
        self.stop: BaseException | None = None  # Ctrl-C seen inside the Trainer
        self._logged = 0  # optimizer steps whose loss has been handed over

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        name = type(pl_module).__name__
        if trainer.lr_scheduler_configs:
            scheduler = type(trainer.lr_scheduler_configs[0].scheduler).__name__
            raise WorkloadError(
                f"{name}.configure_optimizers returns an LR scheduler ({scheduler}); lrsearch's "
                "sampled schedule drives the LR: return the optimizer alone"
            )
        if len(trainer.optimizers) != 1:
            raise WorkloadError(
                f"{name}.configure_optimizers returns {len(trainer.optimizers)} optimizers; "
                "lrsearch drives one: return a single optimizer"
            )
        if not math.isfinite(trainer.num_training_batches):
            raise WorkloadError(
                "the train dataloader has no length, so an epoch has no known number of steps; "
                "set limit_train_batches to the batches per epoch"
            )
        per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        check_steps_per_epoch(
            self.ctx, per_epoch, "batches per epoch / accumulate_grad_batches, Lightning"
        )
        optimizer = trainer.optimizers[0]
        if self.override_weight_decay:
            set_weight_decay(optimizer, self.ctx.weight_decay)
        self.driver = self.ctx.attach(optimizer)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        assert self.driver is not None
        self.driver.step()  # after backward and before the update: LR/momentum for this step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        self.losses.add(outputs)
        assert self.driver is not None
        if self.driver.steps > self._logged:  # this batch closed an optimizer step
            self._logged = self.driver.steps
            self.losses.step_done(self._logged - 1)
        if self.ctx.should_stop:  # diverged, Ctrl-C, or the range test's ramp is over
            self.losses.flush()
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.losses.flush()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.ctx.mode == "range_test":
            return
        self.losses.flush()  # a diverged loss is seen before the report
        if self.ctx.should_stop:
            trainer.should_stop = True
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = sorted(trainer.callback_metrics)
            raise WorkloadError(
                f"{type(pl_module).__name__} logged no {self.monitor!r} in validation "
                f"(logged: {logged}); self.log({self.monitor!r}, ...) in validation_step, "
                "or pass that name as monitor"
            )
        try:
            pruned = self.ctx.report(trainer.current_epoch + 1, float(value))
        except interrupt.StopRequested as exc:  # raised out of fit, Lightning would exit
            self.stop, pruned = exc, True
        if pruned:
            trainer.should_stop = True


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's INFO lines (devices, "fit stopped") and one warning it cannot avoid."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Lightning 2.6's pytree helper on torch >= 2.10: not the user's to fix.
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated"
            )
            # A tiny in-memory dataset needs no loader workers.
            warnings.filterwarnings(
                "ignore", message=r"The '\w+_dataloader' does not have many workers"
            )
            yield
    finally:
        log.setLevel(level)


@dataclass(frozen=True)
class LightningLoop:
    """``train(ctx)`` for a LightningModule; build it with :func:`lightning_loop`."""

    module: Callable[[], L.LightningModule]
    datamodule: Callable[[], L.LightningDataModule] | None
    monitor: str
    override_weight_decay: bool = True
    trainer_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, ctx: TrialContext) -> None:
        """One trial (or range-test repeat) under ``ctx``: the last report is its value."""
        L.seed_everything(ctx.seed, workers=True, verbose=False)
        callback = _Schedule(ctx, self.monitor, self.override_weight_decay)
        kwargs = {**QUIET, **self.trainer_kwargs}
        callbacks = [*kwargs.pop("callbacks", []), callback]
        if ctx.mode == "range_test":
            kwargs["limit_val_batches"] = 0  # the ramp needs training losses only
        with _quiet_lightning():
            trainer = L.Trainer(
                max_epochs=ctx.epochs,
                callbacks=callbacks,
                **_accelerator(ctx.device),
                **kwargs,
            )
            module = self.module()
            datamodule = self.datamodule() if self.datamodule is not None else None
            try:
                trainer.fit(module, datamodule=datamodule)
            except BaseException:
                interrupt.check()  # SIGTERM inside the Trainer: the trial is interrupted
                raise
        if callback.stop is not None:
            raise callback.stop


def lightning_loop(
    module: Callable[[], L.LightningModule],
    datamodule: Callable[[], L.LightningDataModule] | None = None,
    *,
    monitor: str,
    override_weight_decay: bool = True,
    **trainer_kwargs: Any,
) -> LightningLoop:
    """The ``train(ctx)`` function that tunes a LightningModule; name it in a study file.

    Args:
        module: builds a fresh, untrained module (the class itself, or a ``functools.partial``
            with its arguments); its ``configure_optimizers`` returns one optimizer and no
            scheduler: the sampled schedule sets each group's LR (at the groups' ratios) and
            momentum (SGD's ``momentum``, Adam's ``beta1``) before every optimizer step.
        datamodule: builds the data module (None: the module's own dataloaders).
        monitor: the validation metric the module logs (``self.log(monitor, ...)`` in
            ``validation_step``); reported after every epoch. The study file's ``metric``
            and ``direction`` say what it is.
        override_weight_decay: the sampled weight decay replaces that of every parameter
            group that decays (weight_decay > 0); groups at 0 stay at 0.
        **trainer_kwargs: more ``lightning.Trainer`` options (``precision``,
            ``gradient_clip_val``, ``accumulate_grad_batches``, ``callbacks``, ...). Logger,
            checkpointing, progress bar and model summary are off unless set here; epochs
            and device come from the trial.

    Example (``my_project/tune.py``, named in the study file as ``loop =
    "my_project.tune:train"``; not run here):
        >>> train = lightning_loop(MyModule, MyDataModule, monitor="val_acc")  # doctest: +SKIP

    Raises:
        WorkloadError: a Trainer option lrsearch sets is given.
    """
    refuse_owned(trainer_kwargs, OWNED, "Trainer option")
    return LightningLoop(module, datamodule, monitor, override_weight_decay, trainer_kwargs)
