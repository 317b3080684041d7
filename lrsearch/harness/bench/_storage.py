"""Storage: worker processes against PostgreSQL, directly and through the gRPC proxy.

A throwaway database ``lrsearch_bench_<hex>`` is created on the server and dropped afterwards.
Two ways to reach it (``arm``): **direct** (each worker opens the database the way lrsearch
opens it: :func:`lrsearch.storage.open_storage`, heartbeats, pre-ping) and **proxy** (each
worker opens ``grpc://127.0.0.1:<port>``, served by ``python -m lrsearch.cli storage-proxy``,
which this section starts on a free port in front of the same database and stops at the end;
``storage_proxy=False`` leaves it out). For each worker count, and each arm in turn, a fresh
study grows to its number of trials; each worker asks, samples the full lrsearch space
(``suggest_params``: every parameter is a storage write), and tells a value computed from the
parameters. The sampler is Optuna's ``RandomSampler``, so the latency measured is the
storage's, not TPE's (which grows with the study whatever the storage).

**Growth.** The studies of the most workers grow to ``storage_trials`` (20,000 at full
size); the p95 of the trials numbered in the study's first tenth is compared with that of its
last tenth. With ``storage_fill`` the workers make only those two tenths: the trials between
them are copies of the study's last trial written in bulk by SQL (every column of ``trials``
and of each table keyed by ``trial_id``, whatever the Optuna schema), then ``VACUUM ANALYZE``
as autovacuum would have done, so the tables the last tenth works on are as large as a grown
study's at a fraction of the CPU time. Before each timed phase every worker reads the study's
trials once, untimed: through the proxy, that is when the proxy's and the workers' caches take
in the trials written in bulk, which a study grown by workers would have taken in one by one.

**What each run records** (per trial, over the trials the workers made): ask+tell latency
(p50, p95, overall and per tenth of the study), throughput, the worker's round trips (database
transactions direct, SQLAlchemy's ``begin`` events; gRPC calls through the proxy), the
database's transactions (``pg_stat_database``, both arms: through the proxy, what its cache
leaves to the database), and CPU time: the workers' own (``time.process_time``), the proxy
process's and PostgreSQL's (``/proc/<pid>/stat``: user + system time of the postmaster and
every process under it, reaped ones included; the whole server, so other databases' load in
the same window counts too; ``postgres_backends_cpu_ms_per_trial`` is the bench database's
own backends alone, a lower bound where connections come and go). Server CPU is read only
when PostgreSQL runs on this machine (``None`` otherwise).

Then it counts the storage round trips of one lrsearch trial on the same database
(:mod:`lrsearch.harness.round_trips`: a small study run as ``lrsearch run`` runs it, tracking
off): each is one database transaction, so the count does not depend on load. With the
defaults (digits-mlp, 3 epochs, no pruner) a trial makes 22 (prior-drawn ``max_lr``) or 24
(TPE) of them, Optuna's heartbeat apart:

- ask: look for a queued trial, create the trial, read it back (3);
- ``suggest_params``: one write per sampled parameter (7), and TPE's own read of the trials
  and write of its sample (2, TPE trials only; the prior-drawn ones reuse claim's read);
- ``worker`` (before the budget check, for recovery), claim's read of the trials (the budget,
  shared with the sampler), ``derived`` (before training, for the pruner) (3);
- one report per epoch (3), and whatever the pruner reads (none here);
- ``test_metric`` and ``training`` (``{"device", "seconds"}``) (2);
- tell: Optuna reads the trial, then writes its state and value (2);
- after tell: Optuna reads the trial for the callbacks, and the budget check reads the trials
  (2).

This module stays free of torch: spawned workers import it.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrsearch.harness.bench._config import BenchConfig
from lrsearch.harness.bench._storage_stats import BUCKETS, project, summarize

__all__ = ["run_storage"]

WORKER_TIMEOUT_S = 1800.0
PROXY_START_S = 60.0  # importing lrsearch and Optuna on a loaded 2-core machine takes seconds
SETTLE_S = 0.2  # for the last commits' WAL writes; PostgreSQL's counts may lag up to ~1 s more


def _urls(server: str, database: str) -> tuple[str, str]:
    """``(libpq URL of the server's admin database, SQLAlchemy URL of database)``."""
    parts = urllib.parse.urlsplit(server)
    admin_db = parts.path.strip("/") or "postgres"
    admin = urllib.parse.urlunsplit(("postgresql", parts.netloc, f"/{admin_db}", parts.query, ""))
    bench = urllib.parse.urlunsplit(
        ("postgresql+psycopg", parts.netloc, f"/{database}", parts.query, "")
    )
    return admin, bench


def _counted(storage: Any) -> Callable[[], int]:
    """A function returning how many round trips ``storage`` has made so far.

    An RDBStorage's are its database transactions (SQLAlchemy's ``begin`` events); a gRPC
    proxy client's its calls (its stub, wrapped; Optuna's client cache shares the stub).
    """
    from lrsearch.storage import backend_of

    storage = backend_of(storage)  # the database's engine, or the proxy client's stub
    count = [0]
    engine = getattr(storage, "engine", None)
    if engine is not None:
        from sqlalchemy import event

        event.listen(engine, "begin", lambda *_: count.__setitem__(0, count[0] + 1))
        return lambda: count[0]
    stub = getattr(storage, "_stub", None)
    if stub is None:
        return lambda: 0

    class Counted:
        def __getattr__(self, name: str) -> Any:
            call = getattr(stub, name)

            def counted(*args: Any, **kwargs: Any) -> Any:
                count[0] += 1
                return call(*args, **kwargs)

            return counted

    counted = Counted()
    storage._stub = counted
    cache = getattr(storage, "_cache", None)
    if cache is not None and getattr(cache, "grpc_client", None) is stub:
        cache.grpc_client = counted
    return lambda: count[0]


def _worker(
    url: str, study_name: str, shares: list[int], index: int, steps: list[Any], results: Any
) -> None:
    """One worker process: ask, suggest the lrsearch space, tell; time each round trip.

    For each phase ``k``: on ``steps[2k]`` reads the study's trials once (through the proxy,
    the caches take in the trials written in bulk, as they would have while the study grew)
    and says ``ready``; on ``steps[2k + 1]`` makes its share of trials and puts them on
    ``results``. Exits on the last step.
    """
    import warnings

    import optuna

    from lrsearch.config import SpaceSection
    from lrsearch.prior import LRPrior
    from lrsearch.space import suggest_params
    from lrsearch.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # lrsearch's storage has heartbeats on, for Study.optimize; ask/tell warns about that on
    # every trial. Heartbeats cost nothing here: only optimize's heartbeat thread writes them.
    warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
    storage = open_storage(url)
    round_trips = _counted(storage)
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=index)
    )
    space, prior = SpaceSection(), LRPrior(center=1e-2, sigma_decades=1.0, low=1e-5, high=10.0)
    for phase, n_trials in enumerate(shares):
        if not steps[2 * phase].wait(WORKER_TIMEOUT_S):
            return
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        results.put(("ready", index))
        if not steps[2 * phase + 1].wait(WORKER_TIMEOUT_S):
            return
        rows: list[tuple[int, float, float]] = []
        trips, cpu, start = round_trips(), time.process_time(), time.time()
        for _ in range(n_trials):
            began = time.perf_counter()
            trial = study.ask()
            params = suggest_params(trial, space, prior)
            study.tell(trial, -abs(math.log10(params["max_lr"]) + 1.0))
            rows.append((trial.number, time.perf_counter() - began, time.time()))
        cpu = time.process_time() - cpu
        results.put(("done", index, start, rows, cpu, round_trips() - trips))
    steps[-1].wait(WORKER_TIMEOUT_S)


