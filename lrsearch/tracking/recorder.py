"""The one owner of a study's MLflow runs: the parent run and every trial run, start to end.

Every way a trial's run can end goes through :class:`StudyRecorder` or the
:class:`TrialRecord` it hands out: finished, pruned (``KILLED`` + ``lrsearch.state=PRUNED``),
failed or interrupted (``FAILED``/``KILLED`` + ``lrsearch.reason``), retried after its worker
was lost (``FAILED`` + ``lrsearch.retried_as``), or lost with no retry ever run
(:meth:`StudyRecorder.close_orphans`). The search layer hands plain values in; this module never
sees Optuna.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrsearch.errors import TrackingError
from lrsearch.tracking._base import Status, Tracker, TrialRun
from lrsearch.tracking._range_test import record_range_test
from lrsearch.tracking._steps import StepSeries
from lrsearch.tracking._steps import share as tracking_share

if TYPE_CHECKING:
    from lrsearch.plots import StudyHistory
    from lrsearch.range_test import RangeTestResult
    from lrsearch.schedules import Schedule
    from lrsearch.training import EpochInfo, StepInfo

__all__ = ["LOST_REASON", "STEPS_FILE", "StudyRecorder", "TrialRecord"]

STEPS_FILE = "steps.csv"
"""A trial run's every step (step, lr, momentum, train_loss, a loop's own metrics)."""

LOST_REASON = "worker lost (heartbeat stale or process died)"
_ENDS = {  # trial state -> MLflow run status
    "COMPLETE": "FINISHED",
    "PRUNED": "KILLED",
    "FAIL": "FAILED",
}


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class TrialRecord:
    """One trial's MLflow run: step and epoch metrics in batches, artifacts, one truthful end.

    Attributes:
        run_id: the run's id.
        problems: what went wrong with the record (not with the trial), for the trial's attrs.
    """

    def __init__(
        self,
        run: TrialRun,
        artifacts: Future[None],
        *,
        number: int,
        metric: str,
        step_every: int | None = None,
    ) -> None:
        self.run_id = run.run_id
        self.number = number
        self.metric = metric
        self.problems: dict[str, Any] = {}
        self.steps = StepSeries(
            step_every, point_seconds=run._tracker.point_seconds, share=tracking_share()
        )
        self._run = run
        self._artifacts = artifacts
        self._started = time.perf_counter()

    def step(self, info: StepInfo) -> None:
        # once per training step: kept, and a point only every few steps (tracking._steps)
        loss = self.steps.add(info.step, info.lr, info.loss, info.momentum)
        if loss is not None or info.update_ratio is not None:
            self._run.log_step_values(
                info.step,
                None if loss is None else info.lr,
                loss,
                None if loss is None else info.momentum,
                info.update_ratio,
            )

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        """A user loop's own per-step metrics (``ctx.log``): kept, points as for the losses."""
        due = self.steps.add_metrics(step, values)
        if due:
            self._run.log_step(step, **due)

    def epoch(self, info: EpochInfo) -> None:
        metrics = {
            "val_loss": info.val_loss,
            f"val_{self.metric}": info.val_metric,
            "train_loss_epoch": info.train_loss,
            "epoch": float(info.epoch),
        }
        # A user loop (lrsearch.trainers) reports its metric only: its losses are NaN.
        losses = ("val_loss", "train_loss_epoch")
        self._run.log_epoch(
            info.step, **{k: v for k, v in metrics.items() if k not in losses or not math.isnan(v)}
        )

    def end(
        self,
        state: str,
        *,
        reason: str = "",
        final: tuple[int, float] | None = None,
        interrupted: bool = False,
        extra_tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Close the run for a trial that ended ``state`` (COMPLETE, PRUNED or FAIL).

        With a tracker that ends runs in the background (an MLflow writer process), the
        close goes to the sender thread, after the trial's last points, and this returns at
        once: what goes wrong then is a warning and a tag on the run, not in the result.

        Returns:
            What went wrong with the record, if anything (``tracking_error``,
            ``metrics_not_logged``), for the caller to keep with the trial.
        """
        status = "KILLED" if interrupted else _ENDS[state]
        tags = {"lrsearch.state": state, **(extra_tags or {})}
        if state != "COMPLETE":  # the runs table shows the state where MLflow's icon cannot
            tags["mlflow.runName"] = f"trial-{self.number} {state.lower()}"
        if reason:
            tags["lrsearch.reason"] = reason
        last = self.steps.last()
        if last is not None:  # the curves end at the trial's last step
            self._run.log_step_values(last[0], last[1], last[2], last[3], None)
        extra = self.steps.last_metrics()
        if extra is not None:
            self._run.log_step(extra[0], **extra[1])
        if final is not None:
            self._run.log_epoch(final[0], **{f"final_val_{self.metric}": final[1]})
        duration = {"duration_s": round(time.perf_counter() - self._started, 3)}
        tracker = self._run._tracker
        if tracker.ends_in_background:
            # After the trial's last points, on the sender thread; the next trial trains
            # meanwhile. What goes wrong then is a warning and a tag on the run.
            tracker._sender().submit(self._close, state, status, tags, duration, warn=True)
            return dict(self.problems)
        self._close(state, status, tags, duration, warn=False)
        return self.problems

    def _close(
        self, state: str, status: str, tags: dict[str, str], params: dict[str, Any], *, warn: bool
    ) -> None:
        try:
            self._artifacts.result()  # raises what the sender thread raised
            if self.steps.steps or self.steps.extra:
                self._run.log_table(STEPS_FILE, *self.steps.table())
        except Exception as exc:  # the record is incomplete, the trial's result stands
            problem = f"params, schedule or steps artifact not logged: {exc}"
            self.problems["tracking_error"] = problem
            if warn:
                _warn(f"trial {self.number}: {problem}")
        try:
            self._run.end(status, tags=tags, params=params)
            if self._run.points_unsent:
                self.problems["metrics_not_logged"] = self._run.points_unsent
        except TrackingError as exc:
            message = f"trial ended {state} but its MLflow run could not be closed: {exc}"
            self.problems["tracking_error"] = message
            _warn(message)


class StudyRecorder:
    """A study's runs in one tracker: the parent run, trial runs, and closing lost ones.

    Args:
        tracker: where to record.
        study_name: the study (and MLflow experiment) name.
        parent_run_id: the parent run, when the study already has one.
        metric: the workload's metric; trial runs log ``val_<metric>`` per epoch.
        step_every: a trial run's step metrics every this many steps; None: the stride that
            keeps them within their share of the training time (``lrsearch.tracking._steps``).
    """

    def __init__(
        self,
        tracker: Tracker,
        study_name: str,
        parent_run_id: str | None,
        *,
        metric: str = "metric",
        step_every: int | None = None,
    ) -> None:
        self.tracker = tracker
        self.study_name = study_name
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.step_every = step_every

    # The parent run.
    def open_parent(
        self, params: Mapping[str, Any], tags: Mapping[str, Any], *, description: str = ""
    ) -> str:
        """Create (or reopen, on resume) the study's parent run; its id.

        ``description`` (the study file, say) becomes the run's description in the MLflow UI.
        """
        if description:
            tags = {**tags, "mlflow.note.content": description}
        self.parent_run_id = self.tracker.start_study(self.study_name, params=params, tags=tags)
        return self.parent_run_id

    def log_range_test(self, result: RangeTestResult, *, config_json: str) -> None:
        """The range test's curves, suggestions and prior (metrics, JSON/CSV/PNG) on the parent."""
        from lrsearch import plots

        run = self._parent_run()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "range_test.json").write_text(result.to_json())
            (out / "range_test.csv").write_text(result.to_csv())
            plots.range_test_png(result, out / "range_test.png")
            record_range_test(run, result, out)
        run.flush()
        run.log_text("prior.json", result.prior.to_json())
        run.log_text("config.json", config_json)

    def close_parent(
        self, *, interrupted: bool, history: StudyHistory | None, failed: bool = False
    ) -> None:
        """Upload the study's plots and end the parent run: FINISHED, KILLED when interrupted,
        FAILED when the study stopped on an error.

        The run is ended even where its summary or plots cannot be written (an unwritable
        artifact store, say): that is a warning, not an error, for the study is done.
        """
        if self.parent_run_id is None:
            return
        try:
            self._write_summary(history)
        except (TrackingError, OSError) as exc:
            _warn(f"the study's summary and plots were not recorded: {exc}")
        status: Status = "FAILED" if failed else "KILLED" if interrupted else "FINISHED"
        self.tracker.end_run(self.parent_run_id, status)

    def _write_summary(self, history: StudyHistory | None) -> None:
        assert self.parent_run_id is not None
        if history is not None:
            self._summarise(history)
        if history is not None and history.numbers:
            from lrsearch import plots

            with tempfile.TemporaryDirectory() as tmp:
                for path in plots.study_pngs(history, Path(tmp)):
                    self.tracker.log_artifact_file(self.parent_run_id, path)

    def _summarise(self, history: StudyHistory) -> None:
        """What a reviewer wants at a glance: best value and trial, counts, best so far."""
        assert self.parent_run_id is not None
        counts = {f"trials_{state.lower()}": n for state, n in history.counts.items()}
        self.tracker.log_metrics(self.parent_run_id, counts)
        if not history.numbers:
            return
        better = max if history.maximize else min
        best = history.values[0]
        series = []
        for number, value in zip(history.numbers, history.values, strict=True):
            best = better(best, value)
            series.append((number, best))
        # One point per complete trial, at its number: a curve of the best value over trials.
        self.tracker.log_series(self.parent_run_id, f"best_val_{self.metric}", series)
        winner = history.numbers[list(history.values).index(best)]
        self.tracker.set_tags(
            self.parent_run_id,
            {"lrsearch.best_trial": str(winner), "lrsearch.best_value": f"{best:.6g}"},
        )

    def _parent_run(self) -> TrialRun:
        if self.parent_run_id is None:
            raise RuntimeError("open_parent() first")
        return TrialRun(self.tracker, self.parent_run_id)

    # Trial runs.
    def start_trial(
        self,
        number: int,
        *,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
        schedule: Schedule,
    ) -> TrialRecord | None:
        """A nested run for trial ``number``; None (with a warning) when the store refuses.

        Its params and schedule JSON are sent on the sender thread while the trial trains;
        :meth:`TrialRecord.end` waits for it.
        """
        if self.parent_run_id is None:
            return None
        try:
            # params go with the schedule, on the sender thread: the trial need not wait
            run = self.tracker.start_trial(
                self.parent_run_id, number, params={}, tags={**tags, "lrsearch.state": "RUNNING"}
            )
        except TrackingError as exc:
            # Training matters more than its record: the trial goes on without MLflow.
            _warn(f"no MLflow run for trial {number}: {exc}")
            return None
        artifacts = self.tracker._sender().submit(_log_start, run, params, schedule)
        return TrialRecord(
            run, artifacts, number=number, metric=self.metric, step_every=self.step_every
        )

    def close_lost(self, run_id: str, *, reason: str, retried_as: int | None = None) -> None:
        """End the run of a trial whose worker is gone: FAILED, with the reason (and its retry)."""
        tags = {"lrsearch.state": "FAIL", "lrsearch.reason": reason}
        if retried_as is not None:
            tags["lrsearch.retried_as"] = str(retried_as)
        try:
            self.tracker.set_tags(run_id, tags)
            self.tracker.end_run(run_id, "FAILED")
        except TrackingError as exc:
            _warn(f"could not close MLflow run {run_id} of a lost trial: {exc}")

    def close_orphans(self, ended: Mapping[int, str]) -> list[int]:
        """Close RUNNING runs of trials that have ended (trial number -> reason); their numbers.

        A run stays RUNNING when its worker died and no retry ever ran (the study reached its
        budget first): nobody else would ever close it.
        """
        try:
            runs = self.tracker.find_trial_runs(self.study_name)
        except TrackingError as exc:
            _warn(f"could not check for MLflow runs left RUNNING: {exc}")
            return []
        closed = []
        for run in runs:
            if run.status == "RUNNING" and run.trial_number in ended:
                self.close_lost(run.run_id, reason=ended[run.trial_number])
                closed.append(run.trial_number)
        return closed


def _log_start(run: TrialRun, params: Mapping[str, Any], schedule: Schedule) -> None:
    """The trial's params, and its schedule as JSON (the parent run draws every trial's in
    one PNG)."""
    run.log_params(params)
    run.log_text("schedule.json", json.dumps(schedule.to_dict(), indent=2))
