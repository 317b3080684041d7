"""End to end: a tiny study through Optuna storage and a real MLflow store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

import lrsearch.range_test
import lrsearch.training
from lrsearch.cli._study import closing_report
from lrsearch.config import parse_study_config
from lrsearch.errors import ConfigError, LrsearchError
from lrsearch.pruning import cycle_frac_of, schedule_phase
from lrsearch.schedules import schedule_from_dict
from lrsearch.study import KEY_RANGE_TEST, load_study, open_study
from lrsearch.tracking import local_tracking_uri
from lrsearch.workers import run_study

TINY = {
    "study": {"name": "tiny", "workload": "tests.tiny_workloads:blobs", "n_trials": 5, "epochs": 3},
    "range_test": {"repeats": 2, "num_iter": 30},
    "prior": {"n_startup_trials": 2},
    "pruner": {"name": "median", "n_warmup_steps": 0, "n_startup_trials": 1},
    "tracking": {"update_ratio_every": 5},
}


def _config(**study):
    data = {**TINY, "study": {**TINY["study"], **study}}
    return parse_study_config(data)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LRSEARCH_HOME", str(tmp_path))
    return tmp_path


def _runs(home, study_name):
    uri, _ = local_tracking_uri(home)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study_name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, [r for r in runs if r.data.tags.get("lrsearch.role") == "trial"], runs


def _steps_csv(client, run_id):
    """A trial run's steps.csv, as dicts per row."""
    import csv

    path = client.download_artifacts(run_id, "steps.csv")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_study_end_to_end(home) -> None:
    config = _config()
    storage = f"sqlite:///{home / 'optuna.db'}"
    handle = open_study(config, storage, tracking_uri=str(home))
    # a hopeless second trial (lowest LR the prior allows) for the median pruner to stop
    handle.study.enqueue_trial({"max_lr": handle.prior.low})
    report = closing_report(
        run_study(config, storage_url=storage, show_progress=False, echo=lambda s: None)
    )
    assert "best: trial" in report and "lrsearch ui --study tiny" in report

    study = load_study("tiny", storage).study
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 5
    assert trials[0].params["max_lr"] == pytest.approx(handle.prior.center)
    assert trials[1].state == TrialState.PRUNED

    client, trial_runs, all_runs = _runs(home, "tiny")
    assert len(trial_runs) == len(trials)
    parent = [r for r in all_runs if r.data.tags.get("lrsearch.role") == "study"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    summary = parent[0].data
    best = study.best_trial
    assert summary.tags["lrsearch.best_trial"] == str(best.number)
    assert float(summary.tags["lrsearch.best_value"]) == pytest.approx(best.value, rel=1e-5)
    assert summary.metrics["trials_complete"] + summary.metrics["trials_pruned"] == 5
    assert summary.metrics["best_val_accuracy"] == pytest.approx(best.value)
    assert "steep_median" in summary.metrics and "prior" in summary.params
    assert "tiny" in summary.tags["mlflow.note.content"]
    curve = client.get_metric_history(parent[0].info.run_id, "best_val_accuracy")
    assert [m.value for m in curve] == sorted(m.value for m in curve)  # best so far, maximised
    assert study.metric_names == ["val_accuracy"]
    parent_files = {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    assert {
        "range_test.json",
        "range_test.csv",
        "range_test.png",
        "optimization_history.png",
        "max_lr_vs_metric.png",
        "schedules.png",
    } <= parent_files

    total = load_study("tiny", storage, allow_workloads=("tests.*",)).plan.total_steps
    by_number = {int(r.data.tags["lrsearch.trial"]): r for r in trial_runs}
    for t in trials:
        run = by_number[t.number]
        assert run.data.tags["lrsearch.state"] == t.state.name
        if t.state == TrialState.PRUNED:  # MLflow's icon says KILLED; the name says why
            assert run.info.run_name == f"trial-{t.number} pruned"
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert float(run.data.params["max_lr"]) == pytest.approx(t.params["max_lr"])
        assert "lower_lr" in run.data.params and "total_steps" in run.data.params
        if t.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED"
            path = client.download_artifacts(run.info.run_id, "schedule.json")
            expected = schedule_from_dict(json.loads(Path(path).read_text())).lrs(total)
            # every step in steps.csv, exact; MLflow points every few steps (stride "auto")
            steps = _steps_csv(client, run.info.run_id)
            assert [int(row["step"]) for row in steps] == list(range(total))
            assert np.allclose([float(row["lr"]) for row in steps], expected, rtol=1e-12)
            assert all(row["momentum"] and row["train_loss"] for row in steps)
            history = sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)
            points = [m.step for m in history]
            assert points[0] == 0 and points[-1] == total - 1 and points == sorted(set(points))
            assert np.allclose([m.value for m in history], expected[points], rtol=1e-9)
            losses = client.get_metric_history(run.info.run_id, "train_loss")
            assert sorted(m.step for m in losses) == points
            assert len(client.get_metric_history(run.info.run_id, "momentum")) == len(points)
            assert len(client.get_metric_history(run.info.run_id, "update_ratio")) == math.ceil(
                total / 5
            )
            assert run.data.metrics["final_val_accuracy"] == pytest.approx(t.value)
        elif t.state == TrialState.PRUNED:
            assert run.info.status == "KILLED"  # not FINISHED: it did not finish


def test_interrupt_then_resume_reuses_the_range_test(home, monkeypatch) -> None:
    storage = f"sqlite:///{home / 'optuna.db'}"
    calls = []
    real_rt = lrsearch.range_test.range_test_workload

    def counting(*args, **kwargs):
        calls.append(1)
        return real_rt(*args, **kwargs)

    monkeypatch.setattr(lrsearch.range_test, "range_test_workload", counting)

    real_train = lrsearch.training.train
    seen = []

    def interrupting(*args, **kwargs):
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(lrsearch.training, "train", interrupting)
    config = _config(n_trials=3, name="resume")
    outcome = run_study(config, storage_url=storage, show_progress=False, echo=lambda s: None)
    assert outcome.interrupted
    with pytest.raises(LrsearchError, match="interrupted"):
        closing_report(outcome)
    study = optuna.load_study(study_name="resume", storage=storage)
    stored = study.user_attrs[KEY_RANGE_TEST]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    _, trial_runs, _ = _runs(home, "resume")
    interrupted = next(r for r in trial_runs if r.data.tags["lrsearch.trial"] == "1")
    assert interrupted.info.status == "KILLED" and interrupted.data.tags["lrsearch.state"] == "FAIL"

    monkeypatch.setattr(lrsearch.training, "train", real_train)
    said: list[str] = []
    run_study(config, storage_url=storage, show_progress=False, echo=said.append)
    assert said[0] == (
        "resuming study 'resume': 1 complete, 0 pruned, 1 failed, 0 waiting to be retried; "
        "the range test is kept"
    )
    assert said[1].startswith("range test: steep ") and said[2].startswith("prior over max_lr:")
    study = optuna.load_study(study_name="resume", storage=storage)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 3
    assert calls == [1]  # the range test ran once, for the first run only
    assert study.user_attrs[KEY_RANGE_TEST] == stored


def test_a_changed_config_is_refused(home) -> None:
    storage = f"sqlite:///{home / 'optuna.db'}"
    run_study(
        _config(n_trials=1, name="fixed"),
        storage_url=storage,
        tracking=False,
        show_progress=False,
        echo=lambda s: None,
    )
    changed = parse_study_config(
        {
            **TINY,
            "study": {**TINY["study"], "name": "fixed", "n_trials": 2},
            "space": {"div_factor": [5, 6]},
        }
    )
    with pytest.raises(ConfigError, match="different config"):
        run_study(
            changed, storage_url=storage, tracking=False, show_progress=False, echo=lambda s: None
        )
    # budget changes are fine: resuming with more trials
    run_study(
        _config(n_trials=2, name="fixed"),
        storage_url=storage,
        tracking=False,
        show_progress=False,
        echo=lambda s: None,
    )


def test_a_failing_model_fails_its_trial_and_the_worker_goes_on(home) -> None:
    """Odd trials raise inside the user's model: FAIL with the reason, MLflow run FAILED."""
    config = parse_study_config(
        {
            **TINY,
            "study": {
                **TINY["study"],
                "name": "flaky",
                "n_trials": 3,
                "workload": "tests.tiny_workloads:flaky",
            },
            "pruner": {"name": "none"},
        }
    )
    storage = f"sqlite:///{home / 'optuna.db'}"
    said = []
    run_study(config, storage_url=storage, show_progress=False, echo=said.append)
    study = optuna.load_study(study_name="flaky", storage=storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.number % 2 == 1 for t in failed)
    assert all(
        "RuntimeError: boom in the user's model" in t.user_attrs["fail_reason"] for t in failed
    )
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 3
    assert any("failed: RuntimeError: boom" in line for line in said)
    _client, trial_runs, _ = _runs(home, "flaky")
    for run in trial_runs:
        number = int(run.data.tags["lrsearch.trial"])
        if number % 2:
            assert run.info.status == "FAILED" and "boom" in run.data.tags["lrsearch.reason"]
        else:
            assert run.info.status == "FINISHED"


def test_a_diverging_trial_is_pruned_and_tagged(home) -> None:
    config = _config(name="boom", n_trials=2)
    storage = f"sqlite:///{home / 'optuna.db'}"
    handle = open_study(config, storage, tracking_uri=str(home))
    handle.study.enqueue_trial({"max_lr": handle.prior.high})  # the divergence LR itself
    handle.study.enqueue_trial(
        {"max_lr": handle.prior.high, "div_factor": 4.0, "momentum_high": 0.98}
    )
    run_study(config, storage_url=storage, show_progress=False, echo=lambda s: None)
    study = optuna.load_study(study_name="boom", storage=storage)
    diverged = [t for t in study.trials if "diverged" in t.user_attrs]
    assert diverged, [t.user_attrs for t in study.trials]
    assert all(t.state == TrialState.PRUNED for t in diverged)
    _client, trial_runs, _ = _runs(home, "boom")
    tagged = [r for r in trial_runs if r.data.tags.get("lrsearch.diverged") == "true"]
    assert len(tagged) == len(diverged) and all(r.info.status == "KILLED" for r in tagged)


def test_out_of_memory_fails_the_trial_with_the_reason(home) -> None:
    """A GPU is mocked here (none on CI): torch's OutOfMemoryError raised by the model."""
    config = parse_study_config(
        {
            **TINY,
            "study": {
                **TINY["study"],
                "name": "oom",
                "n_trials": 2,
                "workload": "tests.tiny_workloads:oom",
            },
            "pruner": {"name": "none"},
        }
    )
    storage = f"sqlite:///{home / 'optuna.db'}"
    run_study(config, storage_url=storage, tracking=False, show_progress=False, echo=lambda s: None)
    study = optuna.load_study(study_name="oom", storage=storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(
        t.user_attrs["fail_reason"].startswith("CUDA out of memory") for t in failed
    )
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2


def test_a_resumed_study_repeats_no_parameters(home) -> None:
    """Run 3 trials, resume to 6 (issue 19: trials 3 and 4 used to repeat trials 1 and 2)."""
    storage = f"sqlite:///{home / 'optuna.db'}"
    for n in (3, 6):
        run_study(
            _config(n_trials=n, name="resumed"),
            storage_url=storage,
            tracking=False,
            show_progress=False,
            echo=lambda s: None,
        )
    trials = optuna.load_study(study_name="resumed", storage=storage).trials
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(params) >= 6
    assert len(set(params)) == len(params)


def test_the_range_test_fits_its_share_of_the_budget_and_says_so(home) -> None:
    """Unset repeats and num_iter: at most 5% of the study's steps, printed and recorded."""
    data = {**TINY, "study": {**TINY["study"], "name": "budget", "n_trials": 100, "epochs": 4}}
    config = parse_study_config({**data, "range_test": {}})
    said: list[str] = []
    handle = open_study(
        config, f"sqlite:///{home / 'optuna.db'}", tracking_uri=None, on_range_test=said.append
    )
    settings = handle.range_test.settings
    assert settings["steps"] <= 0.05 * settings["budget_steps"] + 1e-9
    assert settings["budget_share"] == pytest.approx(settings["steps"] / settings["budget_steps"])
    assert any("of the study's" in line and "trial steps" in line for line in said)


def test_a_pruned_run_records_why(home) -> None:
    """The plateau pruner's judgement (phase, bound, threshold) reaches the trial and its run."""
    config = parse_study_config(
        {
            **TINY,
            "study": {**TINY["study"], "name": "why", "n_trials": 4},
            "pruner": {"name": "plateau", "keep_top": 1, "confidence": 0.51},
        }
    )
    storage = f"sqlite:///{home / 'optuna.db'}"
    handle = open_study(config, storage, tracking_uri=str(home))
    prior = handle.prior
    for max_lr in (prior.center / 3, prior.center, prior.center * 2):  # three finished peers
        handle.study.enqueue_trial({"max_lr": max_lr})
    handle.study.enqueue_trial({"max_lr": prior.low})  # far behind them at epoch 1
    run_study(config, storage_url=storage, show_progress=False, echo=lambda s: None)

    trials = load_study("why", storage).study.get_trials()
    assert [t.state for t in trials[:3]] == [TrialState.COMPLETE] * 3
    pruned = trials[3]
    assert pruned.state == TrialState.PRUNED
    why = pruned.user_attrs["pruned_because"]
    epoch = max(pruned.intermediate_values)
    assert why["pruned"] and why["epoch"] == epoch < 3
    assert why["keep_top"] == 1 and why["peers"] == 3 and why["confidence"] == 0.51
    # the threshold is the best finished trial's final value; the bound fell short of it
    assert why["threshold"] == pytest.approx(max(t.value for t in trials[:3]))
    assert why["bound"] < why["threshold"]
    assert why["phase"] == pytest.approx(schedule_phase(epoch, 3, cycle_frac_of(pruned)))

    _client, trial_runs, _ = _runs(home, "why")
    run = next(r for r in trial_runs if r.data.tags["lrsearch.trial"] == "3")
    tags = run.data.tags
    assert tags["lrsearch.state"] == "PRUNED"
    assert float(tags["lrsearch.pruned.bound"]) == pytest.approx(why["bound"], rel=1e-5)
    assert float(tags["lrsearch.pruned.threshold"]) == pytest.approx(why["threshold"], rel=1e-5)
    assert float(tags["lrsearch.pruned.phase"]) == pytest.approx(why["phase"], rel=1e-3)
    reason = tags["lrsearch.reason"]
    assert reason.startswith(f"pruned at epoch {epoch}: at phase {why['phase']:.2f}")
    assert f"{why['bound']:.4g}" in reason and f"{why['threshold']:.4g}" in reason
    for peer in trial_runs:  # finished runs carry no pruning judgement
        if peer.data.tags["lrsearch.trial"] != "3":
            assert "lrsearch.pruned.bound" not in peer.data.tags
