"""lrsearch.heartbeat: a running trial beats; a stale one is failed and retried."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from lrsearch.heartbeat import KEY, beating, fail_stale, last_beat
from lrsearch.storage import open_storage
from lrsearch.trials import FAIL_REASON


def _study(tmp_path) -> optuna.Study:
    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    return optuna.create_study(study_name="hb", storage=storage)


def test_a_trial_beats_while_it_runs(tmp_path) -> None:
    study = _study(tmp_path)
    trial = study.ask()
    before = time.time()
    with beating(trial, interval_s=0.05):
        first = last_beat(study.get_trials()[0])
        time.sleep(0.3)
        later = last_beat(study.get_trials()[0])
    assert first is not None and first >= before  # written before the block starts
    assert later is not None and later > first
    time.sleep(0.15)
    assert last_beat(study.get_trials()[0]) == later  # stopped with the block


def test_a_retry_does_not_count_its_dead_trials_beat(tmp_path) -> None:
    study = _study(tmp_path)
    study.enqueue_trial({}, user_attrs={KEY: {"trial": 0, "at": time.time()}})
    retry = study.ask()
    assert retry.number == 0
    study.tell(retry, 1.0)
    copy = study.get_trials()[0]
    copy.number = 3  # the same attribute on another trial: someone else's beat
    assert last_beat(copy) is None


def test_only_a_stale_beat_fails_its_trial_and_queues_a_retry(tmp_path) -> None:
    study = _study(tmp_path)
    quiet = study.ask()  # never beat: left alone (Optuna's heartbeat, or not started)
    stale = study.ask()
    fresh = study.ask()
    storage = study._storage
    storage.set_trial_user_attr(stale._trial_id, KEY, {"trial": stale.number, "at": 0.0})
    storage.set_trial_user_attr(fresh._trial_id, KEY, {"trial": fresh.number, "at": time.time()})
    assert fail_stale(study, grace_s=30) == [stale.number]
    trials = study.get_trials()
    assert trials[stale.number].state == TrialState.FAIL
    assert "no heartbeat" in trials[stale.number].user_attrs[FAIL_REASON]
    assert trials[quiet.number].state == trials[fresh.number].state == TrialState.RUNNING
    assert trials[-1].state == TrialState.WAITING  # the retry
    assert fail_stale(study, grace_s=30) == []


def test_in_memory_trials_need_no_beat() -> None:
    study = optuna.create_study()
    trial = study.ask()
    with beating(trial, interval_s=0.01):
        time.sleep(0.05)
    assert KEY not in study.get_trials()[0].user_attrs
