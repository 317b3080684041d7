"""Tests for lrsearch.schedules: contract, properties, torch as the oracle, round trips."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrsearch.schedules import (
    SCHEDULES,
    Constant,
    Cyclic,
    ExpRamp,
    LinearRamp,
    MetricDriven,
    OneCycle,
    PlateauDecay,
    Schedule,
    schedule_from_dict,
)

PROPERTY = settings(deadline=None, max_examples=60)


def _plateau_with_history() -> PlateauDecay:
    schedule = PlateauDecay(0.1, patience=1, cooldown=1, factor=0.5)
    for metric in [1.0, 0.9, 0.95, 0.95, 0.95, 0.8]:
        schedule.report(metric)
    return schedule


EXAMPLES: dict[str, Callable[[], Schedule]] = {
    "one-cycle": lambda: OneCycle(0.1, 101),
    "one-cycle-long": lambda: OneCycle(0.1, 2500, cycle_frac=0.5, shape="cos"),
    "one-cycle-cos-no-momentum": lambda: OneCycle(
        1.0, 50, cycle_frac=1.0, momentum=None, shape="cos"
    ),
    "cyclic": lambda: Cyclic(1e-3, 1e-2, 5, total_steps=40),
    "cyclic-exp-momentum": lambda: Cyclic(
        1e-3, 1e-2, 4, mode="exp_range", gamma=0.99, momentum=(0.9, 0.8)
    ),
    "exp-ramp": lambda: ExpRamp(1e-7, 10.0, 100),
    "linear-ramp": lambda: LinearRamp(0.0, 0.1, 20),
    "constant": lambda: Constant(0.01),
    "constant-bounded": lambda: Constant(0.01, total_steps=7),
    "plateau": _plateau_with_history,
}


def _n_steps(schedule: Schedule) -> int:
    return schedule.total_steps if schedule.total_steps is not None else 1100


# --- the layer rule ----------------------------------------------------------------------


def test_import_pulls_in_no_heavy_dependency() -> None:
    code = (
        "import sys, lrsearch.schedules; "
        "print(sorted(m for m in ('torch', 'optuna', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the contract, over every implementation ---------------------------------------------


@pytest.mark.parametrize("make", EXAMPLES.values(), ids=EXAMPLES.keys())
class TestContract:
    def test_registered_under_its_kind(self, make: Callable[[], Schedule]) -> None:
        schedule = make()
        assert SCHEDULES[schedule.kind] is type(schedule)

    def test_arrays_equal_scalar_values(self, make: Callable[[], Schedule]) -> None:
        schedule = make()
        n = _n_steps(schedule)
        lrs, momenta = schedule.lrs(n), schedule.momenta(n)
        assert lrs.shape == (n,)
        assert lrs.tolist() == [schedule.lr_at(k) for k in range(n)]
        if momenta is None:
            assert all(schedule.momentum_at(k) is None for k in range(n))
        else:
            assert momenta.tolist() == [schedule.momentum_at(k) for k in range(n)]

    def test_json_round_trip(self, make: Callable[[], Schedule]) -> None:
        schedule = make()
        d = json.loads(json.dumps(schedule.to_dict()))
        assert d["kind"] == schedule.kind
        for rebuilt in (schedule_from_dict(d), type(schedule).from_dict(d)):
            assert type(rebuilt) is type(schedule)
            assert rebuilt == schedule
            assert rebuilt.to_dict() == schedule.to_dict()
            n = _n_steps(schedule)
            np.testing.assert_array_equal(rebuilt.lrs(n), schedule.lrs(n))

    def test_steps_out_of_range(self, make: Callable[[], Schedule]) -> None:
        schedule = make()
        with pytest.raises(ValueError, match=r"\bstep\b"):
            schedule.lr_at(-1)
        if schedule.total_steps is None:
            with pytest.raises(ValueError, match=r"\bn_steps\b"):
                schedule.lrs()
        else:
            with pytest.raises(ValueError, match=r"\bstep\b"):
                schedule.lr_at(schedule.total_steps)
            with pytest.raises(ValueError, match=r"\bn_steps\b"):
                schedule.lrs(schedule.total_steps + 1)
            assert len(schedule.lrs()) == schedule.total_steps


def test_changed_parameter_changes_values() -> None:
    s = OneCycle(0.1, 3000)
    peak = s.phase_boundaries[1]
    assert s.lr_at(peak) == 0.1
    s.max_lr = 0.2
    assert s.lr_at(peak) == 0.2
    plateau = PlateauDecay(1.0, patience=0)
    assert plateau.lr_at(5) == 1.0
    plateau.report(1.0)
    plateau.report(2.0)
    assert plateau.lr_at(5) == plateau.current_lr == 0.1


# --- one-cycle properties ----------------------------------------------------------------

_momentum_pairs = st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 0.99)).map(
    lambda pair: (max(pair), min(pair))
)
one_cycles = st.builds(
    OneCycle,
    max_lr=st.floats(1e-4, 10.0),
    total_steps=st.integers(3, 400),
    div_factor=st.floats(1.01, 1e3),
    cycle_frac=st.one_of(st.just(1.0), st.floats(0.01, 1.0)),
    annihilation=st.one_of(st.just(1.0), st.floats(1.0, 1e4)),
    momentum=st.one_of(st.none(), _momentum_pairs),
    shape=st.sampled_from(["linear", "cos"]),
)


@PROPERTY
@given(one_cycles)
def test_one_cycle_phase_boundaries(s: OneCycle) -> None:
    start, peak, cycle_end, last = s.phase_boundaries
    assert s.cycle_steps == min(max(round(s.cycle_frac * s.total_steps), 3), s.total_steps)
    assert (start, cycle_end, last) == (0, s.cycle_steps - 1, s.total_steps - 1)
    assert 0 < peak < cycle_end <= last
    assert cycle_end - 2 * peak in (0, 1)  # symmetric, or the down phase one step longer
    assert s.lr_at(0) == s.lower_lr == s.max_lr / s.div_factor
    assert s.lr_at(peak) == s.max_lr
    assert s.lr_at(cycle_end) == s.lower_lr
    assert s.lr_at(last) == s.final_lr
    expected_final = s.lower_lr / s.annihilation if cycle_end < last else s.lower_lr
    assert s.final_lr == expected_final


@PROPERTY
@given(one_cycles)
def test_one_cycle_monotone_and_continuous(s: OneCycle) -> None:
    _, peak, cycle_end, last = s.phase_boundaries
    lrs = s.lrs()
    assert lrs.tolist() == [s.lr_at(k) for k in range(s.total_steps)]
    phases = [
        (0, peak, 1.0, s.max_lr - s.lower_lr),
        (peak, cycle_end, -1.0, s.max_lr - s.lower_lr),
        (cycle_end, last, -1.0, s.lower_lr - s.final_lr),
    ]
    for begin, end, sign, height in phases:
        if end == begin:
            continue
        steps = sign * np.diff(lrs[begin : end + 1])
        assert np.all(steps >= 0)
        if s.shape == "linear":
            np.testing.assert_allclose(steps, height / (end - begin), rtol=1e-6, atol=1e-12)
        else:  # the steepest point of (1 - cos(pi t)) / 2 has slope pi / 2
            assert np.all(steps <= height * math.pi / 2 / (end - begin) * (1 + 1e-9) + 1e-15)


@PROPERTY
@given(one_cycles)
def test_one_cycle_momentum_moves_inversely(s: OneCycle) -> None:
    _, peak, cycle_end, _ = s.phase_boundaries
    momenta = s.momenta()
    if s.momentum is None:
        assert momenta is None
        assert s.momentum_at(peak) is None
        return
    assert momenta is not None
    high, low = s.momentum
    assert momenta.tolist() == [s.momentum_at(k) for k in range(s.total_steps)]
    assert (momenta[0], momenta[peak], momenta[cycle_end]) == (high, low, high)
    assert np.all(momenta[cycle_end:] == high)  # held high through annihilation
    assert np.all(np.diff(momenta[: peak + 1]) <= 0)
    assert np.all(np.diff(momenta[peak : cycle_end + 1]) >= 0)


# --- cyclic, ramps -----------------------------------------------------------------------

cyclics = st.builds(
    Cyclic,
    base_lr=st.floats(1e-5, 1e-2),
    max_lr=st.floats(2e-2, 1.0),
    step_size=st.integers(1, 40),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.9, 1.0),
    momentum=st.one_of(st.none(), _momentum_pairs),
)


@PROPERTY
@given(cyclics)
def test_cyclic_shape(s: Cyclic) -> None:
    size = s.step_size
    lrs = s.lrs(6 * size + 1)
    amplitude = s.max_lr - s.base_lr
    assert np.all((lrs >= s.base_lr) & (lrs <= s.max_lr * (1 + 1e-12)))
    np.testing.assert_allclose(lrs[:: 2 * size], s.base_lr, rtol=1e-12)  # cycle starts
    peaks = lrs[size :: 2 * size] - s.base_lr
    if s.mode == "triangular":
        np.testing.assert_allclose(peaks, amplitude, rtol=1e-12)
        np.testing.assert_allclose(lrs[2 * size :], lrs[: -2 * size], rtol=1e-12)
    elif s.mode == "triangular2":
        np.testing.assert_allclose(peaks, amplitude / 2.0 ** np.arange(3), rtol=1e-12)
    else:
        triangle = Cyclic(s.base_lr, s.max_lr, size).lrs(len(lrs)) - s.base_lr
        scaled = s.base_lr + triangle * s.gamma ** np.arange(len(lrs))
        np.testing.assert_allclose(lrs, scaled, rtol=1e-12)


@PROPERTY
@given(cyclics)
def test_cyclic_momentum_mirrors_lr(s: Cyclic) -> None:
    n = 4 * s.step_size + 3
    momenta = s.momenta(n)
    if s.momentum is None:
        assert momenta is None
        return
    assert momenta is not None
    high, low = s.momentum
    lr_height = (s.lrs(n) - s.base_lr) / (s.max_lr - s.base_lr)
    np.testing.assert_allclose(high - momenta, (high - low) * lr_height, atol=1e-12)


ramp_args = st.tuples(st.floats(1e-8, 1.0), st.floats(1e-8, 10.0), st.integers(2, 300))


@PROPERTY
@given(ramp_args)
def test_exp_ramp_is_geometric(args: tuple[float, float, int]) -> None:
    start, end, n = args
    s = ExpRamp(start, end, n)
    lrs = s.lrs()
    assert (lrs[0], lrs[-1]) == (start, end)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (end / start) ** (1 / (n - 1)), rtol=1e-9)
    assert np.all(np.diff(lrs) >= 0) if end >= start else np.all(np.diff(lrs) <= 0)
    assert lrs.tolist() == [s.lr_at(k) for k in range(n)]


@PROPERTY
@given(ramp_args)
def test_linear_ramp_has_equal_steps(args: tuple[float, float, int]) -> None:
    start, end, n = args
    s = LinearRamp(start, end, n)
    lrs = s.lrs()
    assert (lrs[0], lrs[-1]) == (start, end)
    np.testing.assert_allclose(np.diff(lrs), (end - start) / (n - 1), rtol=1e-6, atol=1e-15)
    assert lrs.tolist() == [s.lr_at(k) for k in range(n)]


# --- torch as the oracle -----------------------------------------------------------------


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


def _torch_values(
    torch: Any, make_scheduler: Callable[[Any], Any], n_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """LR and momentum torch applies at each step: set at construction, then per step()."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0, momentum=0.5)
    scheduler = make_scheduler(optimizer)
    lrs, momenta = [], []
    for step in range(n_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        if step < n_steps - 1:
            scheduler.step()
    return np.array(lrs), np.array(momenta)


@pytest.mark.parametrize(
    ("total_steps", "cycle_frac", "div_factor", "annihilation", "shape"),
    [
        (3, 1.0, 10.0, 100.0, "linear"),  # the smallest cycle: lower, max, lower
        (10, 0.5, 25.0, 1e4, "linear"),  # cycle 5 steps
        (100, 0.91, 10.0, 100.0, "linear"),  # cycle 91
        (101, 0.9, 10.0, 100.0, "linear"),  # cycle round(90.9) = 91
        (1000, 0.901, 4.0, 1.0, "linear"),  # no decay in the annihilation phase
        (47, 1.0, 10.0, 100.0, "linear"),  # no annihilation; torch's float rounding bites
        (777, 0.3, 1.5, 1e3, "linear"),  # long annihilation
        (60, 0.75, 10.0, 10.0, "cos"),  # cycle 45
        (201, 1.0, 20.0, 100.0, "cos"),
    ],
)
@pytest.mark.parametrize("momentum", [(0.95, 0.85), (0.9, 0.9), None])
def test_one_cycle_matches_torch_one_cycle_lr(
    torch: Any,
    total_steps: int,
    cycle_frac: float,
    div_factor: float,
    annihilation: float,
    shape: str,
    momentum: tuple[float, float] | None,
) -> None:
    s = OneCycle(
        0.3,
        total_steps,
        div_factor=div_factor,
        cycle_frac=cycle_frac,
        annihilation=annihilation,
        momentum=momentum,
        shape=shape,
    )
    cycle, total = s.cycle_steps, total_steps
    assert cycle % 2 == 1, "the torch mapping is exact for odd cycle_steps only"
    high, low = momentum or (0.5, 0.5)

    def make(optimizer: Any) -> Any:
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=0.3,
            total_steps=total,
            pct_start=(cycle + 1) / (2 * total),
            div_factor=div_factor,
            final_div_factor=annihilation if cycle < total else 1.0,
            three_phase=True,
            anneal_strategy=shape,
            cycle_momentum=momentum is not None,
            max_momentum=high,
            base_momentum=low,
        )

    torch_lrs, torch_momenta = _torch_values(torch, make, total)
    np.testing.assert_allclose(s.lrs(), torch_lrs, rtol=1e-9, atol=0)
    momenta = s.momenta()
    if momentum is not None:
        assert momenta is not None
        np.testing.assert_allclose(momenta, torch_momenta, rtol=1e-9, atol=0)
    else:
        assert momenta is None


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("momentum", [None, (0.95, 0.8)])
@pytest.mark.parametrize("step_size", [1, 3, 10])
def test_cyclic_matches_torch_cyclic_lr(
    torch: Any, mode: str, momentum: tuple[float, float] | None, step_size: int
) -> None:
    gamma = 0.97 if mode == "exp_range" else 1.0
    s = Cyclic(1e-3, 0.05, step_size, mode=mode, gamma=gamma, momentum=momentum)
    high, low = momentum or (0.9, 0.8)

    def make(optimizer: Any) -> Any:
        return torch.optim.lr_scheduler.CyclicLR(
            optimizer,
            base_lr=1e-3,
            max_lr=0.05,
            step_size_up=step_size,
            mode=mode,
            gamma=gamma,
            cycle_momentum=momentum is not None,
            base_momentum=low,
            max_momentum=high,
        )

    n = 7 * step_size + 5
    torch_lrs, torch_momenta = _torch_values(torch, make, n)
    np.testing.assert_allclose(s.lrs(n), torch_lrs, rtol=1e-12, atol=0)
    if momentum is not None:
        momenta = s.momenta(n)
        assert momenta is not None
        np.testing.assert_allclose(momenta, torch_momenta, rtol=1e-12, atol=0)


