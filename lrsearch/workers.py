"""Running a study's trials: the orchestration behind ``lrsearch run``.

One process here; ``lrsearch run --devices`` and ``lrsearch worker`` add more (see the
README's "Scale out"). Every worker loads the study from its storage and asks Optuna for the
next trial until the study holds the requested number of finished (complete + pruned) trials.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from lrsearch.config import StudyConfig
from lrsearch.devices import Slot, parse_devices
from lrsearch.errors import LrsearchError, StorageError
from lrsearch.study import (
    FINISHED,
    StudyHandle,
    default_home,
    make_objective,
    open_study,
    redact,
    set_parent_run,
    summary,
)

__all__ = ["join_study", "run_study", "run_trials", "run_worker"]

MAX_CONSECUTIVE_FAILURES = 3


def _tracker(uri: str | None) -> Any:
    if uri is None:
        return None
    from lrsearch.tracking import MlflowTracker

    return MlflowTracker(uri)


def _flat(prefix: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(f"{prefix}.{key}" if prefix else key, value))
    return out


def _start_parent(handle: StudyHandle, tracker: Any, *, first_time: bool) -> None:
    """Create (or reopen) the study's MLflow parent run; log config and range test once."""
    cfg = json.loads(handle.config.to_json())
    params = {**_flat("", cfg), "storage": redact(handle.storage_url)}
    params.update({f"prior.{k}": v for k, v in handle.prior.to_dict().items()})
    for name, s in handle.range_test.get("suggestions", {}).items():
        params[f"range_test.{name}"] = s["median"]
    run_id = tracker.start_study(
        handle.name,
        params=params,
        tags={"optuna.study": handle.name, "lrsearch.storage": redact(handle.storage_url)},
    )
    if handle.parent_run_id != run_id:
        set_parent_run(handle, run_id)
    if first_time:
        _log_range_test(handle, tracker, run_id)


def _log_range_test(handle: StudyHandle, tracker: Any, run_id: str) -> None:
    from lrsearch import plots
    from lrsearch.range_test import RangeTestResult

    result = RangeTestResult.from_dict(handle.range_test)
    tracker.log_artifact_text(run_id, "range_test.json", result.to_json())
    tracker.log_artifact_text(run_id, "range_test.csv", result.to_csv())
    tracker.log_artifact_text(run_id, "prior.json", handle.prior.to_json())
    tracker.log_artifact_text(run_id, "config.json", handle.config.to_json())
    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_artifact_file(
            run_id, plots.range_test_png(result, Path(tmp) / "range_test.png")
        )


def _log_study_plots(handle: StudyHandle, tracker: Any) -> None:
    from lrsearch import plots

    with tempfile.TemporaryDirectory() as tmp:
        for path in plots.study_pngs(handle, Path(tmp)):
            tracker.log_artifact_file(handle.parent_run_id, path)


class _FailureGuard:
    """Says why a trial failed (one line), and stops a worker whose trials keep failing."""

    def __init__(
        self, limit: int = MAX_CONSECUTIVE_FAILURES, echo: Callable[[str], None] = print
    ) -> None:
        self.limit = limit
        self.echo = echo
        self.streak = 0
        self.last_reason = ""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
            self.streak += 1
            self.last_reason = trial.user_attrs.get("fail_reason", "unknown error")
            self.echo(f"trial {trial.number} failed: {self.last_reason}")
            if self.streak >= self.limit:
                study.stop()
        else:
            self.streak = 0


