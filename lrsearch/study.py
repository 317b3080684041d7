"""A study: its storage, its range-test prior, and the trial objective.

A study lives in its Optuna storage. Config, range-test result, prior and the MLflow parent
run id are stored as study attributes, so any worker on any host needs only the study name
and the storage URL.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from lrsearch.config import StudyConfig
from lrsearch.errors import ConfigError, StorageError, TrackingError
from lrsearch.prior import LRPrior
from lrsearch.pruning import make_pruner
from lrsearch.sampler import PriorGuidedSampler
from lrsearch.space import build_schedule, default_params, derived_params, suggest_params

__all__ = [
    "StudyHandle",
    "default_home",
    "default_storage",
    "load_study",
    "make_objective",
    "open_study",
    "redact",
]

KEY_CONFIG = "lrsearch.config"
KEY_FINGERPRINT = "lrsearch.fingerprint"
KEY_RANGE_TEST = "lrsearch.range_test"
KEY_PRIOR = "lrsearch.prior"
KEY_TRACKING = "lrsearch.tracking_uri"
KEY_PARENT_RUN = "lrsearch.parent_run_id"
KEY_WORKLOAD_INFO = "lrsearch.workload"
KEY_TARGET = "lrsearch.n_trials"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_S = int(os.environ.get("LRSEARCH_HEARTBEAT_S", "10"))
GRACE_S = int(os.environ.get("LRSEARCH_GRACE_S", "30"))


def default_home() -> Path:
    """The embedded default's directory: ``$LRSEARCH_HOME`` or ``./lrsearch-runs``."""
    return Path(os.environ.get("LRSEARCH_HOME", "lrsearch-runs")).resolve()


def default_storage(home: Path | None = None) -> str:
    """``--storage``, else ``$LRSEARCH_STORAGE``, else SQLite under the home directory."""
    env = os.environ.get("LRSEARCH_STORAGE")
    if env:
        return env
    home = home or default_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'optuna.db'}"


def redact(url: str | None) -> str:
    """A storage or tracking URL with any password replaced by ``***``."""
    from lrsearch.tracking import redact_url

    return redact_url(url) if url else ""


def _storage(url: str) -> optuna.storages.BaseStorage:
    """Open an Optuna storage; failures become one line without the password."""
    try:
        if url.startswith(("postgresql", "mysql", "sqlite")):
            with warnings.catch_warnings():
                # Heartbeats are the standard crash recovery, but still flagged experimental.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=2
                    ),
                    engine_kwargs=None if url.startswith("sqlite") else {"pool_pre_ping": True},
                )
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(
            f"cannot open storage {redact(url)}: {redact(reason)}; check the URL, the server "
            "and the credentials"
        ) from None
    raise StorageError(
        f"unsupported storage URL {redact(url)}; use sqlite:///path, postgresql://..., "
        "or journal:/path/file.log"
    )


@dataclass
class StudyHandle:
    """An opened study and everything stored with it."""

    study: optuna.Study
    config: StudyConfig
    prior: LRPrior
    range_test: dict[str, Any]
    storage_url: str
    tracking_uri: str | None
    parent_run_id: str | None

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def n_trials_target(self) -> int:
        """Finished trials the study aims for (set by the latest ``lrsearch run``)."""
        return int(self.study.user_attrs.get(KEY_TARGET, self.config.study.n_trials))

    def n_finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))


def _attrs(study: optuna.Study) -> dict[str, Any]:
    return study.user_attrs


def study_exists(name: str, storage_url: str) -> bool:
    storage = _storage(storage_url)
    return any(s.study_name == name for s in storage.get_all_studies())


def _sampler(config: StudyConfig, prior: LRPrior, seed: int | None) -> PriorGuidedSampler:
    return PriorGuidedSampler(
        prior,
        n_startup_trials=config.prior.n_startup_trials,
        prior_decay_trials=config.prior.weight_decay_trials,
        multivariate=config.sampler.multivariate,
        constant_liar=config.sampler.constant_liar,
        group=len(config.space.policies) > 1,
        seed=seed,
    )


