"""How much does each range-test suggestion move between seeds, and what does it cost held out?

    python -m lrsearch.harness.anchor_noise --seeds 5 --out docs/bench/anchor-noise.json

``lrsearch calibrate-prior`` places each workload's best ``max_lr`` against one range test
(seed 0). A study runs its own range test under its own seed, so the prior's centre also moves
with the range test's noise. This reruns the range test (3 repeats, defaults) under seeds
0 .. N-1 for every workload of a calibration (``--calibration``, its JSON), and for each anchor
reports: the spread of log10(suggestion) across seeds (decades, mean over workloads), and the
RMS held-out error of the centre when the study's range test is each of those seeds (the
offset calibrated on the other workloads, as in the calibration's leave-one-out). Only range
tests run (seconds per workload); the sweeps are the calibration's.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]


def measure(calibration: dict[str, Any], seeds: int) -> dict[str, Any]:
    """Per anchor: ``spread_decades`` and ``held_out_rms_decades``; per workload the medians."""
    import torch

    from lrsearch.prior import ANCHORS
    from lrsearch.range_test import range_test_workload
    from lrsearch.workloads import get_workload

    torch.set_num_threads(1)
    results = calibration["workloads"]
    medians: dict[str, list[dict[str, float]]] = {}
    for r in results:
        workload = get_workload(r["workload"])
        medians[r["workload"]] = [
            {
                n: s.median
                for n, s in range_test_workload(workload, seed=k, repeats=3).summary.items()
            }
            for k in range(seeds)
        ]
    out: dict[str, Any] = {"seeds": seeds, "anchors": {}, "suggestions": medians}
    for anchor in ANCHORS:
        spreads, errors = [], []
        for r in results:
            logs = [math.log10(m[anchor]) for m in medians[r["workload"]]]
            spreads.append(statistics.stdev(logs) if len(logs) > 1 else 0.0)
            others = [o["offsets"][anchor] for o in results if o is not r]
            offset = statistics.mean(others)
            for m in medians[r["workload"]]:
                centre = min(m[anchor] * 10**offset, m["diverge"])
                errors.append(math.log10(r["best_max_lr"] / centre))
        out["anchors"][anchor] = {
            "spread_decades": statistics.mean(spreads),
            "held_out_rms_decades": math.sqrt(statistics.mean(e * e for e in errors)),
            "held_out_max_abs_decades": max(abs(e) for e in errors),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calibration", type=Path, default=Path("docs/prior-calibration.json"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = measure(json.loads(args.calibration.read_text()), args.seeds)
    print("anchor  spread across seeds (dec)  held-out RMS (dec)  largest (dec)")
    for anchor, row in result["anchors"].items():
        print(
            f"{anchor:7s} {row['spread_decades']:26.3f} {row['held_out_rms_decades']:19.3f} "
            f"{row['held_out_max_abs_decades']:14.3f}",
            flush=True,
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
