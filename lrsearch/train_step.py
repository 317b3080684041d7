"""One optimizer step under a workload's options: micro-batches, autocast, scaler, clipping.

Shared by the training loop (:func:`lrsearch.training.train`) and the range test, so both
train exactly the same way.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from lrsearch.errors import WorkloadError
from lrsearch.workloads import describe

if TYPE_CHECKING:
    from lrsearch.workloads import Workload

__all__ = ["TrainStep", "autocast_for"]


def autocast_for(precision: str, device: torch.device) -> Callable[[], Any]:
    """A factory of the context that forward passes run in: autocast, or nothing for fp32.

    Raises:
        WorkloadError: fp16 off CUDA, or bf16 where this device or torch build lacks it.
    """
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise WorkloadError(
            f"precision='fp16' needs a CUDA device, this run is on {device} — fix: set the "
            "workload's precision to 'bf16' or 'fp32' (workload.with_options(precision='bf16'))"
        )
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if not torch.amp.is_autocast_available(device.type) or (precision == "bf16" and not bf16_ok):
        raise WorkloadError(
            f"precision={precision!r} is not supported on {device} by this torch build — "
            "fix: set the workload's precision to 'fp32'"
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device.type, dtype=dtype)


_MISFIT = re.compile(
    r"shape|size|dimension|\bdim\b|channels|out of bounds|match|scalar type|dtype", re.IGNORECASE
)


def _misfit(exc: Exception) -> bool:
    """Whether an error in the first step says the data does not fit the model or loss.

    A TypeError (a batch of the wrong structure) or a shape, size or dtype complaint does;
    anything else is the user's own bug (or out of memory) and keeps its type and message.
    """
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    return isinstance(exc, TypeError) or bool(_MISFIT.search(str(exc)))


class TrainStep:
    """One optimizer step over a list of micro-batches, under a workload's options.

    Each micro-batch: forward and loss under autocast (bf16/fp16), backward of the loss
    divided by the number of micro-batches (through the gradient scaler for fp16); then the
    global gradient norm clipped to ``grad_clip``, and the optimizer step. A first step that
    fails because the data, the model and the loss do not fit together (a shape, size or
    dtype complaint, or a TypeError) raises a :class:`~lrsearch.errors.WorkloadError` that
    shows the batch; other errors (the user's own bugs) pass through as they are.

    Args:
        model: the model.
        optimizer: its optimizer (LRs set by the caller).
        batch_loss: ``batch_loss(model, batch) -> scalar tensor``.
        device: where the model is.
        grad_clip: max global gradient norm (None: no clipping).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        scaler: the gradient scaler to use; fp16 gets a fresh one where not given.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        batch_loss: Callable[[torch.nn.Module, Any], torch.Tensor],
        *,
        device: torch.device,
        grad_clip: float | None = None,
        precision: str = "fp32",
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.batch_loss = batch_loss
        self.grad_clip = grad_clip
        self.autocast = autocast_for(precision, device)
        if scaler is None and precision == "fp16":
            scaler = torch.amp.GradScaler(device.type)
        self.scaler = scaler
        self.checked = False

    @classmethod
    def for_workload(
        cls,
        workload: Workload,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        scaler: torch.amp.GradScaler | None = None,
    ) -> TrainStep:
        """The step ``workload`` asks for (its loss, grad_clip and precision)."""
        return cls(
            model,
            optimizer,
            workload.batch_loss,
            device=device,
            grad_clip=workload.grad_clip,
            precision=workload.precision,
            scaler=scaler,
        )

    def run(self, batches: Sequence[Any]) -> torch.Tensor:
        """One optimizer step over ``batches``; returns their mean loss, still on the device."""
        if self.checked:
            return self._run(batches)
        try:
            loss = self._run(batches)
        except (TypeError, ValueError, IndexError, RuntimeError) as exc:
            if not _misfit(exc):
                raise
            what = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise WorkloadError(
                f"train batch {describe(batches[0])}: {what} — fix: make the batches what "
                "the model and loss_fn (or step_fn) take"
            ) from exc
        self.checked = True
        return loss

    def _run(self, batches: Sequence[Any]) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        n = len(batches)
        total: torch.Tensor | None = None
        for batch in batches:
            with self.autocast():
                loss = self.batch_loss(self.model, batch)
            part = loss if n == 1 else loss / n
            (part if self.scaler is None else self.scaler.scale(part)).backward()
            total = loss.detach() if total is None else total + loss.detach()
        self._update()
        assert total is not None
        return total if n == 1 else total / n

    def _update(self) -> None:
        """Clip (grads unscaled first) and step the optimizer, through the scaler if any."""
        if self.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