_PLATEAU_METRICS = {
    "improving": [5.0, 4.0, 3.0, 2.0, 1.0, 0.5],
    "flat": [1.0] * 30,
    "plateaus": [1.0, 0.9, 0.9, 0.9, 0.9, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.6, 0.6, 0.6, 0.6],
    "tiny-gains": [1.0 - 1e-5 * k for k in range(25)],
    "noisy": [1.0, 1.2, 0.8, 0.85, 0.81, 0.79, 0.95, 0.9, 0.78, 0.9, 0.9, 0.9, 0.9, 0.9],
    "rising": [0.1 * k for k in range(20)],
}


@pytest.mark.parametrize("metrics", _PLATEAU_METRICS.values(), ids=_PLATEAU_METRICS.keys())
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"patience": 0},
        {"patience": 2, "cooldown": 2, "factor": 0.5},
        {"patience": 1, "min_lr": 0.02, "factor": 0.3},
        {"patience": 1, "min_delta": 0.05, "threshold_mode": "abs"},
        {"patience": 2, "mode": "max", "cooldown": 1},
        {"patience": 1, "mode": "max", "threshold_mode": "abs", "min_delta": 0.01},
    ],
    ids=["defaults", "no-patience", "cooldown", "min-lr", "abs", "max", "max-abs"],
)
def test_plateau_matches_torch_reduce_lr_on_plateau(
    torch: Any, metrics: list[float], options: dict[str, Any]
) -> None:
    s = PlateauDecay(0.1, **options)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    torch_options = {("threshold" if k == "min_delta" else k): v for k, v in options.items()}
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **torch_options)
    expected = [0.1]
    for metric in metrics:
        optimizer.step()
        scheduler.step(metric)
        expected.append(optimizer.param_groups[0]["lr"])
        assert s.report(metric) == expected[-1]
    assert [s.lr_at(k) for k in range(len(expected))] == expected
    assert s.lrs(len(expected) + 3).tolist() == expected + [expected[-1]] * 3


