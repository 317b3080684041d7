"""PriorGuidedSampler: the prior drives max_lr at startup, and (pibo_beta) keeps acting after."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest

from lrsearch.prior import LRPrior
from lrsearch.sampler import PriorGuidedSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
PRIOR = LRPrior(center=0.1, sigma_decades=0.3, low=1e-5, high=10.0)


def _distance_after_startup(pibo_beta: float, seed: int) -> float:
    """Median distance (decades) of max_lr from the prior's centre after the startup trials,
    on an objective that tells TPE nothing (every trial scores the same)."""
    sampler = PriorGuidedSampler(PRIOR, n_startup_trials=4, pibo_beta=pibo_beta, seed=seed)
    study = optuna.create_study(sampler=sampler)

    def flat(trial: optuna.Trial) -> float:
        trial.suggest_float("max_lr", PRIOR.low, PRIOR.high, log=True)
        trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
        return 1.0

    study.optimize(flat, n_trials=16)
    later = [t.params["max_lr"] for t in study.trials[4:]]
    return statistics.median(abs(math.log10(lr / PRIOR.center)) for lr in later)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_prior_weight_keeps_trials_nearer_the_prior_after_startup(seed: int) -> None:
    assert _distance_after_startup(10.0, seed) < _distance_after_startup(0.0, seed)


def test_bad_pibo_settings_are_refused() -> None:
    for beta in (-1.0, math.inf):
        with pytest.raises(ValueError, match="pibo_beta must be >= 0 and finite"):
            PriorGuidedSampler(PRIOR, pibo_beta=beta)


def test_the_prior_weight_is_beta_over_trials_since_startup() -> None:
    sampler = PriorGuidedSampler(PRIOR, n_startup_trials=3, pibo_beta=6.0, seed=0)
    study = optuna.create_study(sampler=sampler)
    weights = []
    for _ in range(6):
        weights.append(sampler.pibo_weight(study))
        study.optimize(lambda t: t.suggest_float("max_lr", 1e-5, 10.0, log=True), n_trials=1)
    # startup (0, 1, 2 finished) counts as n = 1; then 6 / 2, 6 / 3, 6 / 4
    assert weights == [6.0, 6.0, 6.0, 6.0, 3.0, 2.0]


def test_without_a_weight_the_sampler_is_tpe_exactly() -> None:
    """pibo_beta = 0 leaves TPE's acquisition alone: same seed, same trials as before piBO."""

    def lrs(beta: float) -> list[float]:
        sampler = PriorGuidedSampler(PRIOR, n_startup_trials=3, pibo_beta=beta, seed=3)
        study = optuna.create_study(sampler=sampler)
        study.optimize(
            lambda t: abs(math.log10(t.suggest_float("max_lr", 1e-5, 10.0, log=True)) + 2), 12
        )
        return [t.params["max_lr"] for t in study.trials]

    plain, weighted = lrs(0.0), lrs(5.0)
    assert plain == lrs(0.0)  # deterministic
    assert plain[:3] == weighted[:3]  # startup: the prior draws max_lr either way
    assert plain[3:] != weighted[3:]  # after it, the weight changes TPE's choice


def test_evidence_overrules_a_wrong_prior() -> None:
    """The best LR is 2.5 decades below the prior's centre: as trials accumulate the prior's
    weight fades and the search ends near the optimum, not at the prior."""
    optimum = math.log10(PRIOR.center) - 2.5
    sampler = PriorGuidedSampler(PRIOR, n_startup_trials=5, pibo_beta=1.0, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(
        lambda t: abs(
            math.log10(t.suggest_float("max_lr", PRIOR.low, PRIOR.high, log=True)) - optimum
        ),
        n_trials=40,
    )
    assert study.best_value < 0.25
    late = [math.log10(t.params["max_lr"]) for t in study.trials[-10:]]
    to_optimum = statistics.median(abs(x - optimum) for x in late)
    to_prior = statistics.median(abs(x - math.log10(PRIOR.center)) for x in late)
    assert to_optimum < 1.0 < to_prior


def test_fade_sets_how_fast_the_prior_lets_go() -> None:
    def weights(fade: float) -> list[float]:
        sampler = PriorGuidedSampler(PRIOR, n_startup_trials=1, pibo_beta=4.0, pibo_fade=fade)
        study = optuna.create_study(sampler=sampler)
        out = []
        for _ in range(5):
            study.optimize(lambda t: t.suggest_float("max_lr", 1e-5, 10.0, log=True), n_trials=1)
            out.append(sampler.pibo_weight(study))
        return out

    assert weights(1.0) == [4.0, 2.0, 4 / 3, 1.0, 0.8]  # piBO's beta / n
    assert weights(0.0) == [4.0] * 5  # never fades
    assert weights(2.0) == [4.0, 1.0, 4 / 9, 0.25, 0.16]
    with pytest.raises(ValueError, match="pibo_fade must be >= 0 and finite"):
        PriorGuidedSampler(PRIOR, pibo_fade=-1.0)


def test_study_files_set_pibo_and_unset_keeps_old_fingerprints() -> None:
    from lrsearch.config import parse_study_config
    from lrsearch.sampler import DEFAULT_PIBO_BETA, sampler_from_config

    def config(**prior: float) -> object:
        return parse_study_config(
            {"study": {"name": "x", "workload": "digits-mlp"}, "prior": prior}
        )

    unset, zero, faded = config(), config(pibo_beta=0.0), config(pibo_fade=1.0)
    assert unset.fingerprint() == zero.fingerprint() == faded.fingerprint()
    assert config(pibo_beta=2.0).fingerprint() != unset.fingerprint()
    assert config(pibo_fade=0.5).fingerprint() != unset.fingerprint()
    assert sampler_from_config(unset, PRIOR, seed=0).pibo_beta == DEFAULT_PIBO_BETA
    chosen = sampler_from_config(config(pibo_beta=2.0, pibo_fade=0.5), PRIOR, seed=0)
    assert (chosen.pibo_beta, chosen.pibo_fade) == (2.0, 0.5)


def _synthetic_study(shift: float, *, startup: str, seed: int, trials: int = 8) -> list[float]:
    """Decades from the optimum of each trial, a study run as lrsearch runs it (the centre
    enqueued first) on the prior_robustness harness's landscape, the prior ``shift`` off."""
    from lrsearch.harness.prior_robustness import accuracy

    optimum = -2.0
    high = 10 ** (optimum + 0.6)
    center = min(10 ** (optimum + shift), high)
    prior = LRPrior(center=center, sigma_decades=0.25, low=center / 100, high=high)
    sampler = PriorGuidedSampler(prior, n_startup_trials=5, seed=seed, startup=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"max_lr": center}, user_attrs={"lrsearch.origin": "prior-centre"})
    xs: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        x = math.log10(trial.suggest_float("max_lr", prior.low, prior.high, log=True)) - optimum
        xs.append(x)
        return accuracy(x, trial.suggest_float("weight_decay", 0.0, 1.0), 0.0)

    study.optimize(objective, n_trials=trials)
    return xs


