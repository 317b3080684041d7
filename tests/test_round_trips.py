"""Storage round trips per trial (issue 14): counted on a real database, held to a bound."""

from __future__ import annotations

import os
import uuid

import pytest

from lrsearch.harness.round_trips import MAX_PER_TRIAL, TrialRoundTrips, measure
from tests.private_pg import unavailable

WORKLOAD = "tests.tiny_workloads:blobs_with_test"
PG = os.environ.get("LRSEARCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
# lrsearch's own round trips in every trial; the rest are Optuna's (ask, one write per
# parameter, one report per epoch, tell) and, from the sixth trial on, TPE's.
OURS = {
    "user attribute worker": 1,
    "claim: read the trials (budget)": 1,
    "user attribute derived": 1,
    "user attribute test_metric": 1,
    "user attribute training": 1,
    "after tell: budget check (stop?)": 1,
}


def _check(trials: list[TrialRoundTrips]) -> None:
    assert [t.number for t in trials] == list(range(7))
    for trial in trials:
        purposes = trial.by_purpose()
        assert trial.total <= MAX_PER_TRIAL, (trial.number, purposes)
        assert "?" not in purposes  # every round trip is accounted for
        if "user attribute diverged" in purposes:  # a startup probe that blew up: no test
            assert purposes.get("report (per epoch)", 0) < 3
            continue
        assert {p: n for p, n in purposes.items() if p in OURS} == OURS, purposes
        assert purposes["report (per epoch)"] == 3
        assert purposes["suggest_params"] in (7, 8, 9)  # + TPE's read and its shared sample
    # The sampler reuses claim's read of the trials: a startup draw reads nothing more and
    # writes one attribute (how its max_lr was drawn).
    assert [t.by_purpose()["suggest_params"] for t in trials[1:5]] == [8] * 4


def test_a_trial_stays_within_its_round_trips_on_sqlite(tmp_path) -> None:
    _check(measure(f"sqlite:///{tmp_path / 'optuna.db'}", workload=WORKLOAD))


@pytest.mark.postgres
def test_a_trial_stays_within_its_round_trips_on_postgresql() -> None:
    psycopg = pytest.importorskip("psycopg")
    name = f"lrsearch_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:  # pragma: no cover - depends on the machine
        unavailable(f"PostgreSQL not reachable at {PG}: {exc}")
    try:
        _check(measure(f"{PG}/{name}", workload=WORKLOAD))
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
