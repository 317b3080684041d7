"""Your own training loop through the trial context: schedule out; steps, reports, outcome in."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.pruners import BasePruner
from optuna.trial import TrialState
from torch import nn

from lrsearch import OneCycle, TrialContext
from lrsearch.cli import cli
from lrsearch.config import parse_study_config
from lrsearch.errors import ConfigError, WorkloadError
from lrsearch.objective import Objective
from lrsearch.prior import LRPrior
from lrsearch.range_test import RampPlan
from lrsearch.recording import observe_trials
from lrsearch.study import StudyHandle, build_workload
from lrsearch.tracking import MemoryTracker
from lrsearch.tracking.recorder import StudyRecorder
from lrsearch.trainers import LoopTrainer, TrainHooks, trainer_for
from lrsearch.training import StepInfo
from lrsearch.workers import run_trials
from lrsearch.workloads import Metric, check_allowed

PRIOR = LRPrior(center=0.05, sigma_decades=0.3, low=1e-3, high=1.0)
EPOCHS, STEPS_PER_EPOCH, BATCH = 3, 6, 32
SEEN: list[TrialContext] = []


def _blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (12 * BATCH + 64,), generator=g)  # up to 12 batches an epoch
    x = torch.randn(4, 8, generator=g)[y] * 2.0 + torch.randn(len(y), 8, generator=g)
    return x, y


def blobs_loop(ctx: TrialContext) -> float | None:
    """A user's loop: SGD with a bias group at 0.1x, per-step log, a report per epoch."""
    return _blobs_loop(ctx, ctx.steps_per_epoch)


def ten_batch_loop(ctx: TrialContext) -> float | None:
    """A loop whose loader has 10 batches, whatever the study file declares."""
    return _blobs_loop(ctx, 10)


def scored_loop(ctx: TrialContext) -> float | None:
    """Scores a held-out test metric after its last report."""
    value = _blobs_loop(ctx, ctx.steps_per_epoch)
    ctx.report_test(42.5)
    return value


def _blobs_loop(ctx: TrialContext, batches: int) -> float | None:
    SEEN.append(ctx)
    torch.manual_seed(ctx.seed)
    x, y = _blobs()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    weights = [p for p in model.parameters() if p.dim() > 1]
    biases = [p for p in model.parameters() if p.dim() == 1]
    groups = [{"params": weights}, {"params": biases, "lr": 0.1}]
    optimizer = torch.optim.SGD(groups, lr=1.0, momentum=0.9, weight_decay=ctx.weight_decay)
    driver = ctx.attach(optimizer)
    step = 0
    for epoch in range(1, ctx.epochs + 1):
        for b in range(batches):
            driver.step()
            xb, yb = x[b * BATCH : (b + 1) * BATCH], y[b * BATCH : (b + 1) * BATCH]
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ctx.log(step, loss=loss.detach(), grad_steps=float(step))
            step += 1
            if ctx.should_stop:
                return None
        with torch.no_grad():
            acc = (model(x[-64:]).argmax(1) == y[-64:]).float().mean().item() * 100
        if ctx.report(epoch, acc):
            return None
    return None


def raising_loop(ctx: TrialContext) -> float | None:
    if ctx.number == 0:
        raise RuntimeError("boom in the user's loop\nsecond line")
    return blobs_loop(ctx)


def silent_loop(ctx: TrialContext) -> float | None:
    if ctx.number == 0:
        return 1.0  # never reports
    return blobs_loop(ctx)


def two_arguments(ctx: TrialContext, other: int) -> float:
    return 0.0


def _config(loop: str = "blobs_loop", **study: object) -> dict:
    return {
        "study": {
            "name": "own",
            "loop": f"tests.test_trial_context:{loop}",
            "metric": "accuracy",
            "direction": "maximize",
            "epochs": EPOCHS,
            "steps_per_epoch": STEPS_PER_EPOCH,
            "n_trials": 2,
            **study,
        },
        "range_test": {"repeats": 1, "num_iter": 20},
        "pruner": {"name": "none"},
    }


def _handle(loop: str = "blobs_loop", pruner: BasePruner | None = None) -> StudyHandle:
    config = parse_study_config(_config(loop))
    handle = StudyHandle.in_memory(config, PRIOR, build_workload(config))
    if pruner is not None:
        handle.study.pruner = pruner
    return handle


