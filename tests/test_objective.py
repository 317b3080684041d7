"""The public objective: sample → schedule → train → outcome, observed without MLflow."""

from __future__ import annotations

import json
import math

import optuna
from click.testing import CliRunner
from optuna.pruners import BasePruner
from optuna.trial import TrialState

from lrsearch.cli import cli
from lrsearch.config import parse_study_config
from lrsearch.objective import Objective, Outcome, TrialSpec
from lrsearch.prior import LRPrior
from lrsearch.study import StudyHandle
from lrsearch.workers import run_study
from tests.tiny_workloads import blobs

CONFIG = {
    "study": {"name": "obj", "workload": "tests.tiny_workloads:blobs", "n_trials": 3, "epochs": 3},
    "range_test": {"repeats": 1, "num_iter": 20},
    "pruner": {"name": "none"},
    "tracking": {"update_ratio_every": 0},
}
PRIOR = LRPrior(center=0.1, sigma_decades=0.5, low=1e-3, high=1.0)


class _Watcher:
    """A TrialObserver that keeps what it saw."""

    def __init__(self, spec: TrialSpec, seen: list) -> None:
        self.attrs = {"watched": spec.number}
        self.steps = 0
        self.epochs: list[int] = []
        self.outcome: Outcome | None = None
        seen.append(self)

    def step(self, info) -> None:
        self.steps += 1

    def epoch(self, info) -> None:
        self.epochs.append(info.epoch)

    def end(self, outcome: Outcome) -> dict:
        self.outcome = outcome
        return {"ended": outcome.state}


class _PruneAtLastEpoch(BasePruner):
    """Asks to prune only once a trial has reported its final epoch."""

    def prune(self, study, trial) -> bool:
        return trial.last_step == 3


