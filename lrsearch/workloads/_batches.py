"""Batches: a workload's data cut into batches, moved to a device, turned into a loss."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from lrsearch.errors import WorkloadError

__all__ = [
    "Batches",
    "LoaderFactory",
    "LossFn",
    "StepFn",
    "compute_loss",
    "describe",
    "eval_batches",
    "is_factory",
    "is_tensor_pair",
    "split_batch",
    "to_device",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepFn = Callable[[nn.Module, Any], torch.Tensor]
LoaderFactory = Callable[[int, int], Iterable[Any]]


def is_tensor_pair(data: Any) -> bool:
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


def is_factory(obj: Any) -> bool:
    """A callable that is neither a name, an optimizer class nor a re-iterable."""
    if isinstance(obj, str | Iterable):
        return False
    return callable(obj) and not (isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer))


def split_batch(batch: Any, label: str = "train batch") -> tuple[Any, Any]:
    """``(inputs, targets)`` from a batch that is a pair (a tuple, or a DataLoader's list).

    Raises:
        WorkloadError: the batch is something else.
    """
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    raise WorkloadError(
        f"{label} {describe(batch)}: expected (inputs, targets) — fix: yield "
        "(inputs, targets) pairs, or give the workload a step_fn(model, batch) -> loss"
    )


def compute_loss(
    model: nn.Module, batch: Any, *, loss_fn: LossFn | None, step_fn: StepFn | None
) -> torch.Tensor:
    """``step_fn(model, batch)``, else ``loss_fn(model(inputs), targets)``; a scalar tensor.

    Raises:
        WorkloadError: the batch is not ``(inputs, targets)``, or the loss not a scalar.
    """
    if step_fn is not None:
        return _scalar(step_fn(model, batch), "step_fn")
    if loss_fn is None:
        raise WorkloadError("no loss: give loss_fn(outputs, targets) or step_fn(model, batch)")
    inputs, targets = split_batch(batch)
    return _scalar(loss_fn(model(inputs), targets), "loss_fn")


def _scalar(loss: Any, source: str) -> torch.Tensor:
    if isinstance(loss, torch.Tensor) and loss.dim() == 0:
        return loss
    raise WorkloadError(
        f"{source} must return a scalar loss tensor, got {describe(loss)} — fix: reduce it "
        "(e.g. loss.mean()) and return the tensor itself, not .item()"
    )


def describe(batch: Any) -> str:
    """A batch's structure in brief: ``(Tensor[32, 8] float32, Tensor[32] int64)``."""
    if isinstance(batch, torch.Tensor):
        return f"Tensor{list(batch.shape)} {str(batch.dtype).removeprefix('torch.')}"
    if isinstance(batch, tuple | list):
        inner = ", ".join(describe(b) for b in batch[:4]) + (", ..." if len(batch) > 4 else "")
        return f"({inner})" if isinstance(batch, tuple) else f"[{inner}]"
    if isinstance(batch, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in list(batch.items())[:4]) + "}"
    return type(batch).__name__


def eval_batches(data: Any, device: torch.device, batch_size: int) -> Iterator[Any]:
    if is_tensor_pair(data):
        x, y = (t.to(device) for t in data)
        return (
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        )
    return (to_device(batch, device) for batch in data)


# --- batches ----------------------------------------------------------------------------------


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it on ``device`` (tuples, lists, dicts walked)."""
    if isinstance(batch, torch.Tensor):
        # non_blocking: a pinned-memory loader's copy overlaps the previous step's compute
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class Batches:
    """Training batches, epoch by epoch, on one device.

    Tensor data is reshuffled each epoch from one generator seeded with ``seed`` and cut
    into ``len // batch_size`` batches; a loader is iterated as it is, a factory called with
    ``(epoch, seed)``. A loader with a generator of its own (``DataLoader(generator=g)``) has
    ``g`` reseeded with ``seed`` here: else its shuffling state would run on from one trial
    to the next in a worker, and a trial's data order would depend on the trials before it
    (``train --from-study`` could not repeat it). ``order`` is the generator a snapshot keeps.

    Attributes:
        per_epoch: batches in one epoch, where known.
    """

    def __init__(self, data: Any, *, batch_size: int, seed: int, device: torch.device) -> None:
        self.device = device
        self.seed = seed
        self.batch_size = batch_size
        self.tensors = None
        self.data = data
        self.per_epoch: int | None = len(data) if hasattr(data, "__len__") else None
        if is_tensor_pair(data):
            self.tensors = (data[0].to(device), data[1].to(device))
            self.order = torch.Generator().manual_seed(seed)
            self.per_epoch = max(1, len(data[0]) // batch_size)
        elif isinstance(getattr(data, "generator", None), torch.Generator):
            self.order = data.generator.manual_seed(seed)

    def epoch(self, epoch: int) -> Iterator[Any]:
        """The batches of epoch ``epoch`` (0-based)."""
        if self.tensors is None:
            data = self.data(epoch, self.seed) if is_factory(self.data) else self.data
            return (to_device(batch, self.device) for batch in data)
        return self._tensor_epoch()

    def _tensor_epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        assert self.tensors is not None and self.per_epoch is not None
        x, y = self.tensors
        order = torch.randperm(len(x), generator=self.order).to(x.device)
        for b in range(self.per_epoch):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield x[idx], y[idx]
