"""Built-in workloads with another optimizer, for calibrating the prior across optimizer families.

Each is a ``module:function`` workload (``lrsearch.harness.variants:mnist1d_mlp_adamw``): the same
data and model as the built-in one, trained with AdamW (beta1 driven by the schedule's momentum,
weight decay as the trial samples it) instead of SGD. ``lrsearch calibrate-prior`` uses them to
learn whether one rule can centre the ``max_lr`` prior for SGD and the Adam family both.
"""

from __future__ import annotations

from typing import Any

from lrsearch.workloads import Workload, get_workload

__all__ = ["digits_mlp_adamw", "mnist1d_cnn_adamw", "mnist1d_mlp_adamw"]


def _adamw(name: str, **kwargs: Any) -> Workload:
    return get_workload(name, **kwargs).with_options(optimizer="adamw")


def mnist1d_mlp_adamw(**kwargs: Any) -> Workload:
    """``mnist1d-mlp`` trained with AdamW."""
    return _adamw("mnist1d-mlp", **kwargs)


def mnist1d_cnn_adamw(**kwargs: Any) -> Workload:
    """``mnist1d-cnn`` trained with AdamW."""
    return _adamw("mnist1d-cnn", **kwargs)


def digits_mlp_adamw(**kwargs: Any) -> Workload:
    """``digits-mlp`` trained with AdamW."""
    return _adamw("digits-mlp", **kwargs)