def _pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    p = config.pruner
    if p.name == "plateau":
        return make_pruner(
            "plateau",
            patience=p.patience,
            min_delta=p.min_delta,
            percentile=p.percentile,
            n_warmup_steps=p.n_warmup_steps,
            n_startup_trials=p.n_startup_trials,
        )
    if p.name == "median":
        return make_pruner(
            "median", n_warmup_steps=p.n_warmup_steps, n_startup_trials=p.n_startup_trials
        )
    return make_pruner(p.name)


def open_study(
    config: StudyConfig,
    storage_url: str,
    *,
    tracking_uri: str | None,
    device: str = "cpu",
    on_range_test: Callable[[str], None] | None = None,
    workload: Any = None,
) -> StudyHandle:
    """Create the study, or resume it; run the range test the first time only.

    ``workload`` is the study's workload when the caller has already built it.

    Raises:
        ConfigError: the study exists with a different search config.
        StorageError: the storage cannot be opened.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(storage_url)
    name = config.study.name
    from lrsearch.workloads import get_workload

    if workload is None:
        workload = get_workload(config.study.workload, **config.study.workload_options)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if name in existing:
        stored = existing[name].user_attrs.get(KEY_FINGERPRINT)
        if stored is not None and stored != config.fingerprint():
            raise ConfigError(
                f"study {name!r} already exists in {redact(storage_url)} with a different "
                "config; resume it with its original file, or pass --study-name NEW to start a new one"
            )
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction=workload.metric.direction,
        load_if_exists=True,
    )
    if KEY_CONFIG not in study.user_attrs:
        study.set_user_attr(KEY_CONFIG, config.to_json())
        study.set_user_attr(KEY_FINGERPRINT, config.fingerprint())
        study.set_user_attr(
            KEY_WORKLOAD_INFO,
            {
                "name": workload.name,
                "metric": workload.metric.name,
                "direction": workload.metric.direction,
            },
        )
    study.set_user_attr(
        KEY_TARGET, config.study.n_trials
    )  # the latest run's budget; workers follow it
    if tracking_uri and KEY_TRACKING not in study.user_attrs:
        study.set_user_attr(KEY_TRACKING, tracking_uri)
    if KEY_PRIOR not in study.user_attrs:
        if on_range_test:
            on_range_test("running the LR range test (first time for this study)")
        _store_range_test(study, config, workload, device)
        prior = LRPrior.from_dict(study.user_attrs[KEY_PRIOR])
        if not study.trials:
            study.enqueue_trial(
                default_params(config.space, prior), user_attrs={"lrsearch.origin": "prior-centre"}
            )
    return load_study(name, storage_url)


def _store_range_test(study: optuna.Study, config: StudyConfig, workload: Any, device: str) -> None:
    from lrsearch.prior import LRPrior as Prior
    from lrsearch.range_test import range_test_workload

    rt = config.range_test
    result = range_test_workload(
        workload,
        device=device,
        seed=config.study.seed,
        batch_size=config.study.batch_size,
        start_lr=rt.start_lr,
        end_lr=rt.end_lr,
        num_iter=rt.num_iter,
        repeats=rt.repeats,
        diverge_factor=rt.diverge_factor,
    )
    pc = config.prior
    overrides = {
        k: v
        for k, v in {
            "anchor": pc.anchor,
            "offset_decades": pc.offset_decades,
            "sigma_floor_decades": pc.sigma_floor_decades,
            "low_decades": pc.low_decades,
            "high_factor": pc.high_factor,
        }.items()
        if v is not None
    }
    if overrides:
        result.prior = Prior.from_suggestions(result.summary, **overrides)  # type: ignore[arg-type]
    study.set_user_attr(KEY_RANGE_TEST, result.to_dict())
    study.set_user_attr(KEY_PRIOR, result.prior.to_dict())


_STUDY_SEED = object()


def load_study(name: str, storage_url: str, *, seed: Any = _STUDY_SEED) -> StudyHandle:
    """Open an existing lrsearch study by name (any host, any worker)."""
    storage = _storage(storage_url)
    names = [s.study_name for s in storage.get_all_studies()]
    if name not in names:
        known = ", ".join(sorted(names)[:10]) or "none"
        raise StorageError(
            f"no study named {name!r} in {redact(storage_url)} (studies there: {known}); "
            "check --study or create it with 'lrsearch run FILE'"
        )
    bare = optuna.load_study(study_name=name, storage=storage)
    attrs = _attrs(bare)
    if KEY_CONFIG not in attrs or KEY_PRIOR not in attrs:
        raise StorageError(
            f"study {name!r} was not created by lrsearch run (or its range test never finished); "
            "start it with 'lrsearch run FILE'"
        )
    config = StudyConfig.from_json(attrs[KEY_CONFIG])
    prior = LRPrior.from_dict(attrs[KEY_PRIOR])
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=_sampler(config, prior, config.study.seed if seed is _STUDY_SEED else seed),
        pruner=_pruner(config),
    )
    return StudyHandle(
        study=study,
        config=config,
        prior=prior,
        range_test=attrs.get(KEY_RANGE_TEST, {}),
        storage_url=storage_url,
        tracking_uri=attrs.get(KEY_TRACKING),
        parent_run_id=attrs.get(KEY_PARENT_RUN),
    )


def trial_plan(handle: StudyHandle) -> tuple[Any, int, int]:
    """The workload, epochs per trial and steps per epoch for this study."""
    from lrsearch.workloads import get_workload

    cfg = handle.config.study
    workload = get_workload(cfg.workload, **cfg.workload_options)
    epochs = cfg.epochs or workload.epochs
    return workload, epochs, workload.steps_per_epoch(cfg.batch_size)


class SurplusTrial(Exception):
    """The study already has (or will have) its trials; this one backs off without training."""


def worker_id() -> str:
    """Who runs a trial: ``host:pid`` (stored on the trial, for crash recovery)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(study: optuna.Study, trial: optuna.Trial, n_trials: int, *, poll_s: float = 1.0) -> bool:
    """Whether ``trial`` may train without the study exceeding ``n_trials`` finished trials.

    Several workers ask for trials at once, so Optuna's MaxTrialsCallback alone overshoots.
    A trial goes ahead while finished trials plus running trials numbered before it stay
    under the target. Otherwise it waits for those to end; it gives up (False) once they
    have, or as soon as a crashed worker's trial comes back as a WAITING retry, which the
    next ``ask()`` will hand out.
    """
    from optuna.storages import fail_stale_trials

    while True:
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        before = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
        if finished + before < n_trials:
            return True
        if before == 0 or any(t.state == TrialState.WAITING for t in trials):
            return False
        time.sleep(poll_s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)  # a dead worker's trial becomes FAIL + a WAITING retry


