"""Wiring a study to its MLflow record: the parent run, each trial's run, and lost workers.

The objective knows nothing of MLflow and the recorder nothing of Optuna; this module, in the
execution layer, joins them. :func:`observe_trials` makes the objective's per-trial observer
out of a :class:`~lrsearch.tracking.recorder.StudyRecorder`; :func:`recover_worker` fails
(and re-queues) the trials of a worker that died and closes their runs; :func:`close_orphans`
closes every run whose trial has ended but whose worker never could.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from lrsearch.checkpoints import checkpoint_root, remove_stale
from lrsearch.devices import placement_tags
from lrsearch.errors import TrackingError
from lrsearch.heartbeat import fail_stale
from lrsearch.objective import Observe, Outcome, TrialSpec
from lrsearch.reporting import ended_trial_reasons, study_history
from lrsearch.storage import fail_trial, redact
from lrsearch.study import StudyHandle
from lrsearch.tracking.recorder import LOST_REASON, StudyRecorder, TrialRecord
from lrsearch.trials import MLFLOW_RUN_ID, WORKER

if TYPE_CHECKING:
    from lrsearch.tracking import Tracker
    from lrsearch.training import EpochInfo, StepInfo

__all__ = [
    "close_orphans",
    "close_study",
    "fail_study",
    "observe_trials",
    "open_recorder",
    "recover_worker",
]

DIED_REASON = "worker process died"


def open_recorder(handle: StudyHandle, tracker: Tracker, *, log_parent: bool) -> StudyRecorder:
    """The study's recorder; with ``log_parent``, its parent run opened (created or resumed).

    The range test is logged to the parent run the first time only.
    """
    every = handle.config.tracking.step_every
    recorder = StudyRecorder(
        tracker,
        handle.name,
        handle.parent_run_id,
        metric=handle.metric_name,
        step_every=None if every == "auto" else every,
    )
    if not log_parent:
        return recorder
    first_time = handle.parent_run_id is None
    params = {
        **handle.config.flat(),
        "storage": redact(handle.storage_url),
    }
    params.update({f"prior.{k}": v for k, v in handle.prior.to_dict().items()})
    result = handle.range_test
    for name, s in (result.summary if result is not None else {}).items():
        params[f"range_test.{name}"] = s.median
    tags = {"optuna.study": handle.name, "lrsearch.storage": redact(handle.storage_url)}
    config = json.dumps(json.loads(handle.config.to_json()), indent=2)
    description = f"lrsearch study `{handle.name}`, its config:\n\n```json\n{config}\n```"
    handle.set_parent_run(recorder.open_parent(params, tags, description=description))
    if first_time and result is not None:
        try:
            recorder.log_range_test(result, config_json=handle.config.to_json())
        except (TrackingError, OSError) as exc:  # the study can run without these files
            print(f"warning: the range test's files were not recorded: {exc}", file=sys.stderr)
    return recorder


def close_study(handle: StudyHandle, recorder: StudyRecorder, *, interrupted: bool) -> None:
    """At the end of ``lrsearch run``: close orphaned trial runs, draw the plots, end the parent."""
    close_orphans(handle, recorder)
    recorder.close_parent(interrupted=interrupted, history=study_history(handle))


def fail_study(handle: StudyHandle, recorder: StudyRecorder, *, interrupted: bool) -> None:
    """``lrsearch run`` stops on an error (or Ctrl-C): end the parent run FAILED (KILLED),
    with what can still be read, so that no run is left RUNNING. Never raises: the error
    that stopped the study is the one to report."""
    history = None
    try:
        close_orphans(handle, recorder)
        history = study_history(handle)
    except Exception:  # the storage may be what failed
        pass
    try:
        recorder.close_parent(interrupted=interrupted, history=history, failed=not interrupted)
    except Exception as exc:  # any failure here is only a warning
        print(f"warning: the study's MLflow run could not be closed: {exc}", file=sys.stderr)


class _Recording:
    """The objective's observer for one trial, writing to its MLflow run."""

    def __init__(self, record: TrialRecord | None) -> None:
        self.record = record
        self.attrs: Mapping[str, Any] = {MLFLOW_RUN_ID: record.run_id} if record else {}

    def step(self, info: StepInfo) -> None:
        if self.record is not None:
            self.record.step(info)

    def epoch(self, info: EpochInfo) -> None:
        if self.record is not None:
            self.record.epoch(info)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        """A user loop's own step metrics (``ctx.log``; see lrsearch.trainers)."""
        if self.record is not None:
            self.record.metrics(step, values)

    def end(self, outcome: Outcome) -> Mapping[str, Any]:
        if self.record is None:
            return {}
        tags = {"lrsearch.diverged": "true"} if outcome.diverged else {}
        why = outcome.why_pruned
        if why is not None:  # the bound and the bar it fell short of, one tag each
            tags.update(
                {
                    "lrsearch.pruned.phase": f"{why.phase:.4g}",
                    "lrsearch.pruned.bound": f"{why.bound:.6g}",
                    "lrsearch.pruned.threshold": f"{why.threshold:.6g}",
                    "lrsearch.pruned.keep_top": str(why.keep_top),
                    "lrsearch.pruned.confidence": f"{why.confidence:g}",
                }
            )
        final = None
        if outcome.state == "COMPLETE" and outcome.value is not None:
            final = (outcome.steps, outcome.value)
        return self.record.end(
            outcome.state,
            reason=outcome.reason,
            final=final,
            interrupted=outcome.interrupted,
            extra_tags=tags,
        )