class _Always(BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_the_context_has_the_users_steps_and_the_sampled_params() -> None:
    SEEN.clear()
    handle = _handle()
    handle.study.optimize(Objective(handle), n_trials=1)
    ctx = SEEN[0]
    assert ctx.mode == "trial" and ctx.number == 0 and ctx.device == "cpu"
    assert ctx.total_steps == EPOCHS * STEPS_PER_EPOCH
    assert ctx.schedule.total_steps == EPOCHS * STEPS_PER_EPOCH
    assert {"max_lr", "weight_decay", "momentum_high", "momentum_low"} <= set(ctx.params)
    assert ctx.weight_decay == ctx.params["weight_decay"]
    assert handle.study.trials[0].state == TrialState.COMPLETE


def test_attach_drives_every_group_at_its_ratio() -> None:
    schedule = OneCycle(0.5, 30)
    ctx = TrialContext(schedule, epochs=3, steps_per_epoch=10)
    model = nn.Linear(2, 2)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.1}]
    optimizer = torch.optim.SGD(groups, lr=1.0, momentum=0.9)
    driver = ctx.attach(optimizer)
    for step in range(30):
        lr, momentum = driver.step()
        assert lr == pytest.approx(schedule.lr_at(step))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1 * lr)
        assert optimizer.param_groups[1]["momentum"] == momentum == schedule.momentum_at(step)
    with pytest.raises(ValueError, match="attach"):
        ctx.attach(optimizer)


def test_a_pruned_loop_ends_pruned_and_never_at_its_last_epoch() -> None:
    handle = _handle(pruner=_Always())
    handle.study.optimize(Objective(handle), n_trials=1)
    trial = handle.study.trials[0]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]

    config = parse_study_config(_config(epochs=1))
    one_epoch = StudyHandle.in_memory(config, PRIOR, build_workload(config))
    one_epoch.study.pruner = _Always()
    one_epoch.study.optimize(Objective(one_epoch), n_trials=1)
    assert one_epoch.study.trials[0].state == TrialState.COMPLETE  # its last epoch: kept


def test_report_and_should_stop_standalone(monkeypatch) -> None:
    ctx = TrialContext(OneCycle(0.1, 20), epochs=2, steps_per_epoch=10)
    assert ctx.report(1, 50.0) is False and not ctx.should_stop
    assert ctx.report(2, math.nan) is True and ctx.should_stop and ctx.diverged
    calm = TrialContext(OneCycle(0.1, 20), epochs=2, steps_per_epoch=10)
    monkeypatch.setattr("lrsearch.interrupt.requested", lambda: True)
    assert calm.should_stop  # Ctrl-C asked to stop


def test_log_batches_steps_and_metrics_to_the_trial_run() -> None:
    handle = _handle()
    tracker = MemoryTracker(flush_every=7)
    recorder = StudyRecorder(tracker, handle.name, None, metric="accuracy")
    handle.set_parent_run(recorder.open_parent({}, {}))
    handle.study.optimize(Objective(handle, observe=observe_trials(recorder, handle)), n_trials=1)
    trial = handle.study.trials[0]
    run = tracker.runs[trial.user_attrs["mlflow_run_id"]]
    total = EPOCHS * STEPS_PER_EPOCH
    assert [s for s, _ in run.metrics["lr"]] == list(range(total))
    assert [s for s, _ in run.metrics["grad_steps"]] == list(range(total))
    assert len(run.metrics["train_loss"]) == len(run.metrics["momentum"]) == total
    schedule = SEEN[-1].schedule
    assert run.metrics["lr"][5][1] == pytest.approx(schedule.lr_at(5))  # the base group's LR
    assert [s for s, _ in run.metrics["val_accuracy"]] == [6, 12, 18]
    assert "val_loss" not in run.metrics  # the loop reports its metric only
    assert run.metrics["final_val_accuracy"][0][1] == trial.value
    assert tracker.metric_batches < total  # batched, not one write per point
    assert run.status == "FINISHED"


