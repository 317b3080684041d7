"""The best trial's schedule, as JSON or as a plain PyTorch script that needs no lrsearch."""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

from lrsearch.errors import WorkloadError
from lrsearch.reporting import best_trial
from lrsearch.study import StudyHandle
from lrsearch.trials import MLFLOW_RUN_ID, score_on_test, seed_of, trial_params, trial_schedule

if TYPE_CHECKING:
    import torch

    from lrsearch.schedules import Schedule
    from lrsearch.workloads import Workload

__all__ = ["best_as_json", "best_as_python", "best_record"]


def best_record(handle: StudyHandle) -> dict[str, Any]:
    """The best trial: value, params, schedule dict and training settings.

    ``params`` are every parameter the trial trained with, replayed as
    :func:`~lrsearch.trials.trial_params` does (fixed ones included). ``test_metric`` is
    None unless the trial carries one (user attribute ``test_metric``); nothing is retrained.
    """
    trial = best_trial(handle)
    plan = handle.plan
    workload, epochs, steps_per_epoch = plan.workload, plan.epochs, plan.steps_per_epoch
    params = trial_params(handle, trial)
    return {
        "study": handle.name,
        "trial": trial.number,
        "value": trial.value,
        "metric": f"val_{workload.metric.name}",
        # The search never sees the test split; its score is known only where something
        # stored it with the trial (`lrsearch train --from-study` measures it).
        "test_metric": score_on_test(trial),
        "workload": handle.config.study.workload,
        "optimizer": workload.optimizer_name,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": plan.trainer.batch_size,  # None: the trainer's own code sets it
        "seed": seed_of(handle.config, trial),  # a tail: its parent's
        "params": params,
        "weight_decay": params["weight_decay"],
        "schedule": trial_schedule(handle, trial).to_dict(),
        "mlflow_run_id": trial.user_attrs.get(MLFLOW_RUN_ID),
    }


def best_as_json(handle: StudyHandle) -> str:
    return json.dumps(best_record(handle), indent=2)


def best_as_python(handle: StudyHandle) -> str:
    """A complete PyTorch script training with the best trial's schedule and optimizer.

    It runs as it is: its model and data are marked placeholders (random numbers of the
    trial's batch size and step count) to replace with your own. The optimizer is the
    workload's, built the way the trial built it (class, parameter groups by parameter name,
    each group's LR ratio and weight decay); LR and momentum follow the trial's schedule step
    by step. ``python script.py --history steps.json`` writes the LR and momentum it set.
    """
    from lrsearch.schedules import schedule_from_dict

    record = best_record(handle)
    schedule = schedule_from_dict(record["schedule"])
    knots = _knots(schedule, record["epochs"] * record["steps_per_epoch"])
    workload = handle.plan.workload
    return _SCRIPT.format(
        header=_header(record),
        params=_literal(record["params"]),
        epochs=record["epochs"],
        steps_per_epoch=record["steps_per_epoch"],
        batch_size=record["batch_size"] or "32  # PLACEHOLDER: the study's loop set its own",
        seed=record["seed"],
        grad_clip=workload.grad_clip,
        build_lr=_build_lr(schedule),
        steps=knots["steps"],
        lrs=knots["lrs"],
        momenta=knots["momenta"],
        optimizer=_optimizer_code(workload, schedule, record["weight_decay"]),
    )


def _header(record: dict[str, Any]) -> str:
    lines = [
        f"lrsearch study {record['study']!r}, best trial {record['trial']}: "
        f"{record['metric']} = {record['value']:.6g}",
        f"workload {record['workload']!r}, optimizer {record['optimizer']}, "
        f"{record['epochs']} epochs x {record['steps_per_epoch']} steps, "
        f"{_batch(record['batch_size'])}, seed {record['seed']}.",
    ]
    if record["mlflow_run_id"]:
        lines.append(f"MLflow run {record['mlflow_run_id']}.")
    if record["schedule"]["kind"] == "plateau":  # its LR followed the validation metric
        lines += [
            "PLATEAU: the trial cut its LR on plateaus of the validation metric, which this",
            "script does not compute: add torch.optim.lr_scheduler.ReduceLROnPlateau with the",
            f"trial's settings (min_delta is its threshold): "
            f"{_literal(record['schedule'], inline=True)}.",
        ]
    return "\n".join(lines)


