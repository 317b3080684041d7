"""The study handle: a study opened (or created) once, with everything stored with it.

A study lives in its Optuna storage. Config, range-test result, prior, tracking URI and the
MLflow parent run id are study attributes, so any worker on any host needs only the study
name and the storage URL. The handle chooses the study's trainer once
(:attr:`StudyHandle.plan`, :func:`lrsearch.trainers.trainer_for`) and keeps it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from lrsearch.config import StudyConfig
from lrsearch.errors import ConfigError, StorageError
from lrsearch.prior import DEFAULT_ANCHOR, LRPrior, has_signal
from lrsearch.pruning import pruner_from_config
from lrsearch.sampler import sampler_from_config
from lrsearch.space import default_params, lrfree_policy
from lrsearch.storage import open_storage, redact, storage_of
from lrsearch.trials import DEFAULTS, ORIGIN, PRIOR_CENTRE, trial_seed

if TYPE_CHECKING:
    from lrsearch.range_test import RangeTestResult
    from lrsearch.trainers import Trainer
    from lrsearch.workloads import Workload

__all__ = [
    "FINISHED",
    "StudyHandle",
    "TrialPlan",
    "check_trusted",
    "load_study",
    "open_study",
    "trial_seed",
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


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a study trains: its trainer, for how long, in how many steps.

    ``drives_momentum`` is whether the trainer's optimizer has a momentum (SGD's, or the
    Adam family's beta1) for the schedule to drive; where it has none (Adagrad, say) the
    study's trials neither sample nor carry ``momentum_high``/``momentum_low``.
    """

    trainer: Trainer

    @property
    def workload(self) -> Workload:
        """What the study trains, as reports describe it (a loop's stand-in for a loop)."""
        return self.trainer.workload

    @property
    def epochs(self) -> int:
        return self.trainer.epochs

    @property
    def steps_per_epoch(self) -> int:
        return self.trainer.steps_per_epoch

    @property
    def drives_momentum(self) -> bool:
        return self.trainer.drives_momentum

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def build_workload(config: StudyConfig) -> Workload:
    """What the study file trains, as a workload (:func:`lrsearch.trainers.build_workload`)."""
    from lrsearch.trainers import build_workload as build

    return build(config)


def choose_trainer(config: StudyConfig, workload: Workload | None = None) -> Trainer:
    """The study's trainer (:func:`lrsearch.trainers.trainer_for`)."""
    from lrsearch.trainers import trainer_for

    return trainer_for(config, workload)


def check_trusted(config: StudyConfig, patterns: tuple[str, ...] = ()) -> None:
    """Refuse a stored config whose workload or loop this process was not told to trust.

    A study's storage can be written by anyone with its URL; see
    :func:`lrsearch.workloads.check_allowed` for what is trusted.

    Raises:
        WorkloadError: the workload or the loop is not trusted.
    """
    from lrsearch.workloads import check_allowed

    for name in dict.fromkeys((config.study.workload, config.study.loop)):  # a loop: the same
        if name is not None:
            check_allowed(name, patterns)


def _same_code(stored: StudyConfig, config: StudyConfig) -> bool:
    """Whether a stored study trains what the study file says: same workload, options, loop."""
    a, b = stored.study, config.study
    return (a.workload, a.workload_options, a.loop) == (b.workload, b.workload_options, b.loop)


def _check_stored_config(name: str, attrs: dict[str, Any], config: StudyConfig, url: str) -> None:
    """Refuse to resume a stored study that is not the one the operator's file describes.

    The stored config is compared itself, not only its stored fingerprint: whoever can write
    the storage can rewrite both.

    Raises:
        ConfigError: the stored study trains other code, or searches another way.
    """
    if KEY_CONFIG in attrs:
        stored = _stored_config(name, attrs[KEY_CONFIG])
        if not _same_code(stored, config):
            raise ConfigError(
                f"study {name!r} in {redact(url)} trains "
                f"{stored.study.loop or stored.study.workload!r}, not what the study file names "
                f"({config.study.loop or config.study.workload!r}); pass --study-name NEW to "
                f"start a new study, or join the stored one with 'lrsearch worker --study {name} "
                "--allow-workload PATTERN' if you trust its workload"
            )
    fingerprint = attrs.get(KEY_FINGERPRINT)
    if fingerprint is not None and fingerprint != config.fingerprint():
        raise ConfigError(
            f"study {name!r} already exists in {redact(url)} with a different "
            "config; resume it with its original file, or pass --study-name NEW to start a new one"
        )


