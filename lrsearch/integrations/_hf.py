"""Hugging Face ``transformers.Trainer``: your model, TrainingArguments and datasets, tuned.

:func:`hf_loop` turns them into the ``train(ctx)`` function a study file names. Per trial it
builds ``TrainingArguments`` (your keywords plus the trial's epochs, seed, device and weight
decay, evaluation once per epoch) and a ``Trainer`` whose LR scheduler is lrsearch's: the
sampled schedule sets the LR and Adam's beta1 before every optimizer step (it replaces
``lr_scheduler_type`` and warmup); each step's loss goes to the trial, each epoch's evaluation
is reported, and a pruned trial stops training. The study's range test runs through the same
Trainer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from lrsearch.errors import WorkloadError
from lrsearch.integrations._common import (
    Driver,
    StepLosses,
    check_steps_per_epoch,
    refuse_owned,
)

if TYPE_CHECKING:
    from lrsearch import TrialContext

__all__ = ["HFLoop", "hf_loop"]

# TrainingArguments lrsearch sets from the study and the trial: name -> why.
OWNED = {
    "num_train_epochs": "the study's epochs",
    "max_steps": "epochs x steps_per_epoch",
    "lr_scheduler_type": "the sampled schedule is the scheduler",
    "lr_scheduler_kwargs": "the sampled schedule is the scheduler",
    "warmup_ratio": "the sampled schedule has its own warm-up",
    "warmup_steps": "the sampled schedule has its own warm-up",
    "eval_strategy": "one evaluation per epoch, reported to the pruner",
    "seed": "the trial's seed",
    "data_seed": "the trial's seed",
    "use_cpu": "the worker's device",
    "weight_decay": "the sampled weight decay",
}
QUIET = {
    "report_to": "none",  # lrsearch records the trial in MLflow itself
    "disable_tqdm": True,
    "logging_strategy": "no",
    "save_strategy": "no",
}


class _HeldScheduler:
    """Where the Trainer expects its scheduler: it steps nothing (the schedule drives the
    optimizer before each step) and reports the LR in force, for the Trainer's own logs."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self, *args: Any, **kwargs: Any) -> None:
        pass

    def get_last_lr(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _driven(base: type[Trainer], losses: StepLosses) -> type[Trainer]:
    """``base`` with lrsearch's scheduler and each micro-batch's loss handed to ``losses``."""

    class Driven(base):  # type: ignore[valid-type,misc]
        def create_scheduler(
            self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
        ) -> Any:
            if getattr(self, "lr_scheduler", None) is None:
                self.lr_scheduler = _HeldScheduler(optimizer or self.optimizer)
            return self.lr_scheduler

        def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            loss = super().training_step(*args, **kwargs)
            losses.add(loss)  # already over the accumulation steps: the window sums to the mean
            return loss  # type: ignore[no-any-return]

    Driven.__name__ = Driven.__qualname__ = f"Lrsearch{base.__name__}"
    return Driven


def _unwrapped(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper (its param groups are the same)."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer  # type: ignore[no-any-return]


class _Schedule(TrainerCallback):
    """The trial inside the Trainer: schedule per optimizer step, losses, reports, stopping."""

    def __init__(self, ctx: TrialContext, monitor: str, losses: StepLosses) -> None:
        self.ctx = ctx
        self.monitor = monitor
        self.losses = losses
        self.driver: Driver | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        check_steps_per_epoch(
            self.ctx,
            state.max_steps // max(self.ctx.epochs, 1),
            "batches per epoch / gradient_accumulation_steps, Hugging Face Trainer",
        )
        self.driver = self.ctx.attach(_unwrapped(kwargs["optimizer"]))

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        assert self.driver is not None
        self.driver.step()  # after backward and clipping, before the update

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        assert self.driver is not None
        self.losses.step_done(self.driver.steps - 1)
        if self.ctx.should_stop:  # diverged, Ctrl-C, or the range test's ramp is over
            self.losses.flush()
            control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.losses.flush()

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        metrics: Mapping[str, float] = kwargs["metrics"]
        self.losses.flush()  # a diverged loss is seen before the report
        if self.ctx.should_stop:
            control.should_training_stop = True
            return
        key = self.monitor if self.monitor in metrics else f"eval_{self.monitor}"
        if key not in metrics:
            raise WorkloadError(
                f"the Trainer's evaluation has no {self.monitor!r} (it has {sorted(metrics)}); "
                "return it from compute_metrics, or pass one of those names as monitor"
            )
        if self.ctx.report(round(state.epoch), float(metrics[key])):
            control.should_training_stop = True


@dataclass(frozen=True)
class HFLoop:
    """``train(ctx)`` for a Hugging Face Trainer; build it with :func:`hf_loop`."""

    model_init: Callable[[], Any]
    train_dataset: Any
    eval_dataset: Any
    monitor: str
    args: Mapping[str, Any] = field(default_factory=dict)
    trainer_class: type[Trainer] = Trainer
    trainer_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def _arguments(self, ctx: TrialContext, output_dir: str) -> TrainingArguments:
        if ctx.device.startswith("cuda:"):
            torch.cuda.set_device(ctx.device)  # the Trainer trains on the current device
        trial = {
            "num_train_epochs": ctx.epochs,
            "eval_strategy": "no" if ctx.mode == "range_test" else "epoch",
            "seed": ctx.seed,
            "data_seed": ctx.seed,
            "use_cpu": ctx.device == "cpu",
            "weight_decay": ctx.weight_decay,
        }
        return TrainingArguments(**{**QUIET, "output_dir": output_dir, **self.args, **trial})

    def __call__(self, ctx: TrialContext) -> None:
        """One trial (or range-test repeat) under ``ctx``: the last report is its value."""
        losses = StepLosses(ctx)
        kwargs = dict(self.trainer_kwargs)
        callbacks = [*kwargs.pop("callbacks", []), _Schedule(ctx, self.monitor, losses)]
        with tempfile.TemporaryDirectory(prefix="lrsearch-hf-") as output_dir:
            trainer = _driven(self.trainer_class, losses)(
                model_init=self.model_init,
                args=self._arguments(ctx, output_dir),
                train_dataset=self.train_dataset,
                eval_dataset=self.eval_dataset,
                callbacks=callbacks,
                **kwargs,
            )
            trainer.remove_callback(PrinterCallback)  # no metric dicts printed per log
            trainer.train()


def hf_loop(
    model_init: Callable[[], Any],
    *,
    train_dataset: Any,
    eval_dataset: Any,
    monitor: str,
    args: Mapping[str, Any] | None = None,
    trainer_class: type[Trainer] = Trainer,
    **trainer_kwargs: Any,
) -> HFLoop:
    """The ``train(ctx)`` function that tunes a Hugging Face ``Trainer``; name it in a study.

    Args:
        model_init: builds a fresh, untrained model (the Trainer's ``model_init``); called
            after the trial's seed is set.
        train_dataset: the training set (its batches per epoch over
            ``gradient_accumulation_steps`` are the study file's ``steps_per_epoch``).
        eval_dataset: the validation set, evaluated after every epoch.
        monitor: the evaluation metric reported each epoch: a ``compute_metrics`` key
            (``"accuracy"`` finds ``eval_accuracy``) or ``"loss"``.
        args: ``TrainingArguments`` keywords (batch size, ``optim``, ``max_grad_norm``,
            ``adam_beta2``, ...). Epochs, seed, device, weight decay, evaluation strategy,
            scheduler and warm-up come from the trial; ``learning_rate`` only sets the base
            the schedule scales (groups keep their ratios). Logging, saving and reporting
            are off and ``output_dir`` is temporary unless set here.
        trainer_class: a ``Trainer`` subclass of yours (custom ``compute_loss``, ...).
        **trainer_kwargs: more ``Trainer`` arguments (``compute_metrics``,
            ``data_collator``, ``callbacks``, ...).

    Example (``my_project/tune.py``, named in the study file as ``loop =
    "my_project.tune:train"``; not run here):
        >>> train = hf_loop(                                          # doctest: +SKIP
        ...     lambda: AutoModelForSequenceClassification.from_config(config),
        ...     train_dataset=train_set, eval_dataset=val_set, monitor="accuracy",
        ...     args={"per_device_train_batch_size": 32}, compute_metrics=accuracy,
        ... )

    Raises:
        WorkloadError: a TrainingArguments keyword lrsearch sets is given.
    """
    args = dict(args or {})
    refuse_owned(args, OWNED, "TrainingArguments keyword")
    return HFLoop(
        model_init, train_dataset, eval_dataset, monitor, args, trainer_class, trainer_kwargs
    )
