"""The workload: model, data, loss, metric and its usual training settings, checked."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from lrsearch.errors import WorkloadError
from lrsearch.workloads._batches import (
    Batches,
    LossFn,
    StepFn,
    compute_loss,
    eval_batches,
    is_factory,
    is_tensor_pair,
)
from lrsearch.workloads._metrics import MEAN_LOSS, Metric
from lrsearch.workloads._optimizers import (
    OPTIMIZERS,
    OptimizerFactory,
    builtin_optimizer,
    check_optimizer,
    from_factory,
    optimizer_class,
    takes_lr,
)

__all__ = ["PRECISIONS", "EvalFn", "Precision", "Workload"]

Precision = Literal["fp32", "bf16", "fp16"]
EvalFn = Callable[[nn.Module, Iterable[Any]], tuple[Any, Any]]
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Workload:
    """A training task: model, data, loss, metric and its usual training settings.

    **Data.** ``train_data`` is one of

    - a tuple ``(inputs, targets)`` of in-memory tensors: the fast path; they move to the
      device once and are shuffled there each epoch (``batch_size`` applies);
    - a re-iterable of batches, e.g. a ``torch.utils.data.DataLoader``: iterated once per
      epoch, each batch moved to the device as it is used; the loader sets the batch size;
    - a factory ``train_loader(epoch, seed) -> iterable of batches``, called at the start of
      every epoch, so shuffling and augmentation are reproducible under the run's seed.

    ``val_data`` is tensors or a re-iterable. A batch is ``(inputs, targets)`` unless the
    workload has a ``step_fn``, which takes batches as they come.

    **Honest scoring.** ``test_data`` (optional, like ``val_data``) is held out from the
    search: :func:`~lrsearch.training.train` scores it once, after the last epoch, and never
    shows it to a callback, so trials are selected on validation and reported on test.

    **Steps.** An epoch has ``len(loader)`` batches (or ``batches_per_epoch``, which a loader
    without a length must state); ``accumulate`` of them make one optimizer step, so
    :meth:`steps_per_epoch` counts optimizer steps, the unit of every schedule.

    **Options** (:attr:`OPTIONS`) change with :meth:`with_options` (a study file's overrides
    go through it), which checks them again.

    Attributes:
        name: registry name or import path.
        build_model: returns a freshly initialised model (seed torch before calling).
        train_data: tensors, a re-iterable of batches, or a ``(epoch, seed)`` factory.
        val_data: ``(inputs, targets)`` tensors or a re-iterable of batches.
        test_data: like ``val_data``; None where the workload has no test split.
        loss_fn: ``loss_fn(outputs, targets)`` -> scalar tensor; None with a ``step_fn``.
        metric: the validation metric; :data:`MEAN_LOSS` (the default) is the loss itself.
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, the name of any ``torch.optim``
            optimizer (``"Adagrad"``), an optimizer class, or a factory: ``factory(model,
            lr)`` building its param groups at multiples of ``lr``, or ``factory(model)``
            with LRs of its own (the first group's LR is then the schedule's). A factory
            whose first parameter is named ``params`` (an optimizer class, a
            ``functools.partial`` of one) gets ``model.parameters()``, any other the model;
            one that names ``momentum``/``weight_decay`` parameters gets the run's values.
            The schedule scales every group's LR, keeping their ratios.
        batch_size: mini-batch size for tensor data (a loader's own, for the record).
        epochs: default number of epochs.
        info: free-form facts logged with a study (data source, parameter count, ...).
        grad_clip: clip the global gradient norm to this before each step (None: off).
        accumulate: micro-batches per optimizer step; each one's loss is divided by it.
        precision: ``"fp32"``, ``"bf16"`` (autocast; CUDA or CPU) or ``"fp16"`` (autocast
            with a gradient scaler; CUDA only).
        step_fn: ``step_fn(model, batch) -> scalar loss tensor``, for models whose loss is
            not ``loss_fn(model(inputs), targets)`` (a language model, say).
        eval_fn: ``eval_fn(model, val_batches) -> (loss, metric)``; without it a ``step_fn``
            workload's validation loss is its step_fn's mean over the validation batches.
        batches_per_epoch: batches that make an epoch, for a loader without ``len()`` (or
            to cut a long one short).
    """

    name: str
    build_model: Callable[[], nn.Module]
    train_data: Any
    val_data: Any
    loss_fn: LossFn | None = None
    metric: Metric = MEAN_LOSS
    optimizer: str | type[torch.optim.Optimizer] | OptimizerFactory = "sgd"
    batch_size: int = 100
    epochs: int = 10
    info: dict[str, Any] = field(default_factory=dict)
    grad_clip: float | None = None
    accumulate: int = 1
    precision: Precision = "fp32"
    step_fn: StepFn | None = None
    eval_fn: EvalFn | None = None
    batches_per_epoch: int | None = None
    test_data: Any = None

    OPTIONS: ClassVar[tuple[str, ...]] = (
        "optimizer",
        "batch_size",
        "epochs",
        "grad_clip",
        "accumulate",
        "precision",
        "batches_per_epoch",
    )

    def __post_init__(self) -> None:
        check_optimizer(self.optimizer)
        _check_options(self)
        _check_data(self.train_data, "train_data", factory=True)
        _check_data(self.val_data, "val_data", factory=False)
        if self.test_data is not None:
            _check_data(self.test_data, "test_data", factory=False)
        _check_losses(self)

    def with_options(self, **options: Any) -> Workload:
        """A copy with some of :attr:`OPTIONS` changed (and checked again).

        Example:
            >>> from lrsearch.workloads import get_workload
            >>> w = get_workload("digits-mlp").with_options(optimizer="adamw", grad_clip=1.0)
            >>> w.optimizer, w.grad_clip
            ('adamw', 1.0)

        Raises:
            ValueError: an unknown option or a bad value.
        """
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown workload option(s) {', '.join(unknown)}; "
                f"options are {', '.join(self.OPTIONS)}"
            )
        return dataclasses.replace(self, **options)

    @property
    def in_memory(self) -> bool:
        """Whether the training data is ``(inputs, targets)`` tensors (the fast path)."""
        return is_tensor_pair(self.train_data)

    @property
    def n_train(self) -> int | None:
        """Training examples, where known (tensors, or a loader over a sized dataset)."""
        if self.in_memory:
            return len(self.train_data[0])
        dataset = getattr(self.train_data, "dataset", None)
        return len(dataset) if hasattr(dataset, "__len__") else None  # type: ignore[arg-type]

    @property
    def optimizer_name(self) -> str:
        """The optimizer as text, for records: its name, or the factory's qualified name."""
        if isinstance(self.optimizer, str):
            return self.optimizer
        factory = getattr(self.optimizer, "func", self.optimizer)  # a functools.partial's
        return getattr(factory, "__qualname__", type(factory).__name__)

    @property
    def optimizer_takes_lr(self) -> bool:
        """Whether :meth:`make_optimizer` builds at the given LR (not a factory(model))."""
        if isinstance(self.optimizer, str) or not is_factory(self.optimizer):
            return True
        return takes_lr(self.optimizer)

    def steps_per_epoch(self, batch_size: int | None = None) -> int:
        """Optimizer steps in one epoch: micro-batches // ``accumulate``.

        Tensor data has ``len(inputs) // batch_size`` micro-batches (the last, partial batch
        is dropped); a loader has ``batches_per_epoch`` or ``len(loader)``.

        Raises:
            WorkloadError: a loader's batch size asked to change, a loader without a length
                and no ``batches_per_epoch``, or too few batches for one step.
        """
        micro = self._micro_batches(batch_size)
        steps = micro // self.accumulate
        if steps < 1:
            raise WorkloadError(
                f"workload {self.name!r}: an epoch has {micro} batch(es), fewer than "
                f"accumulate={self.accumulate} — fix: lower accumulate or batch_size"
            )
        return steps

    def _micro_batches(self, batch_size: int | None) -> int:
        if self.in_memory:
            return max(1, len(self.train_data[0]) // (batch_size or self.batch_size))
        if batch_size is not None and batch_size != self.batch_size:
            raise WorkloadError(
                f"workload {self.name!r}: batch_size={batch_size} cannot apply, its training "
                "data is a loader that sets its own batch size — fix: leave batch_size unset "
                "(or build the loader with that batch size)"
            )
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        data = self.train_data(0, 0) if is_factory(self.train_data) else self.train_data
        if not hasattr(data, "__len__"):
            raise WorkloadError(
                f"workload {self.name!r}: its training data has no len() — fix: set "
                "batches_per_epoch (batches in one epoch) on the Workload"
            )
        return len(data)

    def train_batches(self, batch_size: int, *, seed: int, device: torch.device) -> Batches:
        """The training data as :class:`Batches` on ``device`` (tensors shuffled by ``seed``)."""
        return Batches(self.train_data, batch_size=batch_size, seed=seed, device=device)

    @property
    def has_test(self) -> bool:
        """Whether the workload holds out a test split."""
        return self.test_data is not None

    def val_batches(self, device: torch.device, batch_size: int = 1000) -> Iterator[Any]:
        """The validation data, batch by batch, on ``device`` (tensors in order)."""
        return eval_batches(self.val_data, device, batch_size)

    def test_batches(self, device: torch.device, batch_size: int = 1000) -> Iterator[Any]:
        """The test data, batch by batch, on ``device`` (tensors in order).

        Raises:
            WorkloadError: the workload has no test split.
        """
        if self.test_data is None:
            raise WorkloadError(f"workload {self.name!r} has no test split (test_data=None)")
        return eval_batches(self.test_data, device, batch_size)

    def batch_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The scalar loss of one batch: ``step_fn(model, batch)`` or ``loss_fn(model(x), y)``.

        Raises:
            WorkloadError: the batch is not ``(inputs, targets)``, or the loss not a scalar.
        """
        return compute_loss(model, batch, loss_fn=self.loss_fn, step_fn=self.step_fn)

    def make_optimizer(
        self,
        model: nn.Module,
        *,
        lr: float,
        momentum: float | None = None,
        weight_decay: float = 0.0,
    ) -> torch.optim.Optimizer:
        """Build the workload's optimizer; ``momentum`` is SGD's momentum or Adam's beta1.

        Raises:
            WorkloadError: a model without trainable parameters, or a factory that does not
                build its param groups from ``lr``.
        """
        if not any(p.requires_grad for p in model.parameters()):
            raise WorkloadError(
                f"workload {self.name!r}: its model ({type(model).__name__}) has no trainable "
                "parameters, so there is nothing to train; make build_model return a module "
                "with parameters (requires_grad=True)"
            )
        if isinstance(self.optimizer, str) and self.optimizer.lower() in OPTIMIZERS:
            return builtin_optimizer(self.optimizer.lower(), model, lr, momentum, weight_decay)
        factory = self.optimizer
        if isinstance(factory, str):
            factory = optimizer_class(factory)
        extra = {"momentum": momentum, "weight_decay": weight_decay}
        return from_factory(factory, model, lr, extra)


# --- checks -----------------------------------------------------------------------------------


def _check_options(w: Workload) -> None:
    if w.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {w.batch_size}")
    if w.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {w.epochs}")
    if w.accumulate < 1:
        raise ValueError(f"accumulate must be >= 1, got {w.accumulate}")
    if w.grad_clip is not None and not (w.grad_clip > 0 and math.isfinite(w.grad_clip)):
        raise ValueError(f"grad_clip must be a positive number or None, got {w.grad_clip}")
    if w.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {w.precision!r}")
    if w.batches_per_epoch is not None and w.batches_per_epoch < 1:
        raise ValueError(f"batches_per_epoch must be >= 1, got {w.batches_per_epoch}")


def _check_data(data: Any, label: str, *, factory: bool) -> None:
    if isinstance(data, tuple) and all(isinstance(t, torch.Tensor) for t in data):
        if len(data) != 2 or len(data[0]) != len(data[1]) or len(data[0]) == 0:
            raise ValueError(f"{label} must be two non-empty tensors of equal length")
        return
    if isinstance(data, Iterable) or (factory and callable(data)):
        return
    kinds = "(inputs, targets) tensors, a DataLoader or re-iterable of batches"
    kinds += ", or a factory(epoch, seed) -> batches" if factory else ""
    raise ValueError(f"{label} must be {kinds}; got {type(data).__name__}")


def _check_losses(w: Workload) -> None:
    if w.step_fn is None and w.loss_fn is None:
        raise ValueError("a workload needs loss_fn(outputs, targets), or a step_fn(model, batch)")
    if w.step_fn is not None and w.eval_fn is None and w.metric.fn is not None:
        raise ValueError(
            f"metric {w.metric.name!r} needs model outputs, which a step_fn workload does not "
            "give — fix: add eval_fn(model, val_batches) -> (loss, metric), or use MEAN_LOSS"
        )
