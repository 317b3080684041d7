"""Running a study's trials: the orchestration behind ``lrsearch run``.

One process here; ``lrsearch run --devices`` and ``lrsearch worker`` add more (see the
README's "Scale out"). Every worker loads the study from its storage and asks Optuna for the
next trial until the study holds the requested number of finished (complete + pruned) trials.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrsearch import interrupt
from lrsearch.config import StudyConfig
from lrsearch.devices import Slot, parse_devices
from lrsearch.errors import LrsearchError, StorageError, WorkloadError
from lrsearch.objective import Objective
from lrsearch.recording import (
    close_orphans,
    close_study,
    fail_study,
    observe_trials,
    open_recorder,
)
from lrsearch.retrying import StorageUnavailable, gave_up
from lrsearch.storage import (
    STORAGE_ERRORS,
    check_storage_writable,
    check_tracking_writable,
    default_home,
    open_storage,
    opening_lock,
    read_trials,
    redact,
    storage_of,
    trusted_tracking_uri,
)
from lrsearch.study import FINISHED, StudyHandle, build_workload, load_study, open_study
from lrsearch.trials import FAIL_REASON, is_surplus

if TYPE_CHECKING:
    from lrsearch.progress import StudyProgress
    from lrsearch.tracking import Tracker
    from lrsearch.tracking.recorder import StudyRecorder
    from lrsearch.workloads import Workload

__all__ = ["RunOutcome", "join_study", "run_study", "run_trials", "run_worker"]

MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True)
class RunOutcome:
    """What ``lrsearch run`` / ``worker`` did: the study, how long, whether interrupted."""

    handle: StudyHandle
    seconds: float
    tracking_uri: str | None
    interrupted: bool


def _tracker(uri: str | None, echo: Callable[[str], None]) -> Tracker | None:
    """The MLflow tracker for ``uri``, its places checked first (one line, no minutes of
    MLflow retrying); without artifacts, with a warning, where only those cannot be written."""
    if uri is None:
        return None
    from lrsearch.tracking import MlflowTracker

    problem = check_tracking_writable(uri)
    tracker = MlflowTracker(uri)
    if problem:
        echo(f"warning: {problem}")
        tracker.artifacts = False
    return tracker


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
        if trial.state == TrialState.FAIL and not is_surplus(trial):
            self.streak += 1
            self.last_reason = trial.user_attrs.get(FAIL_REASON, "unknown error")
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
    recorder: StudyRecorder | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    on_epoch: Callable[[int, int, int], None] | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Run trials in this process until the study holds ``n_trials`` finished ones.

    Raises:
        WorkloadError: when trials keep failing (the last reason is in the message).
    """
    # Optuna would log each failed trial with its traceback; _FailureGuard says it in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    guard = _FailureGuard(echo=echo)
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
        _StopAtBudget(n_trials),
        guard,
        _stop_on_surplus,
        _stop_on_request,
    ]
    if on_trial is not None:
        callbacks.append(lambda study, trial: on_trial(trial))
    if handle.n_finished() >= n_trials:
        return
    objective = Objective(
        handle,
        device=device,
        n_trials=n_trials,
        observe=observe_trials(recorder, handle) if recorder is not None else None,
        on_epoch=on_epoch,
    )
    with warnings.catch_warnings():
        # Optuna logs every caught trial failure as a warning; the trial's state and
        # fail_reason attribute already record it.
        warnings.simplefilter("ignore", UserWarning)
        try:
            handle.study.optimize(
                objective,
                timeout=timeout,
                callbacks=callbacks,
                catch=(Exception,),
                gc_after_trial=False,
            )
        except Exception:
            # Past the grace period Optuna's own cleanup trips over the storage too (an
            # UnboundLocalError in its _run_trial): say what happened, in one line.
            gone = gave_up(storage_of(handle.study))
            if gone is not None:
                raise gone from None
            raise
    if guard.streak >= guard.limit:
        raise WorkloadError(
            f"{guard.streak} trials in a row failed; last: {guard.last_reason}. "
            "Fix the workload (see --debug) and run again to resume"
        )


class _StopAtBudget:
    """After a trial is told: stop once the study holds ``n_trials`` finished trials.

    Optuna's MaxTrialsCallback, with its read of the trials kept for the rest of the trial's
    callbacks (the progress display reuses it: one round trip, not two).
    """

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if sum(t.state in FINISHED for t in read_trials(study)) >= self.n_trials:
            study.stop()


def _stop_on_surplus(study: optuna.Study, trial: FrozenTrial) -> None:
    """A surplus trial means the study is (about to be) full: stop unless a retry waits."""
    if is_surplus(trial) and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.stop()