def make_objective(
    handle: StudyHandle,
    *,
    device: str = "cpu",
    tracker: Any = None,
    n_trials: int | None = None,
    on_epoch: Callable[[int, int, int], None] | None = None,
) -> Callable[[optuna.Trial], float]:
    """The function Optuna calls per trial: sample, build the schedule, train, record.

    Args:
        handle: the opened study.
        device: where trials train.
        tracker: an ``lrsearch.tracking`` tracker, or None for no MLflow record.
        n_trials: the study's target of finished trials (surplus trials back off).
        on_epoch: progress callback ``(trial_number, epoch, epochs)``.
    """
    workload, epochs, steps_per_epoch = trial_plan(handle)
    total_steps = epochs * steps_per_epoch
    cfg = handle.config
    target = n_trials or cfg.study.n_trials

    def objective(trial: optuna.Trial) -> float:
        from lrsearch.training import train

        trial.set_user_attr("worker", worker_id())
        if not claim(handle.study, trial, target):
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"study already has {target} finished or running trials")
        if tracker is not None:
            _close_retried_run(handle, trial, tracker)
        params = suggest_params(trial, cfg.space, handle.prior)
        schedule = build_schedule(params, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
        recorder = _TrialRecorder(trial, handle, tracker, params, schedule, total_steps, device)

        def epoch_done(info: Any) -> bool:
            recorder.epoch(info)
            if on_epoch:
                on_epoch(trial.number, info.epoch, epochs)
            trial.report(info.val_metric, info.epoch)
            return trial.should_prune()

        try:
            result = train(
                workload,
                schedule,
                epochs=epochs,
                batch_size=cfg.study.batch_size,
                weight_decay=params["weight_decay"],
                device=device,
                seed=cfg.study.seed + trial.number,
                on_step=recorder.step,
                on_epoch=epoch_done,
                update_ratio_every=cfg.tracking.update_ratio_every,
            )
        except BaseException as exc:
            recorder.fail(exc)
            raise
        return recorder.finish(result)

    return objective


def _close_retried_run(handle: StudyHandle, trial: optuna.Trial, tracker: Any) -> None:
    """A retry of a crashed trial marks the dead trial's MLflow run FAILED, pointing here."""
    failed = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
    if failed is None:
        return
    dead = handle.study._storage.get_trial(
        handle.study._storage.get_trial_id_from_study_id_trial_number(
            handle.study._study_id, failed
        )
    )
    run_id = dead.user_attrs.get("mlflow_run_id")
    trial.set_user_attr("retry_of", failed)
    if run_id:
        tracker.set_tags(
            run_id,
            {
                "lrsearch.state": "FAIL",
                "lrsearch.retried_as": str(trial.number),
                "lrsearch.reason": "worker lost (heartbeat stale or process died)",
            },
        )
        tracker.end_run(run_id, "FAILED")


class _TrialRecorder:
    """Wires one trial's training callbacks into its MLflow run and Optuna attributes."""

    def __init__(
        self,
        trial: optuna.Trial,
        handle: StudyHandle,
        tracker: Any,
        params: dict[str, Any],
        schedule: Any,
        total_steps: int,
        device: str,
    ) -> None:
        self.trial = trial
        self.started = time.perf_counter()
        derived = derived_params(schedule, total_steps)
        trial.set_user_attr("derived", derived)
        trial.set_user_attr("device", device)
        self.run: Any = None
        self._artifacts: Any = None
        if tracker is not None and handle.parent_run_id:
            try:
                self._start_run(tracker, handle, params, derived, schedule, total_steps, device)
            except TrackingError as exc:
                # Training matters more than its record: the trial goes on without MLflow.
                self._untracked(f"no MLflow run for trial {trial.number}: {exc}")

    def _untracked(self, reason: str) -> None:
        self.trial.set_user_attr("tracking_error", reason)
        print(f"warning: {reason}", file=sys.stderr)
        self.run = None

    def _start_run(
        self,
        tracker: Any,
        handle: StudyHandle,
        params: dict[str, Any],
        derived: dict[str, Any],
        schedule: Any,
        total_steps: int,
        device: str,
    ) -> None:
        run = tracker.start_trial(
            handle.parent_run_id,
            self.trial.number,
            params={**params, **derived, "device": device},
            tags={
                "optuna.study": handle.name,
                "optuna.trial_number": str(self.trial.number),
                "lrsearch.state": "RUNNING",
                "lrsearch.device": device,
            },
        )
        self.run = run
        self.trial.set_user_attr("mlflow_run_id", run.run_id)
        # Drawing and uploading the schedule takes ~0.5 s: the sender thread does it while
        # the trial trains (_end waits for it).
        self._artifacts = tracker._sender().submit(
            self._log_schedule, run, schedule, total_steps, self.trial.number
        )

    @staticmethod
    def _log_schedule(run: Any, schedule: Any, total_steps: int, number: int) -> None:
        import tempfile

        from lrsearch.plots import schedule_png

        run.log_text("schedule.json", json.dumps(schedule.to_dict(), indent=2))
        with tempfile.TemporaryDirectory() as tmp:
            path = schedule_png(
                schedule, Path(tmp) / "schedule.png", n_steps=total_steps, title=f"trial {number}"
            )
            run.log_file(path)

    def step(self, info: Any) -> None:
        if self.run is None:
            return
        metrics = {"lr": info.lr, "train_loss": info.loss}
        if info.momentum is not None:
            metrics["momentum"] = info.momentum
        if info.update_ratio is not None:
            metrics["update_ratio"] = info.update_ratio
        self.run.log_step(info.step, **metrics)

    def epoch(self, info: Any) -> None:
        if self.run is not None:
            self.run.log_epoch(
                info.step,
                val_loss=info.val_loss,
                val_metric=info.val_metric,
                train_loss_epoch=info.train_loss,
                epoch=float(info.epoch),
            )

    def _end(self, status: str, state: str, **tags: str) -> None:
        self.trial.set_user_attr("seconds", time.perf_counter() - self.started)
        if self.run is None:
            return
        if self._artifacts is not None:
            try:
                self._artifacts.result()  # raises what the sender thread raised
            except Exception as exc:  # the record is incomplete, the trial's result stands
                self.trial.set_user_attr("tracking_error", f"schedule artifacts not logged: {exc}")
        try:
            self.run.log_params({"duration_s": round(time.perf_counter() - self.started, 3)})
            self.run.end(status, tags={"lrsearch.state": state, **tags})
            if self.run.points_unsent:
                self.trial.set_user_attr("metrics_not_logged", self.run.points_unsent)
        except TrackingError as exc:
            self._untracked(
                f"trial {self.trial.number} ended {state} but its MLflow run could not be closed: {exc}"
            )

    def finish(self, result: Any) -> float:
        if result.diverged:
            self.trial.set_user_attr("diverged", result.diverge_reason)
            self._end(
                "KILLED",
                "PRUNED",
                **{"lrsearch.diverged": "true", "lrsearch.reason": result.diverge_reason or ""},
            )
            raise optuna.TrialPruned(f"diverged: {result.diverge_reason}")
        if result.stopped:
            self._end("KILLED", "PRUNED", **{"lrsearch.reason": f"pruned at epoch {result.epochs}"})
            raise optuna.TrialPruned(f"pruned at epoch {result.epochs}")
        if self.run is not None:
            self.run.log_epoch(result.steps, final_val_metric=result.val_metric)
        self._end("FINISHED", "COMPLETE")
        return float(result.val_metric)

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, optuna.TrialPruned):
            return
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        if "out of memory" in str(exc).lower():
            reason = f"CUDA out of memory: {reason}"
            _free_cuda_memory()
        self.trial.set_user_attr("fail_reason", reason)
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        self._end(status, "FAIL", **{"lrsearch.reason": reason})