def _ticks(pid: int) -> tuple[int, int] | None:
    """``(parent pid, CPU ticks of the process and its reaped children)``; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields[i] is stat field i + 3
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


class _Server:
    """The server side's counters: PostgreSQL's and the proxy's CPU time, the transactions."""

    def __init__(self, admin: Any, database: str) -> None:
        self.admin, self.database = admin, database
        self.tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self.postmaster: int | None = None
        self.proxy: int | None = None
        backend = admin.execute("SELECT pg_backend_pid()").fetchone()[0]
        own = _ticks(int(backend))
        # a server on this machine: its backend is a process named postgres under the postmaster
        if own is not None and "postgres" in _cmdline(int(backend)):
            self.postmaster = own[0]

    def snapshot(self) -> dict[str, Any]:
        xacts = self.admin.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (self.database,),
        ).fetchone()
        snap: dict[str, Any] = {"xacts": int(xacts[0]) if xacts else None}
        if self.proxy is not None:
            proxy = _ticks(self.proxy)
            snap["proxy"] = proxy[1] / self.tick if proxy else None
        if self.postmaster is None:
            return snap
        root = _ticks(self.postmaster)
        total = root[1] if root else 0
        backends = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            got = _ticks(int(entry.name))
            if got is None or got[0] != self.postmaster:
                continue
            total += got[1]
            if f" {self.database} " in _cmdline(int(entry.name)):
                backends[int(entry.name)] = got[1] / self.tick
        return snap | {"postgres": total / self.tick, "backends": backends}

    @staticmethod
    def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
        """What the server spent between two snapshots (seconds; transactions)."""

        def delta(key: str) -> float | None:
            a, b = before.get(key), after.get(key)
            return None if a is None or b is None else float(b - a)

        backends = None
        if "backends" in after:
            backends = sum(s - before["backends"].get(p, 0.0) for p, s in after["backends"].items())
        return {
            "postgres_s": delta("postgres"),
            "backends_s": backends,
            "proxy_s": delta("proxy"),
            "xacts": delta("xacts"),
        }


