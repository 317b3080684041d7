"""Running a study's trials: the orchestration behind ``lrsearch run``.

One process here; ``lrsearch run --devices`` and ``lrsearch worker`` add more (see the
README's "Scale out"). Every worker loads the study from its storage and asks Optuna for the
next trial until the study holds the requested number of finished (complete + pruned) trials.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from lrsearch.config import StudyConfig
from lrsearch.errors import LrsearchError
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

__all__ = ["run_study", "run_trials"]

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
    run_id = tracker.start_study(handle.name, params=params,
                                 tags={"optuna.study": handle.name, "lrsearch.storage": redact(handle.storage_url)})
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
        tracker.log_artifact_file(run_id, plots.range_test_png(result, Path(tmp) / "range_test.png"))


def _log_study_plots(handle: StudyHandle, tracker: Any) -> None:
    from lrsearch import plots

    with tempfile.TemporaryDirectory() as tmp:
        for path in plots.study_pngs(handle, Path(tmp)):
            tracker.log_artifact_file(handle.parent_run_id, path)


class _FailureGuard:
    """Stops a worker whose trials keep failing, instead of retrying forever."""

    def __init__(self, limit: int = MAX_CONSECUTIVE_FAILURES) -> None:
        self.limit = limit
        self.streak = 0
        self.last_reason = ""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            self.streak += 1
            self.last_reason = trial.user_attrs.get("fail_reason", "unknown error")
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
) -> None:
    """Run trials in this process until the study holds ``n_trials`` finished ones.

    Raises:
        LrsearchError: when trials keep failing (the last reason is in the message).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    guard = _FailureGuard()
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
        MaxTrialsCallback(n_trials, states=FINISHED), guard,
    ]
    if on_trial is not None:
        callbacks.append(lambda study, trial: on_trial(trial))
    if handle.n_finished() >= n_trials:
        return
    handle.study.optimize(
        make_objective(handle, device=device, tracker=tracker, on_epoch=on_epoch),
        timeout=timeout, callbacks=callbacks, catch=(Exception,), gc_after_trial=False,
    )
    if guard.streak >= guard.limit:
        raise LrsearchError(
            f"{guard.streak} trials in a row failed; last: {guard.last_reason}. "
            "Fix the workload (see --debug) and run again to resume"
        )


def run_study(
    config: StudyConfig,
    *,
    storage_url: str,
    tracking_uri: str | None = None,
    tracking: bool = True,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
    show_progress: bool | None = None,
) -> str:
    """Create or resume a study, run its trials here, record them; returns a closing report."""
    uri = None
    if tracking and config.tracking.enabled:
        uri = tracking_uri or config.tracking.uri or str(default_home())
    from lrsearch.workloads import get_workload

    # Check what can be checked before anything is written: the workload, then the tracker
    # (fails fast on an unreachable server), and only then the storage.
    get_workload(config.study.workload, **config.study.workload_options)
    tracker = _tracker(uri)
    started = time.perf_counter()
    handle = open_study(config, storage_url, tracking_uri=uri, device=device, on_range_test=echo)
    first_time = handle.parent_run_id is None
    if tracker is not None:
        _start_parent(handle, tracker, first_time=first_time)
    from lrsearch.progress import StudyProgress

    interrupted = False
    with StudyProgress(handle, enabled=show_progress) as progress:
        try:
            run_trials(handle, n_trials=config.study.n_trials, timeout=config.study.timeout,
                       device=device, tracker=tracker, on_trial=progress.trial_done,
                       on_epoch=progress.epoch_done)
        except KeyboardInterrupt:
            interrupted = True
    if tracker is not None and handle.parent_run_id:
        _log_study_plots(handle, tracker)
        tracker.end_run(handle.parent_run_id, "KILLED" if interrupted else "FINISHED")
    report = closing_report(handle, time.perf_counter() - started, uri)
    if interrupted:
        raise LrsearchError(
            f"interrupted; running trials were ended and recorded. Resume with the same command. "
            f"{report.splitlines()[0]}"
        )
    return report


def closing_report(handle: StudyHandle, seconds: float, tracking_uri: str | None) -> str:
    """What ``lrsearch run`` prints at the end: counts, best schedule, where to look."""
    s = summary(handle)
    counts = s["trials"]
    lines = [
        f"study {handle.name!r}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned "
        f"({s['diverged']} diverged), {counts['FAIL']} failed in {seconds:.0f}s",
    ]
    best = s["best"]
    if best:
        metric = handle.study.user_attrs.get("lrsearch.workload", {}).get("metric", "metric")
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in best["params"].items())
        lines.append(f"best: trial {best['number']} val_{metric}={best['value']:.2f} ({params})")
        lines.append(f"  schedule as code: lrsearch best --study {handle.name} --format python")
    if tracking_uri:
        lines.append(f"  MLflow UI: lrsearch ui --study {handle.name}  (store: {redact(tracking_uri)})")
    return "\n".join(lines)
