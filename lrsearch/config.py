"""Study files: TOML -> a typed, validated :class:`StudyConfig`.

Errors name the field path and say how to fix it, on one line, e.g.
``studies/x.toml: space.div_factor: low must be <= high, got [25.0, 4.0]``.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lrsearch.errors import ConfigError
from lrsearch.policies import DEFAULT_POLICY, LRFREE_POLICY, study_policies

__all__ = [
    "POLICIES",
    "StudyConfig",
    "TrainingSection",
    "load_study_config",
    "parse_study_config",
]

POLICIES = study_policies()  # the policies a study may search over

PositiveFloat = Annotated[float, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Model):
    """A sampled parameter's bounds; ``log`` samples on a log scale."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got [{self.low}, {self.high}]; swap them")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        return self

    @classmethod
    def of(cls, low: float, high: float, log: bool = False) -> Range:
        return cls(low=low, high=high, log=log)


def _range(value: Any) -> Any:
    """Accept ``[low, high]`` as shorthand for ``{low = .., high = ..}``."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError(f"give [low, high] (two numbers), got {list(value)}")
        return {"low": value[0], "high": value[1]}
    return value


class TrainingSection(_Model):
    """``[study.training]``: the workload's training options, overridden (unset: its own).

    Example::

        [study.training]
        optimizer = "Adagrad"   # sgd, adam, adamw or any torch.optim class name
        grad_clip = 1.0
        accumulate = 2
        precision = "bf16"      # fp32, bf16 or fp16

    The names are checked here; whether the workload takes a value (an optimizer name that
    ``torch.optim`` lacks, say) is checked when the workload is built.
    """

    optimizer: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    grad_clip: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    accumulate: int | None = Field(default=None, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    batches_per_epoch: int | None = Field(default=None, ge=1)

    def options(self) -> dict[str, Any]:
        """The options the file sets, as ``Workload.with_options`` keywords."""
        return self.model_dump(exclude_none=True)


class StudySection(_Model):
    """``[study]``: what is searched, and how much."""

    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    workload: str = Field(min_length=1)
    workload_options: dict[str, Any] = Field(default_factory=dict)
    n_trials: int = Field(default=20, ge=1)
    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    seed: int = 0
    training: TrainingSection = TrainingSection()
    # --- your own training loop (lrsearch.trainers) ----------------------------------
    # ``loop = "pkg.module:train"`` names a ``train(ctx) -> float | None`` function instead
    # of a Workload. There is no Workload to ask, so the file states the metric, its
    # direction, epochs and the loop's optimizer steps per epoch. ``workload`` mirrors the
    # loop's path (filled in when left out): workers check it against their allow-list.
    loop: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    metric: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    direction: Literal["maximize", "minimize"] | None = None
    steps_per_epoch: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _loop_names_the_workload(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("loop") and "workload" not in data:
            return {**data, "workload": data["loop"]}
        return data

    @model_validator(mode="after")
    def _loop_fields(self) -> StudySection:
        loop_only = ("metric", "direction", "steps_per_epoch")
        if self.loop is None:
            given = [name for name in loop_only if getattr(self, name) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: only for a study with its own loop "
                    "(loop = 'pkg.module:train'); a workload states its own"
                )
            return self
        missing = [name for name in (*loop_only, "epochs") if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"a study with loop = {self.loop!r} needs {', '.join(missing)} in [study] "
                "(there is no workload to ask)"
            )
        if self.workload != self.loop:
            raise ValueError(
                f"give loop or workload, not both (loop = {self.loop!r}, workload = {self.workload!r})"
            )
        if self.workload_options or self.batch_size is not None:
            raise ValueError(
                "workload_options and batch_size do not apply to a loop; the loop sets them itself"
            )
        if self.training.options():
            raise ValueError(
                f"[study.training] ({', '.join(self.training.options())}) does not "
                "apply to a loop; the loop owns its optimizer and training, set them there"
            )
        if self.metric == "loss":
            raise ValueError(
                "metric 'loss' is taken by the validation loss; name it e.g. 'mean_loss'"
            )
        return self

    # --- end of your own training loop ----------------------------------------------------


class RangeTestSection(_Model):
    """``[range_test]``: the test that becomes the prior."""

    # unset: up to 3 repeats of max(100, one epoch) steps, fitted to budget_fraction
    repeats: int | None = Field(default=None, ge=1, le=20)
    start_lr: PositiveFloat = 1e-7
    end_lr: PositiveFloat = 10.0
    num_iter: int | None = Field(default=None, ge=10)
    diverge_factor: float = Field(default=4.0, gt=1)
    # the most the test may cost, as a share of the study's optimizer steps (n_trials x epochs x
    # steps per epoch); repeats and num_iter set in the file are kept as they are
    budget_fraction: float = Field(default=0.05, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> RangeTestSection:
        if self.start_lr >= self.end_lr:
            raise ValueError(f"start_lr must be < end_lr, got {self.start_lr} >= {self.end_lr}")
        return self


class PriorSection(_Model):
    """``[prior]``: how the range test shapes the search over ``max_lr``."""

    anchor: Literal["steep", "min10", "valley"] | None = None
    offset_decades: float | None = None
    sigma_floor_decades: float | None = Field(default=None, gt=0)
    low_decades: float | None = Field(default=None, gt=0)
    high_factor: float | None = Field(default=None, gt=0)
    n_startup_trials: int = Field(default=5, ge=1)
    weight_decay_trials: float = Field(default=0.0, ge=0)
    # piBO: after startup TPE's acquisition is weighted by prior ** (pibo_beta / n ** pibo_fade),
    # n the trials finished since startup; 0 = off, unset = the measured default
    # (lrsearch.sampler.DEFAULT_PIBO_BETA); pibo_fade 1 is piBO's 1/n, 0 never fades
    pibo_beta: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    pibo_fade: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    # a prior that cannot sink a study: this share of the startup draws ignores the prior (wide,
    # log-uniform over max_lr's range), and once a wide draw beats every prior-drawn trial the
    # rest of the startup is wide (contradiction); unset = the measured defaults
    # (lrsearch.sampler.DEFAULT_EXPLORE_SHARE, DEFAULT_CONTRADICTION)
    explore_share: float | None = Field(default=None, ge=0, le=1)
    contradiction: bool | None = None
    # "prior" (startup draws from the prior) or "bracket" (a decade at a time from the best so
    # far, then the prior moved there); unset = lrsearch.sampler.DEFAULT_STARTUP
    startup: Literal["prior", "bracket"] | None = None


class SpaceSection(_Model):
    """``[space]``: ranges of the sampled parameters (Smith's defaults)."""

    policies: list[str] = Field(default_factory=lambda: [DEFAULT_POLICY], min_length=1)
    div_factor: Range = Range.of(4.0, 25.0, log=True)
    cycle_frac: Range = Range.of(0.75, 0.95)
    annihilation: Range = Range.of(10.0, 1000.0, log=True)
    momentum_high: Range = Range.of(0.9, 0.98)
    momentum_low: Range = Range.of(0.8, 0.9)
    weight_decay: Range = Range.of(1e-6, 1e-3, log=True)
    # an LR-free optimizer's study (policy "schedulefree" or "prodigy") searches these: a
    # decade either side of Schedule-Free's default lr 0.0025, Prodigy's d_coef over what its
    # README names (0.1 to 10), warm-up up to a fifth of the steps
    lr: Range = Range.of(2.5e-4, 2.5e-2, log=True)
    d_coef: Range = Range.of(0.1, 10.0, log=True)
    warmup_frac: Range = Range.of(0.0, 0.2)

    _coerce = field_validator(
        "div_factor",
        "cycle_frac",
        "annihilation",
        "momentum_high",
        "momentum_low",
        "weight_decay",
        "lr",
        "d_coef",
        "warmup_frac",
        mode="before",
    )(_range)

    @field_validator("policies")
    @classmethod
    def _known_policies(cls, names: list[str]) -> list[str]:
        valid = [*POLICIES, *LRFREE_POLICY.values()]
        unknown = [name for name in names if name not in valid]
        if unknown:
            raise ValueError(f"unknown study policies {unknown}; valid: {valid}")
        return names

    @model_validator(mode="after")
    def _bounds(self) -> SpaceSection:
        if self.div_factor.low <= 1:
            raise ValueError(f"div_factor: low must be > 1, got {self.div_factor.low}")
        if not (self.cycle_frac.low > 0 and self.cycle_frac.high <= 1):
            raise ValueError("cycle_frac: must lie in (0, 1]")
        if self.annihilation.low < 1:
            raise ValueError(f"annihilation: low must be >= 1, got {self.annihilation.low}")
        for name in ("momentum_high", "momentum_low"):
            r = getattr(self, name)
            if not (r.low >= 0 and r.high < 1):
                raise ValueError(f"{name}: must lie in [0, 1)")
        if self.momentum_low.high > self.momentum_high.low:
            raise ValueError(
                "momentum_low must lie below momentum_high; "
                f"got momentum_low.high={self.momentum_low.high} > momentum_high.low={self.momentum_high.low}"
            )
        if self.weight_decay.low < 0:
            raise ValueError("weight_decay: low must be >= 0")
        if self.lr.low <= 0 or self.d_coef.low <= 0:
            raise ValueError("lr, d_coef: low must be > 0")
        if not (self.warmup_frac.low >= 0 and self.warmup_frac.high < 1):
            raise ValueError("warmup_frac: must lie in [0, 1)")
        return self


class PrunerSection(_Model):
    """``[pruner]``: when a trial is stopped early."""

    name: Literal["plateau", "stall", "median", "hyperband", "none"] = "plateau"
    # plateau: keep a trial that could still end among the best keep_top; how sure to be
    keep_top: int = Field(default=3, ge=1)
    confidence: float = Field(default=0.9, gt=0.5, lt=1.0)
    # stall (lrsearch < 0.3's plateau rule)
    patience: int = Field(default=3, ge=1)
    min_delta: float = Field(default=0.0, ge=0)
    percentile: float = Field(default=50.0, ge=0, le=100)
    # None: the pruner's own default (plateau 1, stall and median 2)
    n_warmup_steps: int | None = Field(default=None, ge=0)
    n_startup_trials: int = Field(default=3, ge=0)

    def warmup(self) -> int:
        """The warm-up epochs of this pruner: as set, else its own default."""
        if self.n_warmup_steps is not None:
            return self.n_warmup_steps
        return 1 if self.name == "plateau" else 2

    def fingerprint_data(self) -> dict[str, Any]:
        """What the study fingerprint hashes: settings added later are left out while unset,
        so that a study created before them resumes with the same fingerprint."""
        data = self.model_dump(mode="json")
        for key, default in (("keep_top", 3), ("confidence", 0.9)):
            if data[key] == default:
                data.pop(key)
        if data["n_warmup_steps"] is None:
            data["n_warmup_steps"] = 2  # the one default before it depended on the pruner
        return data


class BranchingSection(_Model):
    """``[branching]``: more annihilation tails from the cycle of a trial among the best."""

    tails: int = Field(default=0, ge=0, le=16)
    top: int = Field(default=3, ge=1)


class SamplerSection(_Model):
    """``[sampler]``: TPE after the prior-driven startup trials."""

    multivariate: bool = True
    constant_liar: bool = True


class TrackingSection(_Model):
    """``[tracking]``: what goes to MLflow."""

    enabled: bool = True
    uri: str | None = None
    update_ratio_every: int = Field(default=50, ge=0)
    # a trial run's step metrics (lr, momentum, train_loss): a point every N steps, or "auto":
    # the stride that keeps them within 1% of the training time (lrsearch.tracking._steps);
    # every step is in the run's steps.csv either way
    step_every: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"


class StudyConfig(_Model):
    """A whole study file."""

    study: StudySection
    range_test: RangeTestSection = RangeTestSection()
    prior: PriorSection = PriorSection()
    space: SpaceSection = SpaceSection()
    pruner: PrunerSection = PrunerSection()
    branching: BranchingSection = BranchingSection()
    sampler: SamplerSection = SamplerSection()
    tracking: TrackingSection = TrackingSection()

    @model_validator(mode="after")
    def _lrfree_policy(self) -> StudyConfig:
        """An LR-free optimizer searches its own policy (set here where the file left the
        default); its policy needs that optimizer."""
        optimizer = (self.study.training.optimizer or "").lower()
        policy = LRFREE_POLICY.get(optimizer)
        if policy is not None and self.space.policies == [DEFAULT_POLICY]:
            space = self.space.model_copy(update={"policies": [policy]})
            object.__setattr__(self, "space", space)
        elif policy is not None and self.space.policies != [policy]:
            raise ValueError(
                f"space.policies: optimizer {optimizer!r} is LR-free and searches policy "
                f"{policy!r} only, got {self.space.policies}; remove space.policies"
            )
        lrfree = sorted(set(self.space.policies) & set(LRFREE_POLICY.values()))
        if lrfree and policy is None:
            names = {p: o for o, p in LRFREE_POLICY.items()}
            raise ValueError(
                f"space.policies: {lrfree[0]!r} is an LR-free optimizer's policy; set "
                f'[study.training] optimizer = "{names[lrfree[0]]}" instead'
            )
        return self

    def fingerprint(self) -> str:
        """Hash of everything that shapes the search (not names, budgets or tracking)."""
        data = self.model_dump(mode="json")
        data["study"] = {
            k: v for k, v in data["study"].items() if k not in ("name", "n_trials", "timeout")
        }
        for key in ("loop", "metric", "direction", "steps_per_epoch"):  # unset: hashes as before
            if data["study"].get(key) is None:
                data["study"].pop(key, None)
        training = self.study.training.options()  # unset: hashes as before
        if training:
            data["study"]["training"] = training
        else:
            data["study"].pop("training", None)
        data["pruner"] = self.pruner.fingerprint_data()
        for key in ("lr", "d_coef", "warmup_frac"):  # unset: hashes as before
            if getattr(self.space, key) == getattr(SpaceSection(), key):
                data["space"].pop(key)
        if data["range_test"]["repeats"] is None:  # fitted to the budget; hashes as before
            data["range_test"]["repeats"] = 3
        if data["range_test"]["budget_fraction"] == 0.05:
            data["range_test"].pop("budget_fraction")
        if data["prior"].get("pibo_beta") in (None, 0.0):
            data["prior"].pop("pibo_beta")  # unset (or 0, as earlier versions hashed it)
        if data["prior"].get("pibo_fade") == 1.0:
            data["prior"].pop("pibo_fade")  # unset: hashes as before
        for key in ("explore_share", "contradiction", "startup"):  # unset: hashes as before
            if data["prior"].get(key) is None:
                data["prior"].pop(key, None)
        if data["branching"] == BranchingSection().model_dump(mode="json"):
            data.pop("branching")  # unset: hashes as before
        data.pop("tracking")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return self.model_dump_json()

    def flat(self) -> dict[str, Any]:
        """Every setting as ``section.key -> value`` (e.g. ``space.div_factor.low``)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, inner)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        return out

    @classmethod
    def from_json(cls, text: str) -> StudyConfig:
        return cls.model_validate_json(text)


def _format_errors(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "missing; add it to the file"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (see studies/quickstart.toml)"
        elif "input" in err and err["type"] not in ("value_error",):
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


def parse_study_config(data: dict[str, Any], *, source: str = "study") -> StudyConfig:
    """Validate a study dict; raises :class:`ConfigError` naming every bad field."""
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_study_config(path: str | Path, **overrides: Any) -> StudyConfig:
    """Read and validate a TOML study file; ``overrides`` replace ``[study]`` fields."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study file; see the files in studies/") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None
    study = (
        dict(data.get("study", {})) if isinstance(data.get("study"), dict) else data.get("study")
    )
    if isinstance(study, dict):
        study.update({k: v for k, v in overrides.items() if v is not None})
        data["study"] = study
    return parse_study_config(data, source=str(path))
