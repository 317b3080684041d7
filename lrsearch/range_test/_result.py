"""What a range test gives: each repeat's curve and readings, their summary, the prior."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from lrsearch.prior import LRPrior
from lrsearch.suggest import CurveSuggestions, SuggestionSummary

__all__ = ["RangeCurve", "RangeTestResult"]


@dataclass(frozen=True)
class RangeCurve:
    """One repeat: the LR and raw/smoothed loss per step, and what it suggests."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: CurveSuggestions


@dataclass
class RangeTestResult:
    """All repeats, the suggestions summarised over them, and the prior they give.

    ``settings`` records how the test ran (ramp, LRs, iterations, repeats, seed, ...).
    """

    curves: list[RangeCurve]
    summary: dict[str, SuggestionSummary]
    prior: LRPrior
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``suggestions`` (median, spread, per-repeat values), ``prior``, curves."""
        return {
            "suggestions": {name: s.to_dict() for name, s in self.summary.items()},
            "prior": self.prior.to_dict(),
            "settings": self.settings,
            "seconds": self.seconds,
            "repeats": [
                {
                    "suggestions": c.suggestions.to_dict(),
                    "lrs": c.lrs,
                    "losses": _json_floats(c.losses),
                    "smoothed": _json_floats(c.smoothed),
                }
                for c in self.curves
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeTestResult:
        curves = [
            RangeCurve(
                lrs=list(r["lrs"]),
                losses=[_float(v) for v in r["losses"]],
                smoothed=[_float(v) for v in r["smoothed"]],
                suggestions=CurveSuggestions.from_dict(r["suggestions"]),
            )
            for r in data.get("repeats", [])
        ]
        return cls(
            curves=curves,
            summary={k: SuggestionSummary.from_dict(v) for k, v in data["suggestions"].items()},
            prior=LRPrior.from_dict(data["prior"]),
            settings=dict(data.get("settings", {})),
            seconds=float(data.get("seconds", 0.0)),
        )

    def to_csv(self) -> str:
        """Long format: ``repeat, step, lr, loss, smoothed`` (one row per step and repeat)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["repeat", "step", "lr", "loss", "smoothed"])
        for r, curve in enumerate(self.curves):
            for step, (lr, loss, sm) in enumerate(
                zip(curve.lrs, curve.losses, curve.smoothed, strict=True)
            ):
                writer.writerow([r, step, f"{lr:.6g}", f"{loss:.6g}", f"{sm:.6g}"])
        return out.getvalue()


def _json_floats(values: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def _float(value: float | None) -> float:
    return math.inf if value is None else float(value)