@pytest.mark.parametrize("shift", [-3.0, -2.0, -1.0, 1.0, 2.0])
def test_a_bracketing_startup_finds_the_good_region_whatever_the_prior(shift: float) -> None:
    for seed in range(3):
        xs = _synthetic_study(shift, startup="bracket", seed=seed)
        first_good = next(i for i, x in enumerate(xs) if abs(x) <= 0.5)
        assert first_good <= 4, (seed, xs)  # a prior 1-3 decades off costs 4 trials at most
        if shift <= -2:  # what it was before: the prior's startup stays where the prior is
            prior_only = _synthetic_study(shift, startup="prior", seed=seed)
            assert not any(abs(x) <= 0.5 for x in prior_only[:5])


def test_bracket_probe_steps_out_past_a_plateau_and_then_refines() -> None:
    from lrsearch.sampler import bracket_probe

    assert bracket_probe([], -6, 0) is None
    assert bracket_probe([(-4.0, None)], -6, 0) is None  # nothing finished: the prior draws
    # the centre and one decade up both at chance: up again, beyond the plateau
    assert bracket_probe([(-4.0, 10.0), (-3.0, 10.1)], -6, 0) == -2.0
    # up is worse, down not tried: down
    assert bracket_probe([(-4.0, 50.0), (-3.0, 10.0)], -6, 0) == -5.0
    # worse on both sides: half a step either side of the best, then done
    points = [(-4.0, 50.0), (-3.0, 10.0), (-5.0, 20.0)]
    assert bracket_probe(points, -6, 0) == -3.5
    assert bracket_probe([*points, (-3.5, 30.0)], -6, 0) == -4.5
    assert bracket_probe([*points, (-3.5, 30.0), (-4.5, 40.0)], -6, 0) is None
    # out of range or already probed (a failed or running trial) is skipped
    assert bracket_probe([(-1.0, 50.0)], -6, -0.5) == -2.0
    assert bracket_probe([(-4.0, 50.0), (-3.0, None)], -6, 0) == -5.0


def test_startup_draws_are_recorded_and_a_resumed_study_repeats_none(tmp_path) -> None:
    """Run 3 trials, resume to 6 with a new sampler of the same seed: no draw repeats."""
    from lrsearch.sampler import DRAW_KEY

    prior = LRPrior(center=1e-2, sigma_decades=0.25, low=1e-4, high=1.0)
    storage = f"sqlite:///{tmp_path / 's.db'}"

    def run(n: int) -> optuna.Study:
        sampler = PriorGuidedSampler(prior, n_startup_trials=3, seed=7)
        study = optuna.create_study(
            study_name="s", storage=storage, sampler=sampler, load_if_exists=True
        )
        study.optimize(
            lambda t: (
                (math.log10(t.suggest_float("max_lr", 1e-4, 1.0, log=True)) + 2) ** 2
                + t.suggest_float("weight_decay", 0.0, 1.0)
            ),
            n_trials=n,
        )
        return study

    run(3)
    study = run(3)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(params) == 6 and len(set(params)) == 6
    assert {t.user_attrs.get(DRAW_KEY) for t in study.trials[:3]} <= {"prior", "bracket"}
    # and from scratch, the same seed draws the same study
    again = optuna.create_study(sampler=PriorGuidedSampler(prior, n_startup_trials=3, seed=7))
    again.optimize(
        lambda t: (
            (math.log10(t.suggest_float("max_lr", 1e-4, 1.0, log=True)) + 2) ** 2
            + t.suggest_float("weight_decay", 0.0, 1.0)
        ),
        n_trials=3,
    )
    assert [t.params for t in again.trials] == [t.params for t in study.trials[:3]]