class _Proxy:
    """``python -m lrsearch.cli storage-proxy`` on a free port of 127.0.0.1, in front of ``url``."""

    def __init__(self, url: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed by stop())
        env = {**os.environ, "LRSEARCH_STORAGE": url}  # keeps a password off the command line
        command = [sys.executable, "-m", "lrsearch.cli", "storage-proxy", "--host", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"grpc://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self) -> None:
        """Until the proxy accepts connections. Raises RuntimeError if it exits or never does."""
        deadline = time.monotonic() + PROXY_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the storage proxy exited ({self._said()})")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the storage proxy did not listen within {PROXY_START_S:.0f} s")

    def _said(self) -> str:
        self.log.seek(0)
        lines = [ln.strip() for ln in self.log.read().splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit code {self.process.returncode}"

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; killed if it has not gone in 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def _fill(url: str, study_name: str, count: int) -> None:
    """Append ``count`` copies of the study's last trial, in bulk; then VACUUM ANALYZE."""
    import psycopg
    from psycopg import sql

    libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq, autocommit=True) as conn:
        with conn.transaction():
            found = conn.execute(
                "SELECT s.study_id, t.number, t.trial_id FROM studies s JOIN trials t "
                "USING (study_id) WHERE s.study_name = %s ORDER BY t.number DESC LIMIT 1",
                (study_name,),
            ).fetchone()
            if found is None:
                raise RuntimeError(f"study {study_name!r} has no trial to copy")
            study_id, last, template = found

            def columns(table: str, *leave_out: str) -> list[sql.Identifier]:
                rows = conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "AND table_schema = current_schema() AND is_identity = 'NO' "
                    "AND coalesce(column_default, '') NOT LIKE 'nextval(%%' "
                    "ORDER BY ordinal_position",
                    (table,),
                ).fetchall()
                return [sql.Identifier(r[0]) for r in rows if r[0] not in leave_out]

            cols = sql.SQL(", ").join(columns("trials", "trial_id", "number"))
            conn.execute(
                sql.SQL(
                    "INSERT INTO trials (number, {c}) SELECT %s + g, {c} FROM trials "
                    "CROSS JOIN generate_series(1, %s) AS g WHERE trial_id = %s ORDER BY g"
                ).format(c=cols),
                (last, count, template),
            )
            children = conn.execute(
                "SELECT table_name FROM information_schema.columns WHERE column_name = "
                "'trial_id' AND table_name <> 'trials' AND table_schema = current_schema()"
            ).fetchall()
            for (table,) in children:
                rest = columns(table, "trial_id")
                if not rest:
                    continue
                cols = sql.SQL(", ").join(rest)
                own = sql.SQL(", ").join(sql.SQL("c.") + c for c in rest)
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {t} (trial_id, {c}) SELECT n.trial_id, {o} FROM trials n "
                        "JOIN {t} c ON c.trial_id = %s WHERE n.study_id = %s AND n.number > %s"
                    ).format(t=sql.Identifier(table), c=cols, o=own),
                    (template, study_id, last),
                )
        conn.execute("VACUUM ANALYZE")


