"""Smith's one-cycle defaults: the one place these numbers are written (stdlib only).

Smith (2018), "A disciplined approach to neural network hyper-parameters". Both
:mod:`lrsearch.schedules` (``OneCycle``'s default arguments) and :mod:`lrsearch.policies`
(the policies' parameters) read them from here, so neither imports the other for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["SMITH_DEFAULTS"]

# weight_decay is the optimizer's, not the schedule's.
SMITH_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {
        "div_factor": 10.0,
        "cycle_frac": 0.9,
        "annihilation": 100.0,
        "momentum_high": 0.95,
        "momentum_low": 0.85,
        "weight_decay": 1e-4,
    }
)
