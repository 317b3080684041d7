"""The trial objective: sample → schedule → trainer → outcome. No MLflow here.

:class:`Objective` is what Optuna calls per trial. Whoever wants to watch a trial (the MLflow
recorder, a progress bar, a test) passes ``observe``: a factory that gets the trial's
:class:`TrialSpec` before training and returns a :class:`TrialObserver` (or None). The
observer sees every step and epoch and the final :class:`Outcome`.

Example (not run as a doctest: ``handle`` is an opened study, :func:`lrsearch.study.open_study`):
    >>> objective = Objective(handle, device="cpu")   # doctest: +SKIP
    >>> handle.study.optimize(objective, n_trials=4)     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import optuna
from optuna.trial import TrialState

from lrsearch import interrupt
from lrsearch.branching import (
    Snapshots,
    branch_epoch,
    enqueue_tails,
    qualifies,
    tail_values,
)
from lrsearch.checkpoints import TrialCheckpoints, checkpoint_root
from lrsearch.heartbeat import beating, fail_stale
from lrsearch.pruning import PruneDecision, last_decision
from lrsearch.schedules import MetricDriven
from lrsearch.space import derived_params
from lrsearch.storage import read_trials, requeue_trial, system_attrs
from lrsearch.study import FINISHED, StudyHandle
from lrsearch.trials import (
    BRANCH_OF,
    DERIVED,
    DIVERGED,
    FAIL_REASON,
    PRUNED_BECAUSE,
    RESUMED_FROM_EPOCH,
    RETRY_OF,
    SURPLUS,
    TEST_METRIC,
    TRAINING,
    WORKER,
    sample_params,
    schedule_of,
    seed_of,
)

if TYPE_CHECKING:
    from lrsearch.schedules import Schedule
    from lrsearch.training import EpochInfo, Snapshot, StepInfo, TrainResult

__all__ = [
    "PRUNED_BECAUSE",
    "TRAINING",
    "Objective",
    "Outcome",
    "SurplusTrial",
    "TrialObserver",
    "TrialSpec",
    "claim",
    "worker_id",
]

State = Literal["COMPLETE", "PRUNED", "FAIL"]
# TRAINING and PRUNED_BECAUSE (user attribute keys) live in lrsearch.trials; kept here by import.


class SurplusTrial(Exception):
    """The study already has (or will have) its trials; this one backs off without training."""


@dataclass(frozen=True)
class TrialSpec:
    """One trial, sampled and ready to train.

    Attributes:
        retry_of: the number of the trial this one repeats (its worker was lost), if any.
        retry_of_attrs: that trial's user attributes (``mlflow_run_id`` among them).
        branch_of: for an annihilation tail ([branching]), the trial whose cycle it shares.
        resumed_from_epoch: a retry that goes on from its original's checkpoint: the epoch
            it resumes after (:mod:`lrsearch.checkpoints`).
    """

    number: int
    params: Mapping[str, Any]
    derived: Mapping[str, Any]
    schedule: Schedule
    total_steps: int
    device: str
    seed: int
    retry_of: int | None = None
    retry_of_attrs: Mapping[str, Any] = field(default_factory=dict)
    branch_of: int | None = None
    resumed_from_epoch: int | None = None


@dataclass(frozen=True)
class Outcome:
    """How a trial ended; ``value`` for COMPLETE ones, ``reason`` for the others."""

    state: State
    value: float | None = None
    reason: str = ""
    diverged: bool = False
    interrupted: bool = False
    epochs: int = 0
    steps: int = 0
    why_pruned: PruneDecision | None = None  # the pruner's judgement, where it keeps one


class TrialObserver(Protocol):
    """Watches one trial. ``attrs`` are kept on the Optuna trial as soon as it starts."""

    attrs: Mapping[str, Any]

    def step(self, info: StepInfo) -> None: ...

    def epoch(self, info: EpochInfo) -> None: ...

    def end(self, outcome: Outcome) -> Mapping[str, Any]:
        """Called once; returns attributes to keep on the trial (e.g. record problems)."""
        ...


Observe = Callable[[TrialSpec], "TrialObserver | None"]


def worker_id() -> str:
    """Who runs a trial: ``host:pid`` (stored on the trial, for crash recovery)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(study: optuna.Study, trial: optuna.Trial, n_trials: int, *, poll_s: float = 1.0) -> bool:
    """Whether ``trial`` may train without the study exceeding ``n_trials`` finished trials.

    Several workers ask for trials at once, so Optuna's MaxTrialsCallback alone overshoots.
    A trial goes ahead while finished trials plus running trials numbered before it stay
    under the target. Otherwise it waits for those to end; it gives up (False) once they
    have, or as soon as a crashed worker's trial comes back as a WAITING retry, which the
    next ``ask()`` will hand out. Lost workers' trials are failed (and re-queued) on the way:
    by lrsearch's heartbeat (:func:`lrsearch.heartbeat.fail_stale`) on any storage, and by
    Optuna's on a database.
    """
    from optuna.storages import fail_stale_trials

    while True:
        trials = read_trials(study)  # the sampler reuses this read (one round trip, not two)
        if fail_stale(study, trials):  # lost workers on lrsearch's heartbeat (lrsearch.heartbeat)
            continue  # read again: the failed trials and their WAITING retries
        finished = sum(t.state in FINISHED for t in trials)
        before = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
        if finished + before < n_trials:
            return True
        if before == 0 or any(t.state == TrialState.WAITING for t in trials):
            return False
        interrupt.check()
        time.sleep(poll_s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)  # a dead worker's trial becomes FAIL + a WAITING retry


