"""Workloads: built-in tasks, installed entry points, and ``module:function`` import paths."""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from lrsearch.errors import WorkloadError
from lrsearch.workloads._batches import Batches, compute_loss, describe, split_batch, to_device
from lrsearch.workloads._builtin import BUILTIN
from lrsearch.workloads._metrics import ACCURACY, MEAN_LOSS, MSE, Metric
from lrsearch.workloads._optimizers import OPTIMIZERS
from lrsearch.workloads._workload import PRECISIONS, Workload

__all__ = [
    "ACCURACY",
    "MEAN_LOSS",
    "MSE",
    "OPTIMIZERS",
    "PRECISIONS",
    "Batches",
    "Metric",
    "Workload",
    "check_allowed",
    "compute_loss",
    "describe",
    "get_workload",
    "load_callable",
    "split_batch",
    "to_device",
    "workload_names",
]

ENTRY_POINT_GROUP = "lrsearch.workloads"


def _installed() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def workload_names() -> list[str]:
    """Names accepted by :func:`get_workload` (besides ``module:function`` paths)."""
    return sorted({*BUILTIN, *_installed()})


def check_allowed(spec: str, patterns: list[str] | tuple[str, ...] = ()) -> None:
    """Refuse a workload this process was not told to trust.

    A study's storage can be written by anyone with its URL, and a workload import path runs
    code. Workers therefore import only built-ins, installed entry points, and import paths
    that match one of ``patterns`` (``fnmatch``, e.g. ``"mypkg.*"``) or ``$LRSEARCH_ALLOW_WORKLOAD``
    (comma-separated).

    Raises:
        WorkloadError: the workload is not allowed.
    """
    if spec in BUILTIN or spec in _installed():
        return
    env = [p for p in os.environ.get("LRSEARCH_ALLOW_WORKLOAD", "").split(",") if p]
    if any(fnmatch.fnmatchcase(spec, p) for p in [*patterns, *env]):
        return
    raise WorkloadError(
        f"the study asks for workload {spec!r}, which this process does not trust; "
        f"pass --allow-workload '{spec.partition(':')[0]}:*' (or set LRSEARCH_ALLOW_WORKLOAD) if you do"
    )


def _resolve_factory(spec: str) -> Callable[..., Any]:
    if spec in BUILTIN:
        return BUILTIN[spec]  # type: ignore[no-any-return]
    installed = _installed()
    if spec in installed:
        try:
            return installed[spec].load()  # type: ignore[no-any-return]
        except Exception as exc:
            raise WorkloadError(
                f"workload {spec!r}: its entry point failed to load: {exc}"
            ) from exc
    if ":" not in spec:
        raise WorkloadError(
            f"unknown workload {spec!r}; use one of {', '.join(workload_names())} "
            "or an import path 'package.module:function'"
        )
    return load_callable(spec)


def load_callable(spec: str, *, what: str = "workload") -> Callable[..., Any]:
    """The callable an import path ``package.module:function`` names (a workload, a loop).

    The working directory's modules import, as with ``python -m``. Check the path with
    :func:`check_allowed` first where a study's storage named it.

    Raises:
        WorkloadError: the module does not import, or has no such callable.
    """
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the working directory's modules import
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise WorkloadError(
            f"{what} {spec!r}: importing {module_name!r} failed ({type(exc).__name__}: {exc}); "
            "check the module is installed or on PYTHONPATH"
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise WorkloadError(f"{what} {spec!r}: {module_name!r} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def get_workload(spec: str, **kwargs: Any) -> Workload:
    """Build a workload by registry name, entry-point name or ``package.module:function``.

    Args:
        spec: e.g. ``"mnist1d-cnn"`` or ``"mypkg.tasks:cifar_small"``.
        **kwargs: passed to the workload's factory (e.g. ``epochs=5``).

    Raises:
        WorkloadError: unknown name, failed import, bad keyword, or a factory that does not
            return a :class:`Workload`.
    """
    factory = _resolve_factory(spec)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise WorkloadError(f"workload {spec!r} does not take these options: {exc}") from exc
    except ValueError:
        pass  # builtins without a signature: let the call itself complain
    try:
        workload = factory(**kwargs)
    except Exception as exc:  # user code: any failure becomes one line naming the workload
        raise WorkloadError(
            f"workload {spec!r} could not be built ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(workload, Workload):
        raise WorkloadError(
            f"workload {spec!r} returned {type(workload).__name__}, expected lrsearch.Workload"
        )
    return workload