def _batch(batch_size: int | None) -> str:
    return "batch size set by the loop" if batch_size is None else f"batch {batch_size}"


def _literal(params: dict[str, Any], *, inline: bool = False) -> str:
    if inline:
        return ", ".join(f"{k}={v!r}" for k, v in params.items() if k not in ("kind", "history"))
    return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in params.items()) + "}"


_SCRIPT = '''"""{header}

Plain PyTorch: no lrsearch needed. The trial's optimizer and its LR/momentum schedule, set
before every optimizer step. The MODEL AND DATA BELOW ARE PLACEHOLDERS (random numbers, so
this file runs as it is): replace build_model, train_batches and loss_fn with yours.

    python this_file.py [--history steps.json]   # --history: the LR and momentum per step
"""

import argparse
import json

import numpy as np
import torch
from torch import nn

# Every parameter the trial trained with (the schedule below is built from them).
PARAMS = {params}
EPOCHS = {epochs}
STEPS_PER_EPOCH = {steps_per_epoch}  # optimizer steps per epoch
BATCH_SIZE = {batch_size}
SEED = {seed}
GRAD_CLIP = {grad_clip!r}  # clip the global gradient norm to this (None: off)
BUILD_LR = {build_lr!r}  # the LR the optimizer is built at; each group keeps its ratio to it

# The schedule at its break points, linear in between: LR and momentum at every step.
STEPS = {steps!r}
LRS = {lrs!r}
MOMENTA = {momenta!r}  # SGD's momentum or Adam's beta1; None: left to the optimizer


def lr_at(step: int) -> float:
    return float(np.interp(step, STEPS, LRS))


def momentum_at(step: int) -> float | None:
    return None if MOMENTA is None else float(np.interp(step, STEPS, MOMENTA))


# --- PLACEHOLDER model and data: replace with yours ---------------------------------------
def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def train_batches(epoch: int):
    generator = torch.Generator().manual_seed(SEED * 1000 + epoch)
    for _ in range(STEPS_PER_EPOCH):
        x = torch.randn(BATCH_SIZE, 16, generator=generator)
        yield x, torch.randint(0, 4, (BATCH_SIZE,), generator=generator)


loss_fn = nn.functional.cross_entropy
# --- end of placeholders -------------------------------------------------------------------


{optimizer}


def set_schedule(optimizer: torch.optim.Optimizer, ratios: list[float], step: int) -> None:
    """Every group's LR (times its own ratio) and momentum for this step."""
    lr, momentum = lr_at(step), momentum_at(step)
    for group, ratio in zip(optimizer.param_groups, ratios):
        group["lr"] = ratio * lr
        if momentum is not None and "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        elif momentum is not None and "momentum" in group:
            group["momentum"] = momentum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", help="write the LR and momentum of every step here (JSON)")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    model = build_model()
    optimizer = make_optimizer(model)
    ratios = [group["lr"] / BUILD_LR for group in optimizer.param_groups]
    history = []
    step = 0
    for epoch in range(EPOCHS):
        for inputs, targets in train_batches(epoch):
            set_schedule(optimizer, ratios, step)
            loss = loss_fn(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if GRAD_CLIP is not None:
                nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            group = optimizer.param_groups[0]
            history.append(
                {{"lr": group["lr"], "momentum": group.get("momentum", group.get("betas", [None])[0])}}
            )
            step += 1
        print(f"epoch {{epoch + 1}}/{{EPOCHS}}: last loss {{loss.item():.4f}}")
    if args.history:
        with open(args.history, "w") as f:
            json.dump(history, f)


if __name__ == "__main__":
    main()
'''


# --- the optimizer, as the trial built it ---------------------------------------------------

_SKIP = {"params", "initial_lr"}