def _collect(results: Any, procs: list[Any], kind: str) -> list[tuple[Any, ...]]:
    """One ``kind`` message from every worker; RuntimeError if one dies first."""
    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while len(got) < len(procs):
        try:
            message = results.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a storage worker died (exit code {dead[0]})") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"storage workers silent for {WORKER_TIMEOUT_S:.0f} s") from None
            continue
        if message[0] == kind:
            got.append(message)
    return got


def _grow(
    url: str,
    name: str,
    workers: int,
    n_trials: int,
    *,
    fill: str | None,
    server: _Server,
    arm: str,
) -> dict[str, Any]:
    """Grow one study with ``workers`` processes; latency, throughput and costs as it grows.

    ``fill``: the database's URL; the workers make the first and the last tenth, and
    :func:`_fill` the rest on that database. None: the workers make every trial.
    """
    tenth = max(1, n_trials // BUCKETS)
    phases = [tenth, tenth] if fill and n_trials > 2 * tenth else [n_trials]
    filled = n_trials - sum(phases)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    steps = [ctx.Event() for _ in range(2 * len(phases) + 1)]
    shares = [[n // workers + (i < n % workers) for n in phases] for i in range(workers)]
    procs = [
        ctx.Process(target=_worker, args=(url, name, shares[i], i, steps, results), daemon=True)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    rows: list[tuple[int, float, float]] = []
    spans, cpu, trips = [], 0.0, 0
    spent: dict[str, float | None] = {}
    costs = []  # per phase: with a fill, the first tenth's and the last tenth's
    try:
        for phase in range(len(phases)):
            steps[2 * phase].set()
            _collect(results, procs, "ready")
            before = server.snapshot()
            steps[2 * phase + 1].set()
            got = _collect(results, procs, "done")
            time.sleep(SETTLE_S)
            used = _Server.spent(before, server.snapshot())
            spent = {k: _add(spent.get(k, 0.0), v) for k, v in used.items()}
            start = min(g[2] for g in got)
            phase_rows = [r for g in got for r in g[3]]
            spans.append(max((r[2] for r in phase_rows), default=start) - start)
            rows += phase_rows
            n = max(1, len(phase_rows))
            costs.append(
                {
                    "timed": len(phase_rows),
                    "client_cpu_ms_per_trial": sum(g[4] for g in got) * 1000.0 / n,
                    "postgres_cpu_ms_per_trial": _per(used["postgres_s"], 1000.0 / n),
                    "proxy_cpu_ms_per_trial": _per(used["proxy_s"], 1000.0 / n),
                }
            )
            cpu += sum(g[4] for g in got)
            trips += sum(g[5] for g in got)
            if phase == 0 and fill and filled:
                _fill(fill, name, filled)
        steps[-1].set()
    except BaseException:  # Ctrl-C, a worker gone: the others stop now, not after their share
        for p in procs:
            p.kill()
        raise
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    out = summarize(rows, sum(spans), workers, n_trials)
    timed = max(1, len(rows))
    per_trial = {
        "client_cpu_ms_per_trial": cpu * 1000.0 / timed,
        "postgres_cpu_ms_per_trial": _per(spent.get("postgres_s"), 1000.0 / timed),
        "postgres_backends_cpu_ms_per_trial": _per(spent.get("backends_s"), 1000.0 / timed),
        "proxy_cpu_ms_per_trial": _per(spent.get("proxy_s"), 1000.0 / timed)
        if arm == "proxy"
        else None,
        "round_trips_per_trial": trips / timed,
        "db_transactions_per_trial": _per(spent.get("xacts"), 1.0 / timed),
    }
    return {"arm": arm, **out, "timed": len(rows), "filled": filled, **per_trial, "phases": costs}


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _per(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _round_trips(url: str) -> dict[str, Any]:
    """Storage round trips per lrsearch trial on ``url``: the most any trial made, and why."""
    from lrsearch.harness.round_trips import MAX_PER_TRIAL, WORKLOAD, measure

    trials = measure(url, workload=WORKLOAD)
    worst = max(trials, key=lambda t: t.total)
    return {
        "workload": WORKLOAD,
        "per_trial": worst.total,
        "max_per_trial": MAX_PER_TRIAL,
        "trials": [t.total for t in trials],
        "by_purpose": worst.by_purpose(),
    }


def run_storage(config: BenchConfig, advance: Callable[[], None]) -> dict[str, Any]:
    """Every worker count of ``storage_workers``, direct and through the proxy.

    ``{"skipped": why}`` without a server; ``proxy_skipped`` says why the proxy arm is missing
    when its proxy would not start.
    """
    import optuna
    import psycopg
    from psycopg import sql

    from lrsearch.storage import open_rdb_storage, redact

    database = f"lrsearch_bench_{uuid.uuid4().hex[:12]}"
    admin_url, url = _urls(config.postgres, database)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"skipped": f"PostgreSQL at {redact(config.postgres)} is unreachable ({reason})"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    proxy: _Proxy | None = None
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        server = _Server(admin, database)
        storage = open_rdb_storage(url)
        arms = ["direct"]
        if config.storage_proxy:
            storage.engine.dispose()  # the schema exists: the proxy only opens it
            proxy = _Proxy(url)
            try:
                proxy.wait_ready()
                server.proxy = proxy.pid
                arms.append("proxy")
            except RuntimeError as exc:
                extra["proxy_skipped"] = str(exc)
        for workers in config.storage_workers:
            trials = config.storage_trials_for(workers)
            fill = url if config.storage_fill and workers == max(config.storage_workers) else None
            for arm in arms:
                name = f"{arm}-workers-{workers}"
                optuna.create_study(study_name=name, storage=storage, direction="maximize")
                storage.engine.dispose()  # the workers' connections only, while they run
                target = proxy.url if arm == "proxy" and proxy is not None else url
                runs.append(_grow(target, name, workers, trials, fill=fill, server=server, arm=arm))
            advance()
        if proxy is not None:
            proxy.stop()
            proxy = None
        round_trips = _round_trips(url)
    finally:
        if proxy is not None:
            proxy.stop()
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        admin.close()
    return {
        "server": redact(config.postgres),
        "sampler": "RandomSampler",
        "server_cpu": server.postmaster is not None,
        **extra,
        "runs": runs,
        "projection": project(runs, os.cpu_count()),
        "round_trips": round_trips,
    }