class Objective:
    """The function Optuna calls per trial: sample, build the schedule, train, tell.

    Each user attribute is one storage round trip, so a trial writes few of them: ``worker``
    (``host:pid``) before :func:`claim`, so a supervisor can recover it; ``derived`` (and
    ``retry_of``, the observer's ``attrs``) before training; after it, ``test_metric`` where
    there is one, :data:`TRAINING` (``{"device", "seconds"}``), ``diverged`` or
    ``fail_reason`` where the trial ended so, :data:`PRUNED_BECAUSE` where the pruner said
    why it stopped the trial, and what the observer's ``end`` returns.
    ``surplus`` marks a trial that backed off without training.

    Args:
        handle: the opened study.
        device: where trials train.
        n_trials: the study's target of finished trials (surplus trials back off).
        observe: makes a :class:`TrialObserver` per trial (the MLflow recorder, say).
        on_epoch: progress callback ``(trial_number, epoch, epochs)``.
    """

    def __init__(
        self,
        handle: StudyHandle,
        *,
        device: str = "cpu",
        n_trials: int | None = None,
        observe: Observe | None = None,
        on_epoch: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.handle = handle
        self.device = device
        self.n_trials = n_trials or handle.config.study.n_trials
        self.observe = observe
        self.on_epoch = on_epoch
        self._snapshots = Snapshots()  # cycle ends of this worker's trials ([branching])
        # trial checkpoints (lrsearch.checkpoints): where, and each running trial's own
        self._checkpoint_root = checkpoint_root(handle.storage_url)
        self._checkpoints: dict[int, tuple[TrialCheckpoints, Snapshot | None]] = {}
        self._checkpoint_costs: dict[int, dict[str, float]] = {}
        self._checkpoint_s = 0.0  # one save's cost, as this worker's last trial measured it

    def __call__(self, trial: optuna.Trial) -> float:
        # lrsearch's heartbeat, for storages without Optuna's (the gRPC proxy): lrsearch.heartbeat
        with beating(trial):
            return self._call(trial)

    def _call(self, trial: optuna.Trial) -> float:
        if interrupt.requested():  # asked before it started: not a failure, nothing to record
            trial.set_user_attr(SURPLUS, True)
            interrupt.check()
        trial.set_user_attr(WORKER, worker_id())
        if not claim(self.handle.study, trial, self.n_trials):
            trial.set_user_attr(SURPLUS, True)
            raise SurplusTrial(f"study already has {self.n_trials} finished or running trials")
        try:
            spec = self._resumable(self.sample(trial))
        except Exception as exc:  # a schedule that cannot be built, say: say why, as a failure
            outcome = _failure(exc)
            if outcome is not None:
                trial.set_user_attr(FAIL_REASON, outcome.reason)
            raise
        observer = self.observe(spec) if self.observe else None
        trial.set_user_attr(DERIVED, dict(spec.derived))  # before training: pruners read it
        if spec.retry_of is not None:
            trial.set_user_attr(RETRY_OF, spec.retry_of)
        if spec.resumed_from_epoch is not None:
            trial.set_user_attr(RESUMED_FROM_EPOCH, spec.resumed_from_epoch)
        if observer is not None:
            _keep(trial, observer.attrs)
        started = time.perf_counter()
        try:
            result = self._train(trial, spec, observer)
        except BaseException as exc:
            # SIGTERM (a cluster preempting this worker): the trial is queued again at once and
            # its checkpoints stay for the retry; the user's Ctrl-C retries nothing
            preempted = isinstance(exc, interrupt.Preempted)
            self._close_checkpoints(trial.number, remove=not preempted)
            outcome = _failure(exc)
            if outcome is not None:
                self._end(trial, observer, outcome, started)
            if preempted:
                requeue_trial(self.handle.study, trial)
            raise
        finally:
            self._close_checkpoints(trial.number)  # ended, one way or another: not resumed
        study = self.handle.study
        outcome = _outcome(result, last_decision(study.pruner, study.study_name, trial.number))
        if outcome.state == "COMPLETE" and math.isfinite(result.test_metric):
            # Kept for reporting only (best, bench): the sampler and pruner see validation.
            trial.set_user_attr(TEST_METRIC, float(result.test_metric))
        self._end(trial, observer, outcome, started)
        if outcome.state == "PRUNED":
            raise optuna.TrialPruned(
                f"diverged: {outcome.reason}" if outcome.diverged else outcome.reason
            )
        return float(result.val_metric)

    def sample(self, trial: optuna.Trial) -> TrialSpec:
        """The trial's parameters and schedule (and which trial it repeats, for a retry)."""
        plan = self.handle.plan
        params = sample_params(self.handle, trial)
        schedule = schedule_of(self.handle, params)
        retry_of = system_attrs(trial).get("failed_trial")
        dead: Mapping[str, Any] = {}
        if retry_of is not None:  # the dead trial has ended: claim's read of the trials has it
            trials = read_trials(self.handle.study, fresh=False)
            dead = next((t.user_attrs for t in trials if t.number == retry_of), {})
        return TrialSpec(
            number=trial.number,
            params=params,
            derived=derived_params(schedule, plan.total_steps),
            schedule=schedule,
            total_steps=plan.total_steps,
            device=self.device,
            # a tail: its parent's seed; a retry (which may resume a checkpoint): its original's
            seed=seed_of(self.handle.config, trial, retry_of=retry_of),
            retry_of=retry_of,
            retry_of_attrs=dead,
            branch_of=trial.user_attrs.get(BRANCH_OF),
        )

    def _train(
        self, trial: optuna.Trial, spec: TrialSpec, observer: TrialObserver | None
    ) -> TrainResult:
        from lrsearch.trainers import TrainHooks

        plan = self.handle.plan

        def step_done(info: StepInfo) -> None:
            interrupt.check()  # between steps: the safe place to stop on Ctrl-C
            if observer is not None:
                observer.step(info)

        def epoch_done(info: EpochInfo) -> bool:
            interrupt.check()
            if observer is not None:
                observer.epoch(info)
            if self.on_epoch:
                self.on_epoch(trial.number, info.epoch, plan.epochs)
            trial.report(info.val_metric, info.epoch)
            # A trial that has trained its whole budget is complete: pruning it now saves
            # nothing and throws a finished result away.
            return info.epoch < plan.epochs and trial.should_prune()

        tails = _Tails(self.handle, self._snapshots, trial, spec)
        resume = tails.resume
        checkpoints, resumed = self._checkpoints.get(trial.number, (None, None))
        if resumed is not None:  # a retry: its original's epochs are this trial's too
            resume = resumed
            for info in resumed.history:
                if observer is not None:
                    observer.epoch(info)
        if resume is not None:  # a tail: the shared prefix's epochs are this trial's too
            for epoch in resume.history:
                trial.report(epoch.val_metric, epoch.epoch)
        result = plan.trainer.train(
            spec.schedule,
            params=spec.params,
            seed=spec.seed,
            device=self.device,
            number=spec.number,
            hooks=TrainHooks(
                on_step=step_done,
                on_epoch=epoch_done,
                on_metrics=getattr(observer, "metrics", None),
                update_ratio_every=self.handle.config.tracking.update_ratio_every,
                snapshot_at=tails.snapshot_epoch,
                on_snapshot=tails.keep,
                resume=resume,
                on_checkpoint=None if checkpoints is None else checkpoints.save,
            ),
        )
        tails.branch(result)
        return result

    def _end(
        self,
        trial: optuna.Trial,
        observer: TrialObserver | None,
        outcome: Outcome,
        started: float,
    ) -> None:
        seconds = time.perf_counter() - started
        self._close_checkpoints(trial.number)
        costs = self._checkpoint_costs.pop(trial.number, {})
        trial.set_user_attr(TRAINING, {"device": self.device, "seconds": seconds, **costs})
        if outcome.diverged:
            trial.set_user_attr(DIVERGED, outcome.reason)
        if outcome.state == "FAIL":
            trial.set_user_attr(FAIL_REASON, outcome.reason)
        if outcome.why_pruned is not None:
            trial.set_user_attr(PRUNED_BECAUSE, outcome.why_pruned.to_dict())
        if observer is not None:
            _keep(trial, observer.end(outcome))

    # --- trial checkpoints (lrsearch.checkpoints) ----------------------------------------
    def _resumable(self, spec: TrialSpec) -> TrialSpec:
        """Open the trial's checkpoints (where they are on); a retry gets its original's last."""
        if self._checkpoint_root is None or isinstance(spec.schedule, MetricDriven):
            return spec  # off, or a schedule driven by the metric: it cannot resume
        origin = spec.number if spec.retry_of is None else spec.retry_of
        identity = {**spec.params, "seed": spec.seed, "total_steps": spec.total_steps}
        checkpoints = TrialCheckpoints(
            self._checkpoint_root,
            self.handle.name,
            origin,
            identity,
            expected_s=self._checkpoint_s,
        )
        resumed = checkpoints.load() if spec.retry_of is not None else None
        self._checkpoints[spec.number] = (checkpoints, resumed)
        if resumed is None:
            return spec
        return dataclasses.replace(spec, resumed_from_epoch=resumed.epoch)

    def _close_checkpoints(self, number: int, *, remove: bool = True) -> None:
        """The trial has ended: remove its checkpoints (unless a retry resumes from them, after
        a preemption), keep what they cost for ``_end``."""
        checkpoints, _ = self._checkpoints.pop(number, (None, None))
        if checkpoints is not None:
            if remove:
                checkpoints.remove()
            costs = self._checkpoint_costs[number] = checkpoints.stats()
            self._checkpoint_s = costs.get("checkpoint_s", self._checkpoint_s)

    # --- end of trial checkpoints ---------------------------------------------------------


class _Tails:
    """One trial's part in annihilation branching (``[branching]``; :mod:`lrsearch.branching`).

    A trial with a tail to branch takes a snapshot at its cycle's last epoch boundary; if it
    finishes among the best ``top``, its tails are enqueued. A tail resumes from its parent's
    snapshot where this worker holds it, else trains from scratch.
    """

    def __init__(
        self, handle: StudyHandle, snapshots: Snapshots, trial: optuna.Trial, spec: TrialSpec
    ) -> None:
        self.handle, self.snapshots, self.number = handle, snapshots, trial.number
        self.parent: int | None = trial.user_attrs.get(BRANCH_OF)
        plan, section = handle.plan, handle.config.branching
        cut = branch_epoch(spec.derived.get("cycle_steps"), plan.total_steps, plan.steps_per_epoch)
        branchable = section.tails > 0 and "annihilation" in trial.params
        self.snapshot_epoch = cut if branchable and self.parent is None else None
        self.params = dict(trial.params)

    def keep(self, snapshot: Snapshot) -> None:
        self.snapshots.put(self.number, snapshot)

    @property
    def resume(self) -> Snapshot | None:
        """The parent's snapshot for a tail, where this worker holds it."""
        return None if self.parent is None else self.snapshots.get(self.parent)

    def branch(self, result: TrainResult) -> None:
        """Enqueue the tails of a trial that finished among the best."""
        if self.snapshot_epoch is None or result.diverged or result.stopped:
            self.snapshots.drop(self.number)
            return
        section, study = self.handle.config.branching, self.handle.study
        finished = [
            float(t.value)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None
        ]
        value = float(result.val_metric)
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        if not qualifies(value, [*finished, value], maximize=maximize, top=section.top):
            self.snapshots.drop(self.number)
            return
        space = self.handle.config.space.annihilation
        values = tail_values(
            self.params["annihilation"], low=space.low, high=space.high, tails=section.tails
        )
        enqueue_tails(study, self.params, self.number, values)


def _keep(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _outcome(result: TrainResult, decision: PruneDecision | None = None) -> Outcome:
    """How a trial that trained ended; ``decision`` is the pruner's last judgement of it."""
    # steps this trial trained: a tail's shared prefix was trained (and counted) by its parent
    epochs, steps = result.epochs, result.steps_trained
    if result.diverged:
        reason = result.diverge_reason or ""
        return Outcome("PRUNED", reason=reason, diverged=True, epochs=epochs, steps=steps)
    if result.stopped:
        reason = f"pruned at epoch {epochs}"
        why = decision if decision is not None and decision.pruned else None
        if why is not None and why.epoch == epochs:
            reason = f"{reason}: {why.describe()}"
        else:
            why = None
        return Outcome("PRUNED", reason=reason, epochs=epochs, steps=steps, why_pruned=why)
    return Outcome("COMPLETE", value=float(result.val_metric), epochs=epochs, steps=steps)


def _failure(exc: BaseException) -> Outcome | None:
    """The outcome of a trial that raised, or None where Optuna's own handling says it all."""
    if isinstance(exc, optuna.TrialPruned):
        return None
    if isinstance(exc, interrupt.Preempted):
        reason = (
            "preempted (SIGTERM): queued again with its parameters, resumed from its checkpoint"
        )
        return Outcome("FAIL", reason=reason, interrupted=True)
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    if "out of memory" in str(exc).lower():
        reason = f"CUDA out of memory: {reason}"
        _free_cuda_memory()
    return Outcome("FAIL", reason=reason, interrupted=isinstance(exc, KeyboardInterrupt))


def _free_cuda_memory() -> None:
    """After an OOM the worker goes on: give the failed trial's cached blocks back."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