class _PruneAtFirstEpoch(BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.last_step == 1


def _handle(pruner: BasePruner | None = None) -> StudyHandle:
    handle = StudyHandle.in_memory(parse_study_config(CONFIG), PRIOR, blobs())
    if pruner is not None:
        handle.study.pruner = pruner
    return handle


def test_an_observer_sees_every_step_epoch_and_the_outcome() -> None:
    handle = _handle()
    seen: list[_Watcher] = []
    handle.study.optimize(Objective(handle, observe=lambda s: _Watcher(s, seen)), n_trials=2)
    plan = handle.plan
    assert [w.steps for w in seen] == [plan.total_steps] * 2
    assert [w.epochs for w in seen] == [[1, 2, 3]] * 2
    for trial, watcher in zip(handle.study.trials, seen, strict=True):
        assert trial.state == TrialState.COMPLETE
        assert watcher.outcome is not None and watcher.outcome.value == trial.value
        assert trial.user_attrs["watched"] == trial.number  # attrs kept at the start
        assert trial.user_attrs["ended"] == "COMPLETE"  # and what end() returned
        assert trial.user_attrs["derived"]["total_steps"] == plan.total_steps


def test_a_trial_that_trained_its_whole_budget_is_complete() -> None:
    handle = _handle(_PruneAtLastEpoch())
    handle.study.optimize(Objective(handle), n_trials=2)
    assert [t.state for t in handle.study.trials] == [TrialState.COMPLETE] * 2


def test_a_pruned_trial_is_told_pruned_with_its_reason() -> None:
    handle = _handle(_PruneAtFirstEpoch())
    seen: list[_Watcher] = []
    handle.study.optimize(Objective(handle, observe=lambda s: _Watcher(s, seen)), n_trials=1)
    assert handle.study.trials[0].state == TrialState.PRUNED
    assert seen[0].outcome == Outcome(
        "PRUNED", reason="pruned at epoch 1", epochs=1, steps=seen[0].steps
    )


def test_a_failing_trial_is_told_fail_with_one_line(monkeypatch) -> None:
    handle = _handle()
    seen: list[_Watcher] = []

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("lrsearch.training.train", broken)
    handle.study.optimize(
        Objective(handle, observe=lambda s: _Watcher(s, seen)), n_trials=1, catch=(RuntimeError,)
    )
    trial = handle.study.trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "RuntimeError: boom"
    assert seen[0].outcome is not None and seen[0].outcome.state == "FAIL"


def test_a_trial_whose_schedule_cannot_be_built_says_why(monkeypatch) -> None:
    handle = _handle()

    def unbuildable(*args, **kwargs):
        raise ValueError("a one-cycle schedule needs at least 3 steps\nmore")

    monkeypatch.setattr("lrsearch.objective.schedule_of", unbuildable)
    handle.study.optimize(Objective(handle), n_trials=1, catch=(ValueError,))
    trial = handle.study.trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == (
        "ValueError: a one-cycle schedule needs at least 3 steps"
    )  # workers print it instead of "unknown error"


def test_train_from_study_reproduces_the_best_trial_exactly(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LRSEARCH_HOME", str(tmp_path))
    monkeypatch.setenv("LRSEARCH_ALLOW_WORKLOAD", "tests.*")  # the stored workload is a test's
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = parse_study_config({**CONFIG, "study": {**CONFIG["study"], "seed": 7}})
    outcome = run_study(
        config, storage_url=storage, tracking=False, show_progress=False, echo=lambda s: None
    )
    best = outcome.handle.study.best_trial
    result = CliRunner().invoke(
        cli, ["train", "--from-study", "obj", "--storage", storage, "--json"], obj={}
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["val_metric"] == best.value  # exactly, on CPU
    assert f"trial {best.number} of study 'obj'" in result.output
    assert f"seed {7 + best.number}" in result.output

    several = CliRunner().invoke(
        cli, ["train", "--from-study", "obj", "--storage", storage, "--seeds", "3"], obj={}
    )
    assert several.exit_code == 0, several.output
    *runs, summary = several.stdout.strip().splitlines()
    assert summary.startswith("over 3 seeds: val_accuracy=") and "±" in summary
    first = 7 + best.number  # the trial's own seed, then the next ones: each line names its seed
    assert [line.split(": ")[0].rsplit(" ", 2)[1:] for line in runs] == [
        ["seed", str(first + k)] for k in range(3)
    ]
    assert f"val_accuracy={best.value:.2f} " in runs[0]  # the trial's seed: its result
    mean = float(summary.split("=")[1].split("±")[0])
    assert math.isfinite(mean)


def test_in_memory_handle_uses_the_configs_sampler_and_pruner() -> None:
    handle = _handle()
    assert type(handle.study.sampler).__name__ == "PriorGuidedSampler"
    assert isinstance(handle.study.pruner, optuna.pruners.NopPruner)


def test_a_fresh_trial_is_no_retry_and_seeded_by_its_number() -> None:
    handle = _handle()
    spec = Objective(handle).sample(handle.study.ask())
    assert spec.retry_of is None and spec.seed == handle.config.study.seed + spec.number
    assert spec.schedule.total_steps == handle.plan.total_steps


def test_the_embedded_storage_is_a_journal_unless_an_sqlite_file_is_there(tmp_path, monkeypatch):
    from lrsearch.storage import default_storage

    monkeypatch.delenv("LRSEARCH_STORAGE", raising=False)
    assert default_storage(tmp_path) == f"journal:{tmp_path / 'optuna.journal'}"
    (tmp_path / "optuna.db").touch()  # a home from an earlier version keeps its studies
    assert default_storage(tmp_path) == f"sqlite:///{tmp_path / 'optuna.db'}"


def test_a_study_shows_its_config_one_setting_per_attribute(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LRSEARCH_HOME", str(tmp_path))
    config = parse_study_config({**CONFIG, "study": {**CONFIG["study"], "n_trials": 1}})
    outcome = run_study(
        config,
        storage_url=f"journal:{tmp_path / 'optuna.journal'}",
        tracking=False,
        show_progress=False,
        echo=lambda s: None,
    )
    attrs = outcome.handle.study.user_attrs
    assert attrs["config.study.workload"] == "tests.tiny_workloads:blobs"
    assert attrs["config.space.div_factor.low"] == config.space.div_factor.low
    assert outcome.handle.study.metric_names == ["val_accuracy"]


def test_annihilation_tails_train_only_their_tail_and_equal_training_from_scratch() -> None:
    from lrsearch.branching import BRANCH_OF
    from lrsearch.training import train

    config = parse_study_config(
        {**CONFIG, "study": {**CONFIG["study"], "epochs": 6}, "branching": {"tails": 2, "top": 1}}
    )
    handle = StudyHandle.in_memory(config, PRIOR, blobs())
    seen: list[_Watcher] = []
    handle.study.optimize(Objective(handle, observe=lambda s: _Watcher(s, seen)), n_trials=3)
    first, *tails = handle.study.trials
    plan = handle.plan
    # trial 0 is the best so far (the only one): its two tails are the next trials
    assert [t.user_attrs.get(BRANCH_OF) for t in tails] == [0, 0]
    cut = first.user_attrs["derived"]["cycle_steps"] // plan.steps_per_epoch
    for tail, watcher in zip(tails, seen[1:], strict=True):
        assert tail.state == TrialState.COMPLETE
        assert {k: v for k, v in tail.params.items() if k != "annihilation"} == {
            k: v for k, v in first.params.items() if k != "annihilation"
        }
        assert tail.params["annihilation"] != first.params["annihilation"]
        # it trained (and counts) only the steps after the shared prefix, and the prefix's
        # epochs are on its curve
        assert watcher.outcome is not None
        assert watcher.outcome.steps == plan.total_steps - cut * plan.steps_per_epoch
        assert watcher.epochs == list(range(cut + 1, plan.epochs + 1))
        assert sorted(tail.intermediate_values) == list(range(1, plan.epochs + 1))
        # the same as training that schedule from scratch, with the parent's seed
        from lrsearch.trials import trial_schedule, trial_seed

        scratch = train(
            plan.workload,
            trial_schedule(handle, tail),
            epochs=plan.epochs,
            weight_decay=tail.params["weight_decay"],
            seed=trial_seed(config, 0),
        )
        assert scratch.val_metric == tail.value
    assert seen[0].outcome is not None and seen[0].outcome.steps == plan.total_steps


def test_a_tails_mlflow_run_names_the_trial_it_branched_from() -> None:
    from lrsearch.recording import observe_trials
    from lrsearch.tracking import MemoryTracker
    from lrsearch.tracking.recorder import StudyRecorder

    config = parse_study_config(
        {**CONFIG, "study": {**CONFIG["study"], "epochs": 6}, "branching": {"tails": 1}}
    )
    handle = StudyHandle.in_memory(config, PRIOR, blobs())
    tracker = MemoryTracker()
    recorder = StudyRecorder(tracker, handle.name, None, metric="accuracy")
    handle.set_parent_run(recorder.open_parent({}, {}))
    handle.study.optimize(Objective(handle, observe=observe_trials(recorder, handle)), n_trials=2)
    parent, tail = handle.study.trials
    runs = [tracker.runs[t.user_attrs["mlflow_run_id"]] for t in (parent, tail)]
    assert "lrsearch.branch_of" not in runs[0].tags
    assert runs[1].tags["lrsearch.branch_of"] == str(parent.number)
    assert [r.status for r in runs] == ["FINISHED", "FINISHED"]