def _optimizer_code(workload: Workload, schedule: Schedule, weight_decay: float) -> str:
    """``make_optimizer(model)``: the workload's optimizer class and groups, as source."""
    import torch

    momentum = schedule.momentum_at(0)
    with torch.random.fork_rng(devices=[]):
        try:
            model = workload.build_model()
            optimizer = workload.make_optimizer(
                model,
                lr=_build_lr(schedule),
                momentum=0.9 if momentum is None else momentum,
                weight_decay=weight_decay,
            )
        except WorkloadError:  # a study of your own loop: its optimizer is in your code
            return _LOOP_OPTIMIZER.format(lr=_build_lr(schedule), wd=weight_decay)
    cls = type(optimizer)
    path = f"torch.optim.{cls.__name__}"
    head = [
        "def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:",
        f'    """{workload.optimizer_name}, built as the trial built it (at BUILD_LR)."""',
    ]
    if getattr(torch.optim, cls.__name__, None) is not cls:  # the user's class: import it
        head.append(f"    from {cls.__module__} import {cls.__qualname__}")
        path = cls.__qualname__
    fixed = getattr(schedule, "group_settings", {})  # the schedule's (Prodigy's d_coef)
    groups = [_group_settings(cls, {**g, **fixed}) for g in optimizer.param_groups]
    if len(groups) == 1:
        body = [f"    return {path}(model.parameters(), **{groups[0]!r})"]
    else:
        body = _groups_code(model, optimizer, groups, path)
    if callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None)):
        build = body[-1].removeprefix("    return ")
        body[-1:] = _SCHEDULE_FREE.format(build=build).splitlines()
    return "\n".join([*head, *body])


def _groups_code(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, groups: list[Any], path: str
) -> list[str]:
    """The lines that build the workload's parameter groups by name, then the optimizer."""
    return [
        "    # The workload's parameter groups, by parameter name in its model; a parameter",
        "    # your model has and these lists do not goes to the first group.",
        f"    settings = {groups!r}",
        f"    names = {_group_names(model, optimizer)!r}",
        "    params = [[] for _ in settings]",
        "    for name, p in model.named_parameters():",
        "        index = next((i for i, listed in enumerate(names) if name in listed), 0)",
        "        params[index].append(p)",
        "    groups = [{'params': p, **s} for p, s in zip(params, settings) if p]",
        f"    return {path}(groups)",
    ]


# Schedule-Free optimizers step only in train mode; evaluation belongs at their average
_SCHEDULE_FREE = """    optimizer = {build}
    # Schedule-Free: it steps in train mode; call optimizer.eval() before evaluating or saving
    # (its averaged weights) and optimizer.train() before training again. With BatchNorm,
    # run ~50 training batches in model.train() after optimizer.eval() first (its README).
    optimizer.train()
    return optimizer"""


_LOOP_OPTIMIZER = '''def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """PLACEHOLDER: the study trained your own loop, whose optimizer is in your code."""
    return torch.optim.SGD(model.parameters(), lr={lr!r}, momentum=0.9, weight_decay={wd!r})'''


def _build_lr(schedule: Schedule) -> float:
    """The LR training builds the optimizer at (the first step's; 1.0 where that is 0)."""
    lr = schedule.lr_at(0)
    return lr if lr > 0 else 1.0


def _group_settings(cls: type[torch.optim.Optimizer], group: dict[str, Any]) -> dict[str, Any]:
    """A param group's LR and the settings that differ from the class's defaults."""
    try:
        signature = inspect.signature(cls).parameters.items()
        defaults = {k: p.default for k, p in signature if p.default is not inspect.Parameter.empty}
        names: set[str] | None = {k for k, _ in inspect.signature(cls).parameters.items()}
    except (TypeError, ValueError):
        defaults, names = {}, None
    settings: dict[str, Any] = {"lr": group["lr"]}
    for key, value in group.items():
        if names is not None and key not in names:  # its own state (Prodigy's d): not an option
            continue
        if key not in _SKIP and key != "lr" and not (key in defaults and defaults[key] == value):
            settings[key] = value
    return settings


def _group_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [[by_id[id(p)] for p in g["params"] if id(p) in by_id] for g in optimizer.param_groups]


def _knots(schedule: Any, total: int) -> dict[str, Any]:
    """Break points of a piecewise-linear schedule (exact for linear shapes), at full precision."""
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
        "lrs": [float(lrs[k]) for k in keep],
        "momenta": None if momenta is None else [float(momenta[k]) for k in keep],
    }