# --- plateau state -----------------------------------------------------------------------


def test_plateau_restored_mid_run_continues_identically() -> None:
    metrics = _PLATEAU_METRICS["plateaus"] + _PLATEAU_METRICS["flat"][:8]
    original = PlateauDecay(1.0, patience=2, cooldown=3, factor=0.5, min_lr=0.1)
    for metric in metrics[:7]:  # stop in the middle of a plateau and a cooldown
        original.report(metric)
    restored = schedule_from_dict(json.loads(json.dumps(original.to_dict())))
    assert isinstance(restored, PlateauDecay)
    assert restored.history == original.history
    for metric in metrics[7:]:
        assert restored.report(metric) == original.report(metric)
    assert restored == original
    assert restored.current_lr == original.current_lr < 1.0


def test_plateau_is_metric_driven_and_counts_its_reports() -> None:
    schedule = PlateauDecay(1.0, patience=0, factor=0.5)
    assert isinstance(schedule, MetricDriven)
    assert not isinstance(OneCycle(0.1, 10), MetricDriven)
    lrs = [schedule.lr_at(schedule.n_reports)]
    for metric in (3.0, 3.0, 3.0):
        schedule.report(metric)
        lrs.append(schedule.lr_at(schedule.n_reports))
    assert schedule.n_reports == 3
    assert lrs == [1.0, 1.0, 0.5, 0.25]  # the LR in force after each report


