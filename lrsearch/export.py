"""The best trial's schedule, as JSON or as plain PyTorch code that needs no lrsearch."""

from __future__ import annotations

import json
from typing import Any

from lrsearch.reporting import best_trial, trial_schedule
from lrsearch.study import StudyHandle

__all__ = ["best_as_json", "best_as_python", "best_record"]


def best_record(handle: StudyHandle) -> dict[str, Any]:
    """The best trial: value, params, schedule dict and training settings.

    ``test_metric`` is None unless the trial carries one (user attribute ``test_metric``);
    nothing is retrained here.
    """
    trial = best_trial(handle)
    plan = handle.plan
    workload, epochs, steps_per_epoch = plan.workload, plan.epochs, plan.steps_per_epoch
    schedule = trial_schedule(handle, trial)
    return {
        "study": handle.name,
        "trial": trial.number,
        "value": trial.value,
        "metric": f"val_{workload.metric.name}",
        # The search never sees the test split; its score is known only where something
        # stored it with the trial (`lrsearch train --from-study` measures it).
        "test_metric": trial.user_attrs.get("test_metric"),
        "workload": handle.config.study.workload,
        "optimizer": workload.optimizer_name,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": handle.config.study.batch_size or workload.batch_size,
        "params": trial.params,
        "weight_decay": trial.params.get("weight_decay", 0.0),
        "schedule": schedule.to_dict(),
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
    }


def best_as_json(handle: StudyHandle) -> str:
    return json.dumps(best_record(handle), indent=2)


_OPTIMIZER_CODE = {
    "sgd": "torch.optim.SGD(model.parameters(), lr={lr!r}, momentum={m!r}, weight_decay={wd!r})",
    "adam": "torch.optim.Adam(model.parameters(), lr={lr!r}, betas=({m!r}, 0.999), weight_decay={wd!r})",
    "adamw": "torch.optim.AdamW(model.parameters(), lr={lr!r}, betas=({m!r}, 0.999), weight_decay={wd!r})",
}


def best_as_python(handle: StudyHandle) -> str:
    """A few lines of plain PyTorch rebuilding the best schedule, LR and momentum per step."""
    from lrsearch.schedules import schedule_from_dict

    record = best_record(handle)
    schedule = schedule_from_dict(record["schedule"])
    total = record["epochs"] * record["steps_per_epoch"]
    knots = _knots(schedule, total)
    momentum_key = "momentum" if record["optimizer"] == "sgd" else "betas"
    m0 = schedule.momentum_at(0) or 0.9
    template = _OPTIMIZER_CODE.get(
        record["optimizer"].lower(),
        "...  # your {name} at lr={lr!r}, weight_decay={wd!r}; the scheduler below drives it",
    )
    opt = template.format(
        lr=schedule.lr_at(0), m=m0, wd=record["weight_decay"], name=record["optimizer"]
    )
    lines = [
        f"# lrsearch study {record['study']!r}, best trial {record['trial']}: "
        f"{record['metric']} = {record['value']:.4g}",
        f"# {record['epochs']} epochs x {record['steps_per_epoch']} steps (batch {record['batch_size']}); "
        "call scheduler.step() after every optimizer.step().",
        "import numpy as np",
        "import torch",
        "",
        f"STEPS = {knots['steps']!r}",
        f"LRS = {knots['lrs']!r}",
    ]
    if knots["momenta"] is not None:
        lines.append(f"MOMENTA = {knots['momenta']!r}")
    lines += [
        "",
        f"optimizer = {opt}",
        "scheduler = torch.optim.lr_scheduler.LambdaLR(",
        f"    optimizer, lambda step: float(np.interp(step, STEPS, LRS)) / {schedule.lr_at(0)!r}",
        ")",
    ]
    if knots["momenta"] is not None:
        set_m = (
            "g['momentum'] = m" if momentum_key == "momentum" else "g['betas'] = (m, g['betas'][1])"
        )
        lines += [
            "",
            "def set_momentum(step: int) -> None:  # call with the step, next to scheduler.step()",
            "    m = float(np.interp(step, STEPS, MOMENTA))",
            "    for g in optimizer.param_groups:",
            f"        {set_m}",
        ]
    return "\n".join(lines)


def _knots(schedule: Any, total: int) -> dict[str, Any]:
    """Break points of a piecewise-linear schedule (exact for linear shapes)."""
    import numpy as np

    lrs = schedule.lrs(total)
    momenta = schedule.momenta(total)
    keep = [0]
    for k in range(1, total - 1):
        if not np.isclose(lrs[k + 1] - lrs[k], lrs[k] - lrs[k - 1], rtol=1e-6, atol=1e-15) or (
            momenta is not None
            and not np.isclose(
                momenta[k + 1] - momenta[k], momenta[k] - momenta[k - 1], rtol=1e-6, atol=1e-15
            )
        ):
            keep.append(k)
    keep.append(total - 1)
    return {
        "steps": keep,
        "lrs": [float(f"{lrs[k]:.8g}") for k in keep],
        "momenta": None if momenta is None else [float(f"{momenta[k]:.6g}") for k in keep],
    }
