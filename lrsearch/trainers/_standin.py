"""A user's loop as the study names it: the import, and the stand-in workload that describes it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lrsearch.errors import WorkloadError
from lrsearch.workloads import Metric, Workload, load_callable

if TYPE_CHECKING:
    from lrsearch.trainers._context import TrialContext

__all__ = ["LoopFunction", "load_loop", "loop_workload"]

LoopFunction = Callable[["TrialContext"], "float | None"]


def load_loop(spec: str) -> LoopFunction:
    """The function ``package.module:function`` names, checked to take one argument (ctx).

    Raises:
        WorkloadError: it does not import, or does not take ``ctx``.
    """
    loop = load_callable(spec, what="loop")
    try:
        inspect.signature(loop).bind(None)
    except TypeError as exc:
        raise WorkloadError(
            f"loop {spec!r} must take one argument, the TrialContext ({exc})"
        ) from None
    except ValueError:
        pass  # no signature to read: let the call complain
    return loop


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise WorkloadError(
        "this study trains with its own loop: lrsearch cannot build its model or optimizer; "
        "run your loop with the best schedule (lrsearch best --format json)"
    )


def _loops_optimizer(*args: Any, **kwargs: Any) -> Any:
    _refuse()


_loops_optimizer.__qualname__ = "loop's own optimizer"  # how reports and exports name it


def loop_workload(spec: str, *, metric: Metric, epochs: int, steps_per_epoch: int) -> Workload:
    """A stand-in :class:`Workload` for a loop study: its name, metric and sizes, no data.

    Reports and exports read the metric, epochs and steps per epoch from it; building its
    model or optimizer raises :class:`WorkloadError`.
    """
    return Workload(
        name=spec,
        build_model=_refuse,
        train_data=[],
        val_data=[],
        loss_fn=_refuse,
        metric=metric,
        optimizer=_loops_optimizer,
        batch_size=1,
        epochs=epochs,
        batches_per_epoch=steps_per_epoch,
        info={"loop": spec},
    )