def _free_cuda_memory() -> None:
    """After an OOM the worker goes on: give the failed trial's cached blocks back."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def best_trial(handle: StudyHandle) -> optuna.trial.FrozenTrial:
    """The best COMPLETE trial; StorageError if there is none yet."""
    try:
        return handle.study.best_trial
    except ValueError:
        raise StorageError(
            f"study {handle.name!r} has no completed trial yet; run more trials with "
            f"'lrsearch run' or 'lrsearch worker --study {handle.name}'"
        ) from None


def trial_schedule(handle: StudyHandle, trial: optuna.trial.FrozenTrial) -> Any:
    """Rebuild the schedule a finished trial trained with."""
    _, epochs, steps_per_epoch = trial_plan(handle)
    params = dict(trial.params)
    for key, value in default_params(handle.config.space, handle.prior).items():
        params.setdefault(key, value)  # fixed (low == high) parameters are not in trial.params
    return build_schedule(
        params, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch
    )


def summary(handle: StudyHandle) -> dict[str, Any]:
    """Counts by state, best value and params, running trials: what ``lrsearch status`` shows."""
    trials = handle.study.get_trials(deepcopy=False)
    counts = {state.name: 0 for state in TrialState}
    for t in trials:
        if not t.user_attrs.get("surplus"):  # backed-off asks of parallel workers: not failures
            counts[t.state.name] += 1
    out: dict[str, Any] = {
        "study": handle.name,
        "storage": redact(handle.storage_url),
        "direction": handle.study.direction.name.lower(),
        "trials": counts,
        "diverged": sum(1 for t in trials if "diverged" in t.user_attrs),
        "prior": handle.prior.to_dict(),
        "n_trials_target": handle.n_trials_target,
        "running": [
            {"number": t.number, "params": t.params, "last_step": t.last_step}
            for t in trials
            if t.state == TrialState.RUNNING
        ],
        "best": None,
    }
    complete = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    if complete:
        best = handle.study.best_trial
        out["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
        }
    return out


def list_studies(storage_url: str) -> list[str]:
    """Names of the studies in a storage."""
    return sorted(s.study_name for s in _storage(storage_url).get_all_studies())


def set_parent_run(handle: StudyHandle, run_id: str) -> None:
    """Remember the study's MLflow parent run, for every later worker."""
    handle.study.set_user_attr(KEY_PARENT_RUN, run_id)
    handle.parent_run_id = run_id