def run_trials(
    handle: StudyHandle,
    *,
    n_trials: int,
    timeout: float | None = None,
    device: str = "cpu",
    tracker: Any = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    on_epoch: Callable[[int, int, int], None] | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Run trials in this process until the study holds ``n_trials`` finished ones.

    Raises:
        LrsearchError: when trials keep failing (the last reason is in the message).
    """
    # Optuna would log each failed trial with its traceback; _FailureGuard says it in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    guard = _FailureGuard(echo=echo)
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
        MaxTrialsCallback(n_trials, states=FINISHED),
        guard,
        _stop_on_surplus,
    ]
    if on_trial is not None:
        callbacks.append(lambda study, trial: on_trial(trial))
    if handle.n_finished() >= n_trials:
        return
    with warnings.catch_warnings():
        # Optuna logs every caught trial failure as a warning; the trial's state and
        # fail_reason attribute already record it.
        warnings.simplefilter("ignore", UserWarning)
        handle.study.optimize(
            make_objective(
                handle, device=device, tracker=tracker, n_trials=n_trials, on_epoch=on_epoch
            ),
            timeout=timeout,
            callbacks=callbacks,
            catch=(Exception,),
            gc_after_trial=False,
        )
    if guard.streak >= guard.limit:
        raise LrsearchError(
            f"{guard.streak} trials in a row failed; last: {guard.last_reason}. "
            "Fix the workload (see --debug) and run again to resume"
        )


def _stop_on_surplus(study: optuna.Study, trial: FrozenTrial) -> None:
    """A surplus trial means the study is (about to be) full: stop unless a retry waits."""
    if trial.user_attrs.get("surplus") and not study.get_trials(
        deepcopy=False, states=(TrialState.WAITING,)
    ):
        study.stop()


def run_worker(
    handle: StudyHandle,
    slot: Slot,
    *,
    n_trials: int,
    timeout: float | None = None,
    tracker: Any = None,
    progress: Any = None,
    echo: Callable[[str], None] = print,
) -> None:
    """One worker in this process: pin threads, then run trials on the slot's device."""
    import torch

    torch.set_num_threads(int(os.environ.get("LRSEARCH_THREADS", slot.threads)))
    run_trials(
        handle,
        n_trials=n_trials,
        timeout=timeout,
        device=slot.device,
        tracker=tracker,
        on_trial=progress.trial_done if progress else None,
        on_epoch=progress.epoch_done if progress else None,
        echo=echo,
    )


def _prepare(
    config: StudyConfig, *, tracking_uri: str | None, tracking: bool
) -> tuple[Any, str | None, Any]:
    """Check what can be checked before anything is written: workload, then tracking server.

    Returns the built workload, the tracking URI and the tracker (None without tracking).
    """
    from lrsearch.workloads import get_workload

    workload = get_workload(config.study.workload, **config.study.workload_options)
    uri = None
    if tracking and config.tracking.enabled:
        uri = tracking_uri or config.tracking.uri or str(default_home())
    return workload, uri, _tracker(uri)  # fails fast on an unreachable server, before the storage


def run_study(
    config: StudyConfig,
    *,
    storage_url: str,
    tracking_uri: str | None = None,
    tracking: bool = True,
    devices: str = "cpu",
    trials_per_device: int = 1,
    echo: Callable[[str], None] = print,
    show_progress: bool | None = None,
) -> str:
    """Create or resume a study, run its trials on every device slot, record them.

    Returns:
        The closing report (counts, best schedule, where to look).
    """
    slots = parse_devices(devices, trials_per_device)
    workload, uri, tracker = _prepare(config, tracking_uri=tracking_uri, tracking=tracking)
    started = time.perf_counter()
    range_device = (
        slots[0].device if slots[0].visible_gpu is None else f"cuda:{slots[0].visible_gpu}"
    )
    import torch

    torch.set_num_threads(int(os.environ.get("LRSEARCH_THREADS", slots[0].threads)))
    handle = open_study(
        config,
        storage_url,
        tracking_uri=uri,
        device=range_device,
        on_range_test=echo,
        workload=workload,
    )
    if tracker is not None:
        _start_parent(handle, tracker, first_time=handle.parent_run_id is None)
    interrupted = _execute(
        handle,
        slots,
        n_trials=config.study.n_trials,
        timeout=config.study.timeout,
        tracker=tracker,
        show_progress=show_progress,
        echo=echo,
    )
    return _finish(handle, tracker, uri, time.perf_counter() - started, interrupted)


def join_study(
    study_name: str,
    *,
    storage_url: str,
    devices: str = "auto",
    trials_per_device: int = 1,
    n_trials: int | None = None,
    timeout: float | None = None,
    allow_workloads: tuple[str, ...] = (),
    echo: Callable[[str], None] = print,
    show_progress: bool | None = None,
) -> str:
    """``lrsearch worker``: join an existing study; everything else comes from its storage.

    Only trusted workloads are imported (see :func:`lrsearch.workloads.check_allowed`).
    """
    from lrsearch.study import load_study
    from lrsearch.workloads import check_allowed, get_workload

    slots = parse_devices(devices, trials_per_device)
    # Unseeded: workers on other hosts (or in other containers) must not repeat each other's
    # random startup draws; the study's own seed drives the orchestrating `lrsearch run`.
    handle = load_study(study_name, storage_url, seed=None)
    check_allowed(handle.config.study.workload, allow_workloads)
    get_workload(handle.config.study.workload, **handle.config.study.workload_options)
    tracker = _tracker(handle.tracking_uri)
    target = n_trials or handle.n_trials_target
    started = time.perf_counter()
    interrupted = _execute(
        handle,
        slots,
        n_trials=target,
        timeout=timeout,
        tracker=tracker,
        show_progress=show_progress,
        echo=echo,
    )
    return closing_report(handle, time.perf_counter() - started, handle.tracking_uri, interrupted)


def _execute(
    handle: StudyHandle,
    slots: list[Slot],
    *,
    n_trials: int,
    timeout: float | None,
    tracker: Any,
    show_progress: bool | None,
    echo: Callable[[str], None],
) -> bool:
    """Run the trials here (one slot) or in supervised worker processes; True if interrupted."""
    from lrsearch.progress import StudyProgress
    from lrsearch.supervisor import Supervisor

    quiet = os.environ.get("LRSEARCH_QUIET") == "1"
    with StudyProgress(
        handle, enabled=False if quiet else show_progress, n_trials=n_trials
    ) as progress:
        try:
            if len(slots) == 1:
                run_worker(
                    handle,
                    slots[0],
                    n_trials=n_trials,
                    timeout=timeout,
                    tracker=tracker,
                    progress=progress,
                    echo=echo,
                )
            else:
                Supervisor(
                    handle, slots, n_trials=n_trials, timeout=timeout, tracker=tracker, echo=echo
                ).run(progress)
        except KeyboardInterrupt:
            return True
        except SQLAlchemyError as exc:
            reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
            raise StorageError(
                f"the storage became unreachable during the study ({reason}); finished trials "
                "are kept; when it is back, run the same command to resume"
            ) from None
    return False


def _finish(
    handle: StudyHandle, tracker: Any, uri: str | None, seconds: float, interrupted: bool
) -> str:
    if tracker is not None and handle.parent_run_id:
        _log_study_plots(handle, tracker)
        tracker.end_run(handle.parent_run_id, "KILLED" if interrupted else "FINISHED")
    return closing_report(handle, seconds, uri, interrupted)


def closing_report(
    handle: StudyHandle, seconds: float, tracking_uri: str | None, interrupted: bool = False
) -> str:
    """What ``lrsearch run`` prints at the end: counts, best schedule, where to look.

    Raises:
        LrsearchError: when interrupted (after everything was closed), with the report's
            first line and how to resume.
    """
    s = summary(handle)
    counts = s["trials"]
    lines = [
        f"study {handle.name!r}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned "
        f"({s['diverged']} diverged), {counts['FAIL']} failed in {seconds:.0f}s",
    ]
    best = s["best"]
    if best:
        metric = handle.study.user_attrs.get("lrsearch.workload", {}).get("metric", "metric")
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in best["params"].items()
        )
        lines.append(f"best: trial {best['number']} val_{metric}={best['value']:.2f} ({params})")
        lines.append(f"  schedule as code: lrsearch best --study {handle.name} --format python")
    if tracking_uri:
        lines.append(
            f"  MLflow UI: lrsearch ui --study {handle.name}  (store: {redact(tracking_uri)})"
        )
    if interrupted:
        raise LrsearchError(
            "interrupted; running trials were ended and recorded. Resume with the same command. "
            + lines[0]
        )
    return "\n".join(lines)