def _stored_config(name: str, text: Any) -> StudyConfig:
    """A study's stored config; a storage holding something else is one line, not a traceback."""
    from pydantic import ValidationError

    try:
        return StudyConfig.from_json(text)
    except (ValidationError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        raise StorageError(
            f"study {name!r}: its stored config is not valid ({reason}); was the storage "
            "written by something other than lrsearch? Start a new study with --study-name NEW"
        ) from None


@dataclass
class StudyHandle:
    """An opened study and everything stored with it."""

    study: optuna.Study
    config: StudyConfig
    prior: LRPrior
    range_test_record: dict[str, Any]  # as stored (JSON-ready); read it as `range_test`
    storage_url: str
    tracking_uri: str | None
    parent_run_id: str | None
    workload: Workload | None = field(default=None, repr=False)
    trainer: Trainer | None = field(default=None, repr=False)
    allow_workloads: tuple[str, ...] = ()  # import paths trusted beyond built-ins (see plan)

    @cached_property
    def range_test(self) -> RangeTestResult | None:
        """The study's range test (None where it has none: a study in memory)."""
        if not self.range_test_record:
            return None
        from lrsearch.range_test import RangeTestResult  # torch: only where it is read

        return RangeTestResult.from_dict(self.range_test_record)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def maximize(self) -> bool:
        return self.study.direction == optuna.study.StudyDirection.MAXIMIZE

    @property
    def metric_name(self) -> str:
        """The workload's metric, e.g. ``accuracy`` (trials report ``val_<metric>``)."""
        return str(self.study.user_attrs.get(KEY_WORKLOAD_INFO, {}).get("metric", "metric"))

    @property
    def n_trials_target(self) -> int:
        """Finished trials the study aims for (set by the latest ``lrsearch run``)."""
        return int(self.study.user_attrs.get(KEY_TARGET, self.config.study.n_trials))

    @cached_property
    def plan(self) -> TrialPlan:
        """The study's trainer, epochs per trial, steps per epoch, whether momentum is searched.

        Built once per handle. The storage named the workload (or loop) unless the caller's
        own study file did (``workload`` or ``trainer`` set): then it is imported only if
        trusted, see :func:`check_trusted`.

        Raises:
            WorkloadError: the workload is not trusted, or cannot be built.
        """
        if self.trainer is None and self.workload is None:
            check_trusted(self.config, self.allow_workloads)
        return TrialPlan(self.trainer or choose_trainer(self.config, self.workload))

    @classmethod
    def in_memory(
        cls, config: StudyConfig, prior: LRPrior, workload: Workload, *, seed: int | None = None
    ) -> StudyHandle:
        """A study in memory with the config's sampler and pruner: for harnesses and tests.

        No range test runs: ``prior`` stands in for its result. ``seed`` seeds the sampler
        (default: the config's).
        """
        study = optuna.create_study(
            direction=workload.metric.direction,
            sampler=sampler_from_config(
                config, prior, seed=config.study.seed if seed is None else seed
            ),
            pruner=pruner_from_config(config.pruner, epochs=config.study.epochs),
        )
        return cls(study, config, prior, {}, "memory", None, None, workload=workload)

    def n_finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def set_parent_run(self, run_id: str) -> None:
        """Remember the study's MLflow parent run, for every later worker."""
        if self.parent_run_id != run_id:
            self.study.set_user_attr(KEY_PARENT_RUN, run_id)
            self.parent_run_id = run_id


def open_study(
    config: StudyConfig,
    storage_url: str,
    *,
    tracking_uri: str | None,
    device: str = "cpu",
    on_range_test: Callable[[str], None] | None = None,
    workload: Workload | None = None,
) -> StudyHandle:
    """Create the study, or resume it; run the range test the first time only.

    One pass: the study is created (or loaded) once, its attributes read back once, and the
    handle returned is the one built here, with the trainer chosen here.

    ``workload`` is the study's workload when the caller has already built it (a study of
    its own loop builds its trainer anyway).

    Raises:
        ConfigError: the study exists with a different search config.
        StorageError: the storage cannot be opened.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    name = config.study.name
    trainer = choose_trainer(config, workload)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if name in existing:
        _check_stored_config(name, existing[name].user_attrs, config, storage_url)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction=trainer.metric.direction,
        load_if_exists=True,
    )
    try:
        _start(study, config, trainer, tracking_uri=tracking_uri, device=device, say=on_range_test)
    except BaseException:
        if name not in existing:  # a failed range test leaves no empty study behind
            _delete_unstarted(study)
        raise
    attrs = study.user_attrs  # one read: what the storage holds now
    # What runs here is what the operator's file says (checked against the storage above,
    # and again now: the storage may have changed since); the tracking store is theirs too.
    _check_stored_config(name, attrs, config, storage_url)
    prior = LRPrior.from_dict(attrs[KEY_PRIOR])
    study.sampler = sampler_from_config(config, prior, seed=config.study.seed)
    study.pruner = pruner_from_config(config.pruner, epochs=config.study.epochs)
    return StudyHandle(
        study=study,
        config=config,
        prior=prior,
        range_test_record=attrs.get(KEY_RANGE_TEST, {}),
        storage_url=storage_url,
        tracking_uri=tracking_uri,
        parent_run_id=attrs.get(KEY_PARENT_RUN),
        workload=trainer.workload,
        trainer=trainer,
    )


def _start(
    study: optuna.Study,
    config: StudyConfig,
    trainer: Trainer,
    *,
    tracking_uri: str | None,
    device: str,
    say: Callable[[str], None] | None,
) -> None:
    """Store the study's config (the first time), target and tracking URI; run the range
    test and enqueue the prior's centre unless done before."""
    if KEY_CONFIG not in study.user_attrs:
        study.set_user_attr(KEY_CONFIG, config.to_json())
        study.set_user_attr(KEY_FINGERPRINT, config.fingerprint())
        info = {
            "name": trainer.workload.name,
            "metric": trainer.metric.name,
            "direction": trainer.metric.direction,
        }
        study.set_user_attr(KEY_WORKLOAD_INFO, info)
        for key, value in config.flat().items():  # one row each in optuna-dashboard
            study.set_user_attr(f"config.{key}", value)
        with warnings.catch_warnings():  # flagged experimental; it names Optuna's objective
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([f"val_{trainer.metric.name}"])
    study.set_user_attr(KEY_TARGET, config.study.n_trials)  # the latest run's; workers follow it
    if tracking_uri and KEY_TRACKING not in study.user_attrs:
        study.set_user_attr(KEY_TRACKING, tracking_uri)
    if KEY_PRIOR not in study.user_attrs and lrfree_policy(config.space) is not None:
        _start_lrfree(study, config, say)
    if KEY_PRIOR not in study.user_attrs:
        size = range_test_size(config, trainer)
        if say:
            say(f"running the LR range test (first time for this study): {size.describe()}")
        result = _store_range_test(study, config, trainer, device, size)
        prior = result.prior
        if say and not has_signal(result.summary[config.prior.anchor or DEFAULT_ANCHOR]):
            say(
                "range test: no clear signal (the loss never fell above its noise before it "
                f"rose at {result.summary['rise'].median:.3g}): the prior stays wide"
            )
        if not study.trials:
            study.enqueue_trial(
                default_params(config.space, prior, momentum=trainer.drives_momentum),
                user_attrs={ORIGIN: PRIOR_CENTRE},
            )


# What an LR-free study stores as its prior: its space has no max_lr, so nothing reads it.
_NO_PRIOR = LRPrior(center=1e-2, sigma_decades=1.0, low=1e-5, high=10.0)


def _start_lrfree(
    study: optuna.Study, config: StudyConfig, say: Callable[[str], None] | None
) -> None:
    """An LR-free optimizer's study: no range test (no max_lr to place); defaults first."""
    if say:
        say(f"{config.study.training.optimizer}: LR-free, no range test; its defaults first")
    study.set_user_attr(KEY_PRIOR, _NO_PRIOR.to_dict())
    if not study.trials:
        study.enqueue_trial(default_params(config.space, _NO_PRIOR), user_attrs={ORIGIN: DEFAULTS})


def _delete_unstarted(study: optuna.Study) -> None:
    """Delete a study this run created but could not start (no prior, no trials)."""
    with contextlib.suppress(Exception):  # the error that stopped it is the one to report
        if KEY_PRIOR not in study.user_attrs and not study.get_trials(deepcopy=False):
            optuna.delete_study(study_name=study.study_name, storage=storage_of(study))


@dataclass(frozen=True)
class RangeTestSize:
    """How big a study's range test is, against the study's budget (in optimizer steps)."""

    repeats: int
    num_iter: int
    budget_steps: int
    fraction: float

    @property
    def share(self) -> float:
        return self.repeats * self.num_iter / self.budget_steps

    def describe(self) -> str:
        return (
            f"{self.repeats} x {self.num_iter} steps at most, {self.share:.1%} of the study's "
            f"{self.budget_steps:,} trial steps"
            + (
                " (over its share: set in the study file, or the shortest readable test)"
                if self.share > self.fraction + 1e-9
                else ""
            )
        )


def range_test_size(config: StudyConfig, trainer: Trainer) -> RangeTestSize:
    """The range test a study runs: at most ``[range_test] budget_fraction`` of its trial
    steps (:func:`lrsearch.range_test.fit_budget`); repeats or num_iter set in the file are
    kept, and only what is left unset is fitted."""
    from lrsearch.range_test import MIN_RAMP_STEPS, fit_budget

    rt, cfg = config.range_test, config.study
    per_epoch = trainer.steps_per_epoch
    budget = max(cfg.n_trials * trainer.epochs * per_epoch, 1)
    allowed = int(rt.budget_fraction * budget)
    if rt.repeats is None and rt.num_iter is None:
        repeats, num_iter = fit_budget(budget, per_epoch=per_epoch, fraction=rt.budget_fraction)
    elif rt.repeats is None and rt.num_iter is not None:  # the file's ramps: as many as fit
        repeats, num_iter = min(3, max(1, allowed // rt.num_iter)), rt.num_iter
    else:  # the file's repeats: ramps as long as fit
        want = max(100, per_epoch)
        repeats = rt.repeats or 3
        num_iter = rt.num_iter or max(min(want, allowed // repeats), min(MIN_RAMP_STEPS, want))
    return RangeTestSize(repeats, num_iter, budget, rt.budget_fraction)


def _store_range_test(
    study: optuna.Study,
    config: StudyConfig,
    trainer: Trainer,
    device: str,
    size: RangeTestSize,
) -> RangeTestResult:
    from lrsearch.range_test import RampPlan

    rt, pc = config.range_test, config.prior
    overrides = {
        "anchor": pc.anchor,
        "offset_decades": pc.offset_decades,
        "sigma_floor_decades": pc.sigma_floor_decades,
        "low_decades": pc.low_decades,
        "high_factor": pc.high_factor,
    }
    plan = RampPlan.make(
        start_lr=rt.start_lr,
        end_lr=rt.end_lr,
        num_iter=size.num_iter,
        repeats=size.repeats,
        diverge_factor=rt.diverge_factor,
        prior_options={k: v for k, v in overrides.items() if v is not None},
    )
    result = trainer.range_test(plan, seed=config.study.seed, device=device)
    spent = int(result.settings.get("steps", size.repeats * size.num_iter))
    result.settings.update(budget_steps=size.budget_steps, budget_share=spent / size.budget_steps)
    study.set_user_attr(KEY_RANGE_TEST, result.to_dict())
    study.set_user_attr(KEY_PRIOR, result.prior.to_dict())
    return result


_STUDY_SEED = object()


def load_study(
    name: str,
    storage_url: str,
    *,
    seed: Any = _STUDY_SEED,
    storage: optuna.storages.BaseStorage | None = None,
    allow_workloads: tuple[str, ...] = (),
) -> StudyHandle:
    """Open an existing lrsearch study by name (any host, any worker).

    ``seed`` seeds the sampler (default: the study file's seed; None for unseeded workers).
    Nothing is imported here: :attr:`StudyHandle.plan` builds the stored workload, if it is
    a built-in, an installed entry point, or matches ``allow_workloads`` (or
    ``$LRSEARCH_ALLOW_WORKLOAD``).
    """
    storage = storage or open_storage(storage_url)
    summaries = {s.study_name: s for s in storage.get_all_studies()}
    if name not in summaries:
        known = ", ".join(sorted(summaries)[:10]) or "none"
        raise StorageError(
            f"no study named {name!r} in {redact(storage_url)} (studies there: {known}); "
            "check --study or create it with 'lrsearch run FILE'"
        )
    attrs = summaries[name].user_attrs
    if KEY_CONFIG not in attrs or KEY_PRIOR not in attrs:
        raise StorageError(
            f"study {name!r} was not created by lrsearch run (or its range test never finished); "
            "start it with 'lrsearch run FILE'"
        )
    config = _stored_config(name, attrs[KEY_CONFIG])
    prior = LRPrior.from_dict(attrs[KEY_PRIOR])
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=sampler_from_config(
            config, prior, seed=config.study.seed if seed is _STUDY_SEED else seed
        ),
        pruner=pruner_from_config(config.pruner, epochs=config.study.epochs),
    )
    return StudyHandle(
        study=study,
        config=config,
        prior=prior,
        range_test_record=attrs.get(KEY_RANGE_TEST, {}),
        storage_url=storage_url,
        tracking_uri=attrs.get(KEY_TRACKING),
        parent_run_id=attrs.get(KEY_PARENT_RUN),
        allow_workloads=tuple(allow_workloads),
    )