def _stop_on_request(study: optuna.Study, trial: FrozenTrial) -> None:
    """After a trial is told: Ctrl-C asked to stop, so start no other."""
    if interrupt.requested():
        study.stop()


def run_worker(
    handle: StudyHandle,
    slot: Slot,
    *,
    n_trials: int,
    timeout: float | None = None,
    recorder: StudyRecorder | None = None,
    progress: StudyProgress | None = None,
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
        recorder=recorder,
        on_trial=progress.trial_done if progress else None,
        on_epoch=progress.epoch_done if progress else None,
        echo=echo,
    )


def _prepare(
    config: StudyConfig,
    *,
    storage_url: str,
    tracking_uri: str | None,
    tracking: bool,
    echo: Callable[[str], None],
) -> tuple[Workload, str | None, Tracker | None]:
    """Check what can be checked before anything is written: workload, the places written
    to, then the tracking server.

    Returns the built workload, the tracking URI and the tracker (None without tracking).
    """
    workload = build_workload(config)
    check_storage_writable(storage_url)
    uri = None
    if tracking and config.tracking.enabled:
        uri = tracking_uri or config.tracking.uri or str(default_home())
    # fails fast on an unreachable server, before the storage
    return workload, uri, _tracker(uri, echo)


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
) -> RunOutcome:
    """Create or resume a study, run its trials on every device slot, record them.

    Every MLflow run of the study is closed before this returns, also when interrupted.
    """
    slots = parse_devices(devices, trials_per_device)
    # Every write is recorded truthfully: Ctrl-C only asks to stop (see interrupt). Opening
    # the MLflow store (its first migration), the study's attributes and the range test are
    # never cut in half; the range test and the trials stop at their next step.
    with interrupt.deferred_interrupts(echo):
        workload, uri, tracker = _prepare(
            config, storage_url=storage_url, tracking_uri=tracking_uri, tracking=tracking, echo=echo
        )
        interrupt.check()
        started = time.perf_counter()
        range_device = (
            slots[0].device if slots[0].visible_gpu is None else f"cuda:{slots[0].visible_gpu}"
        )
        import torch

        torch.set_num_threads(int(os.environ.get("LRSEARCH_THREADS", slots[0].threads)))
        from lrsearch.progress import describe_study, waiting

        ran_range_test: list[str] = []

        def on_range_test(line: str) -> None:
            ran_range_test.append(line)
            echo(line)

        # Two `run`s of a study at once on one home: the second waits here for the first's
        # range test and parent run, and reuses both.
        with (
            opening_lock(storage_url),
            waiting(
                "opening the study (the LR range test runs the first time)", enabled=show_progress
            ),
        ):
            handle = open_study(
                config,
                storage_url,
                tracking_uri=uri,
                device=range_device,
                on_range_test=on_range_test,
                workload=workload,
            )
            recorder = open_recorder(handle, tracker, log_parent=True) if tracker else None
        try:  # from here on the parent run is open: whatever stops the study closes it
            interrupt.check()
            for line in describe_study(handle, resumed=not ran_range_test):
                echo(line)
            interrupted = _execute(
                handle,
                slots,
                n_trials=config.study.n_trials,
                timeout=config.study.timeout,
                recorder=recorder,
                show_progress=show_progress,
                echo=echo,
            )
        except BaseException as exc:  # trials kept failing, the storage went, Ctrl-C
            if recorder is not None:
                fail_study(handle, recorder, interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        if recorder is not None:
            close_study(handle, recorder, interrupted=interrupted)
    return RunOutcome(handle, time.perf_counter() - started, uri, interrupted)


def join_study(
    study_name: str,
    *,
    storage_url: str,
    devices: str = "auto",
    trials_per_device: int = 1,
    n_trials: int | None = None,
    timeout: float | None = None,
    allow_workloads: tuple[str, ...] = (),
    tracking_uri: str | None = None,
    tracking: bool = True,
    echo: Callable[[str], None] = print,
    show_progress: bool | None = None,
    storage_wait: bool = False,
) -> RunOutcome:
    """``lrsearch worker``: join an existing study; everything else comes from its storage.

    Only trusted workloads are imported (see :func:`lrsearch.workloads.check_allowed`), and
    the study's stored tracking URI is used only where :func:`~lrsearch.storage.trusted_tracking_uri`
    allows it; ``tracking_uri`` (the operator's own) replaces it.
    ``storage_wait``: opening the storage waits out an outage (a supervised worker's: its
    supervisor has opened the same URL, so an unreachable storage is an outage, not a typo).
    """
    slots = parse_devices(devices, trials_per_device)
    # Unseeded: workers on other hosts (or in other containers) must not repeat each other's
    # random startup draws; the study's own seed drives the orchestrating `lrsearch run`.
    started = time.perf_counter()
    quiet = os.environ.get("LRSEARCH_QUIET") == "1"  # a supervised worker: its supervisor speaks
    with interrupt.deferred_interrupts(echo if not quiet else lambda line: None):
        check_storage_writable(storage_url)
        storage = open_storage(storage_url, wait=storage_wait)
        handle = load_study(
            study_name, storage_url, seed=None, allow_workloads=allow_workloads, storage=storage
        )
        # builds the workload: an untrusted or broken one fails here, before any trial
        handle.plan  # noqa: B018
        if tracking_uri is None and tracking:
            tracking_uri = trusted_tracking_uri(handle.tracking_uri)
        handle.tracking_uri = tracking_uri if tracking else None
        interrupt.check()
        # a supervised worker's warning: its supervisor has said it once
        tracker = _tracker(handle.tracking_uri, echo if not quiet else lambda line: None)
        recorder = open_recorder(handle, tracker, log_parent=False) if tracker else None
        interrupted = _execute(
            handle,
            slots,
            n_trials=n_trials or handle.n_trials_target,
            timeout=timeout,
            recorder=recorder,
            show_progress=show_progress,
            echo=echo,
        )
        if recorder is not None and not quiet:  # a supervised worker's supervisor does it once
            close_orphans(handle, recorder)
    return RunOutcome(handle, time.perf_counter() - started, handle.tracking_uri, interrupted)


def _execute(
    handle: StudyHandle,
    slots: list[Slot],
    *,
    n_trials: int,
    timeout: float | None,
    recorder: StudyRecorder | None,
    show_progress: bool | None,
    echo: Callable[[str], None],
) -> bool:
    """Run the trials here (one slot) or in supervised worker processes; True if interrupted."""
    from lrsearch.progress import StudyProgress
    from lrsearch.supervisor import Supervisor

    quiet = os.environ.get("LRSEARCH_QUIET") == "1"
    # the trial lines go out as the other lines do (flushed: a log keeps them in order)
    with StudyProgress(
        handle, enabled=False if quiet else show_progress, n_trials=n_trials, echo=echo
    ) as progress:
        try:
            if len(slots) == 1:
                run_worker(
                    handle,
                    slots[0],
                    n_trials=n_trials,
                    timeout=timeout,
                    recorder=recorder,
                    progress=progress,
                    echo=echo,
                )
            else:
                Supervisor(
                    handle,
                    slots,
                    n_trials=n_trials,
                    timeout=timeout,
                    recorder=recorder,
                    echo=echo,
                ).run(progress)
        except KeyboardInterrupt:
            return True
        except STORAGE_ERRORS as exc:
            reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
            raise StorageError(
                f"the storage became unreachable during the study ({reason}); finished trials "
                "are kept; when it is back, run the same command to resume"
            ) from None
    return False


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def worker_main() -> int:
    """Entry point of a supervised worker (``python -m lrsearch.workers``); its exit code.

    The storage URL comes in ``$LRSEARCH_STORAGE`` (never on the command line, where ``ps``
    shows it), the orders in ``$LRSEARCH_WORKER``. The operator's own study file named the
    workload and the tracking store, so they are trusted.
    """
    from lrsearch.supervisor import WORKER_ENV

    orders = json.loads(os.environ[WORKER_ENV])
    if orders.get("tracking_uri") is not None:
        from lrsearch.tracking._writer import start_writer

        start_writer()  # its MLflow import overlaps the study's opening here
    try:
        outcome = join_study(
            orders["study"],
            storage_url=os.environ["LRSEARCH_STORAGE"],
            devices=orders["device"],
            n_trials=orders["n_trials"],
            timeout=orders["timeout"],
            allow_workloads=(orders["workload"],),
            tracking_uri=orders.get("tracking_uri"),
            tracking=orders.get("tracking_uri") is not None,
            echo=_stderr,
            show_progress=False,
            storage_wait=True,
        )
    except StorageUnavailable:
        return StorageUnavailable.exit_code  # its supervisor says it once, for every worker
    except LrsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code  # a WorkloadError's tells the supervisor not to restart it
    except KeyboardInterrupt:
        return 130
    return 130 if outcome.interrupted else 0


if __name__ == "__main__":
    sys.exit(worker_main())