@pytest.mark.parametrize(
    ("loop", "reason"),
    [
        ("raising_loop", "RuntimeError: boom in the user's loop"),
        ("silent_loop", "WorkloadError: the loop never called ctx.report"),
    ],
)
def test_a_broken_loop_fails_in_one_line_and_the_worker_goes_on(loop: str, reason: str) -> None:
    handle = _handle(loop)
    lines: list[str] = []
    run_trials(handle, n_trials=2, echo=lines.append)
    states = [t.state for t in handle.study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert handle.study.trials[0].user_attrs["fail_reason"].startswith(reason)
    assert len(lines) == 1 and lines[0].startswith(f"trial 0 failed: {reason}")


def test_the_range_test_runs_the_loop_on_the_ramp() -> None:
    SEEN.clear()
    plan = RampPlan.make(num_iter=20, repeats=1)
    result = trainer_for(parse_study_config(_config())).range_test(plan, seed=0, device="cpu")
    ctx = SEEN[0]
    assert ctx.mode == "range_test" and ctx.schedule.kind == "exp-ramp"
    assert ctx.should_stop  # the ramp ran out (or the loss diverged)
    curve = result.curves[0]
    assert 10 <= len(curve.lrs) <= 20 and curve.lrs == sorted(curve.lrs)
    assert result.prior.low < result.prior.high and "steep" in result.summary


def test_loop_fields_are_checked_with_clear_errors() -> None:
    with pytest.raises(ConfigError, match="needs direction, steps_per_epoch"):
        study = _config()["study"]
        del study["direction"], study["steps_per_epoch"]
        parse_study_config({"study": study})
    with pytest.raises(ConfigError, match="metric: only for a study with its own loop"):
        parse_study_config({"study": {"name": "x", "workload": "digits-mlp", "metric": "acc"}})
    with pytest.raises(ConfigError, match="give loop or workload, not both"):
        parse_study_config(_config(workload="digits-mlp"))
    config = parse_study_config(_config())
    assert config.study.workload == config.study.loop  # workers check it against their allow-list
    with pytest.raises(WorkloadError, match="does not trust"):
        check_allowed(config.study.workload)
    check_allowed(config.study.workload, ["tests.*"])
    with pytest.raises(WorkloadError, match="must take one argument"):
        build_workload(parse_study_config(_config("two_arguments")))


def test_a_study_without_a_loop_keeps_its_fingerprint() -> None:
    import hashlib
    import json

    config = parse_study_config({"study": {"name": "x", "workload": "digits-mlp"}})
    data = config.model_dump(mode="json")
    old = {k: v for k, v in data["study"].items() if k not in ("name", "n_trials", "timeout")}
    for key in ("loop", "metric", "direction", "steps_per_epoch", "training"):
        old.pop(key)  # fields added after this format: unset, they must not change the hash
    data["study"] = old
    data.pop("tracking")
    data.pop("branching")  # added later too
    data["prior"].pop("pibo_beta")
    data["prior"].pop("pibo_fade")
    for key in ("explore_share", "contradiction", "startup"):  # added later, unset
        data["prior"].pop(key)
    data["range_test"].pop("budget_fraction")  # added later, at its default
    for key in ("lr", "d_coef", "warmup_frac"):  # LR-free optimizers' ranges: added later, unset
        data["space"].pop(key)
    data["range_test"]["repeats"] = 3  # unset now means "fitted to the budget", 3 at most
    # the pruner section as it was: one n_warmup_steps default, no plateau settings
    data["pruner"] = {
        k: v for k, v in data["pruner"].items() if k not in ("keep_top", "confidence")
    }
    data["pruner"]["n_warmup_steps"] = 2
    expected = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert config.fingerprint() == expected


def test_lrsearch_run_runs_a_loop_study_end_to_end(tmp_path) -> None:
    study = tmp_path / "own.toml"
    study.write_text(
        '[study]\nname = "own-e2e"\nloop = "tests.test_trial_context:blobs_loop"\n'
        'metric = "accuracy"\ndirection = "maximize"\nepochs = 2\nsteps_per_epoch = 6\n'
        "n_trials = 2\n[range_test]\nrepeats = 1\nnum_iter = 20\n"
    )
    result = CliRunner().invoke(
        cli,
        ["run", str(study), "--devices", "cpu", "--no-tracking"],
        obj={},
        env={"LRSEARCH_HOME": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    assert "study 'own-e2e': 2 complete" in result.output
    env = {"LRSEARCH_HOME": str(tmp_path)}
    allow = ["--allow-workload", "tests.*"]
    retrained = CliRunner().invoke(
        cli, ["train", "--from-study", "own-e2e", "--json", *allow], obj={}, env=env
    )
    assert retrained.exit_code == 0, retrained.output
    best = CliRunner().invoke(
        cli, ["best", "--study", "own-e2e", "--format", "json", *allow], obj={}, env=env
    )
    record = json.loads(best.stdout)
    assert json.loads(retrained.stdout)["val_metric"] == record["value"]  # exactly, on CPU
    script = CliRunner().invoke(
        cli, ["best", "--study", "own-e2e", "--format", "python", *allow], obj={}, env=env
    )
    assert script.exit_code == 0, script.output
    assert "batch size set by the loop" in script.output and "batch 1" not in script.output


def test_a_wrong_steps_per_epoch_fails_the_trial_in_one_line() -> None:
    config = parse_study_config(_config("ten_batch_loop", steps_per_epoch=12))
    handle = StudyHandle.in_memory(config, PRIOR, build_workload(config))
    handle.study.optimize(Objective(handle), n_trials=1, catch=(WorkloadError,))
    (trial,) = handle.study.trials  # nothing left RUNNING
    assert trial.state == TrialState.FAIL
    reason = trial.user_attrs["fail_reason"]
    assert "\n" not in reason and "steps_per_epoch = 12" in reason and "took 10" in reason


def test_epochs_must_increase() -> None:
    ctx = TrialContext(OneCycle(0.1, 30), epochs=3, steps_per_epoch=10)
    ctx.report(3, 50.0)
    with pytest.raises(WorkloadError, match=r"epoch=2\) came after epoch 3: epochs must increase"):
        ctx.report(2, 60.0)
    assert ctx.reports == [(3, 50.0)]  # nothing stored


def test_logged_tensors_are_read_back_in_batches() -> None:
    """A loop logging tensors: its steps reach the trial every sync_every steps, in order."""
    seen: list[StepInfo] = []
    heard_by_step: list[int] = []

    def loop(ctx: TrialContext) -> float | None:
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
        driver = ctx.attach(optimizer)
        for step in range(ctx.total_steps):
            driver.step()
            ctx.log(step, loss=torch.tensor(float(step)))
            heard_by_step.append(len(seen))
            if (step + 1) % ctx.steps_per_epoch == 0:
                ctx.report((step + 1) // ctx.steps_per_epoch, 1.0)
        return None

    schedule = OneCycle(0.1, 60)
    metric = Metric("accuracy", "maximize")
    trainer = LoopTrainer(loop, "tests:loop", metric, epochs=2, steps_per_epoch=30)
    hooks = TrainHooks(on_step=seen.append)
    result = trainer.train(schedule, params={}, seed=0, device="cpu", hooks=hooks)
    assert heard_by_step[:24] == [0] * 24 and heard_by_step[24] == 25  # one read per 25 steps
    assert heard_by_step[30] == 30  # the report at step 29 read what was pending
    assert [s.step for s in seen] == [s.loss for s in seen] == list(range(60))
    assert [s.lr for s in seen] == pytest.approx([schedule.lr_at(k) for k in range(60)])
    assert result.steps == 60 and result.val_metric == 1.0


def test_a_loops_test_metric_is_kept_with_the_trial() -> None:
    config = parse_study_config(_config("scored_loop"))
    handle = StudyHandle.in_memory(config, PRIOR, build_workload(config))
    handle.study.optimize(Objective(handle), n_trials=1)
    assert handle.study.trials[0].user_attrs["test_metric"] == 42.5


def test_the_range_test_refuses_a_wrong_steps_per_epoch_before_any_trial() -> None:
    config = parse_study_config(_config("ten_batch_loop", steps_per_epoch=12))
    plan = RampPlan.make(num_iter=30, repeats=1)  # the ramp outlasts the first epoch
    with pytest.raises(WorkloadError, match=r"steps_per_epoch = 12 .* took 10"):
        trainer_for(config).range_test(plan, seed=0, device="cpu")


def test_log_keeps_no_graph_and_refuses_a_non_scalar() -> None:
    ctx = TrialContext(OneCycle(0.1, 20), epochs=2, steps_per_epoch=10)
    w = nn.Parameter(torch.ones(1))
    ctx.log(0, loss=(w * 2).sum())
    assert ctx._pending[0][2].grad_fn is None  # detached: no graph held until the read
    with pytest.raises(ValueError, match=r"ctx.log\(acc=...\) takes a number"):
        ctx.log(1, acc=torch.ones(3))