def observe_trials(recorder: StudyRecorder, handle: StudyHandle) -> Observe:
    """The objective's ``observe``: one MLflow run per trial (and the dead run of a retry closed)."""

    def observe(spec: TrialSpec) -> _Recording:
        dead_run = spec.retry_of_attrs.get(MLFLOW_RUN_ID)
        if spec.retry_of is not None and dead_run:
            recorder.close_lost(dead_run, reason=LOST_REASON, retried_as=spec.number)
        record = recorder.start_trial(
            spec.number,
            params={**spec.params, **spec.derived, "device": spec.device},
            tags={
                "optuna.study": handle.name,
                "optuna.trial_number": str(spec.number),
                "lrsearch.device": spec.device,
                **placement_tags(),  # where a launcher placed the worker, the GPUs it sees
                # an annihilation tail: the trial whose cycle it shares ([branching])
                **(
                    {"lrsearch.branch_of": str(spec.branch_of)}
                    if spec.branch_of is not None
                    else {}
                ),
                # a retry that went on from its original's checkpoint (lrsearch.checkpoints)
                **(
                    {"lrsearch.resumed_from_epoch": str(spec.resumed_from_epoch)}
                    if spec.resumed_from_epoch is not None
                    else {}
                ),
            },
            schedule=spec.schedule,
        )
        return _Recording(record)

    return observe


def recover_worker(handle: StudyHandle, owner: str, recorder: StudyRecorder | None) -> list[int]:
    """Fail and re-queue the trials a dead worker (``host:pid``) left RUNNING; close their runs."""
    recovered = []
    for trial in handle.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER) != owner or not fail_trial(
            handle.study, trial, DIED_REASON
        ):
            continue
        run_id = trial.user_attrs.get(MLFLOW_RUN_ID)
        if recorder is not None and run_id:
            recorder.close_lost(run_id, reason=DIED_REASON)
        recovered.append(trial.number)
    return recovered


def close_orphans(handle: StudyHandle, recorder: StudyRecorder) -> list[int]:
    """Close the runs still RUNNING of trials that have ended; their trial numbers.

    A worker lost near the end of a study leaves a FAIL trial that no retry will run (the
    budget is full): nothing else would ever close its run.
    """
    fail_stale(handle.study)  # lost workers on lrsearch's heartbeat: their trials end here
    _remove_stale_checkpoints(handle)
    return recorder.close_orphans(ended_trial_reasons(handle))


def _remove_stale_checkpoints(handle: StudyHandle) -> None:
    """Checkpoints of lost trials whose retry will never run (lrsearch.checkpoints)."""
    root = checkpoint_root(handle.storage_url)
    if root is None:
        return
    states = (TrialState.RUNNING, TrialState.WAITING)
    live = {
        int(t.system_attrs.get("failed_trial", t.number))
        for t in handle.study.get_trials(deepcopy=False, states=states)
    }
    remove_stale(root, handle.name, live)