# --- dicts -------------------------------------------------------------------------------


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="kind") as excinfo:
        schedule_from_dict({"kind": "warm-restarts", "lr": 0.1})
    for kind in ("one-cycle", "cyclic", "exp-ramp", "linear-ramp", "constant", "plateau"):
        assert kind in str(excinfo.value)
    with pytest.raises(ValueError, match="kind"):
        schedule_from_dict({"lr": 0.1})


def test_from_dict_rejects_wrong_kind_and_bad_keys() -> None:
    with pytest.raises(ValueError, match="kind"):
        Constant.from_dict(OneCycle(0.1, 10).to_dict())
    with pytest.raises(ValueError, match="colour"):
        schedule_from_dict({**Constant(0.1).to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="total_steps"):
        schedule_from_dict({"kind": "one-cycle", "max_lr": 0.1})


# --- validation --------------------------------------------------------------------------

_BAD_ARGUMENTS: list[tuple[str, Callable[[], object]]] = [
    ("max_lr", lambda: OneCycle(0.0, 100)),
    ("max_lr", lambda: OneCycle(math.nan, 100)),
    ("max_lr", lambda: OneCycle("0.1", 100)),  # type: ignore[arg-type]
    ("total_steps", lambda: OneCycle(0.1, 2)),
    ("total_steps", lambda: OneCycle(0.1, 100.0)),  # type: ignore[arg-type]
    ("total_steps", lambda: OneCycle(0.1, True)),
    ("div_factor", lambda: OneCycle(0.1, 100, div_factor=1.0)),
    ("cycle_frac", lambda: OneCycle(0.1, 100, cycle_frac=0.0)),
    ("cycle_frac", lambda: OneCycle(0.1, 100, cycle_frac=1.01)),
    ("annihilation", lambda: OneCycle(0.1, 100, annihilation=0.5)),
    ("momentum", lambda: OneCycle(0.1, 100, momentum=(0.85, 0.95))),
    ("momentum", lambda: OneCycle(0.1, 100, momentum=(1.0, 0.9))),
    ("momentum", lambda: OneCycle(0.1, 100, momentum=(0.9, -0.1))),
    ("momentum", lambda: OneCycle(0.1, 100, momentum=(0.9,))),
    ("shape", lambda: OneCycle(0.1, 100, shape="cosine")),
    ("base_lr", lambda: Cyclic(0.0, 0.1, 10)),
    ("max_lr", lambda: Cyclic(0.1, 0.1, 10)),
    ("step_size", lambda: Cyclic(0.01, 0.1, 0)),
    ("mode", lambda: Cyclic(0.01, 0.1, 10, mode="exp")),
    ("gamma", lambda: Cyclic(0.01, 0.1, 10, mode="exp_range", gamma=1.5)),
    ("gamma", lambda: Cyclic(0.01, 0.1, 10, gamma=0.0)),
    ("momentum", lambda: Cyclic(0.01, 0.1, 10, momentum=(0.8, 0.9))),
    ("total_steps", lambda: Cyclic(0.01, 0.1, 10, total_steps=0)),
    ("start_lr", lambda: ExpRamp(0.0, 1.0, 10)),
    ("end_lr", lambda: ExpRamp(1e-7, -1.0, 10)),
    ("n_steps", lambda: ExpRamp(1e-7, 1.0, 1)),
    ("start_lr", lambda: LinearRamp(-0.1, 1.0, 10)),
    ("end_lr", lambda: LinearRamp(0.0, math.inf, 10)),
    ("n_steps", lambda: LinearRamp(0.0, 1.0, 2.5)),  # type: ignore[arg-type]
    ("lr", lambda: Constant(0.0)),
    ("total_steps", lambda: Constant(0.1, total_steps=0)),
    ("lr", lambda: PlateauDecay(-1.0)),
    ("factor", lambda: PlateauDecay(0.1, factor=1.0)),
    ("factor", lambda: PlateauDecay(0.1, factor=0.0)),
    ("patience", lambda: PlateauDecay(0.1, patience=-1)),
    ("min_delta", lambda: PlateauDecay(0.1, min_delta=-1e-4)),
    ("min_delta", lambda: PlateauDecay(0.1, min_delta=1.0)),
    ("cooldown", lambda: PlateauDecay(0.1, cooldown=1.5)),  # type: ignore[arg-type]
    ("min_lr", lambda: PlateauDecay(0.1, min_lr=-0.1)),
    ("mode", lambda: PlateauDecay(0.1, mode="up")),
    ("threshold_mode", lambda: PlateauDecay(0.1, threshold_mode="relative")),
    ("eps", lambda: PlateauDecay(0.1, eps=-1.0)),
    ("step", lambda: Constant(0.1).lr_at(-1)),
    ("step", lambda: OneCycle(0.1, 10).momentum_at(10)),
    ("n_steps", lambda: Constant(0.1).lrs()),
    ("n_steps", lambda: Cyclic(0.01, 0.1, 10).momenta(-1)),
]


@pytest.mark.parametrize(
    ("name", "call"), _BAD_ARGUMENTS, ids=[f"{i}-{n}" for i, (n, _) in enumerate(_BAD_ARGUMENTS)]
)
def test_bad_argument_is_named(name: str, call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


def test_min_delta_may_exceed_one_in_abs_mode() -> None:
    assert PlateauDecay(0.1, min_delta=2.0, threshold_mode="abs").min_delta == 2.0
