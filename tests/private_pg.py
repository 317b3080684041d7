"""A PostgreSQL cluster of a test's own (``initdb`` + ``pg_ctl`` on a free port), to stop at will.

The shared server on 127.0.0.1:5432 must never be stopped by a test; the outage tests stop and
restart this one. ``initdb`` refuses to run as root: as root, the cluster runs as the
``postgres`` user (``runuser``). Where neither the binaries nor a way to run them exist, the
test is skipped with the reason, or fails under ``LRSEARCH_REQUIRE_POSTGRES=1`` (CI's
distributed stage, where a skipped PostgreSQL test would hide a broken setup).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE_ENV = "LRSEARCH_REQUIRE_POSTGRES"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it where PostgreSQL is required (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: PostgreSQL tests must run here)", pytrace=False)
    pytest.skip(reason)


def _binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (PATH first, then Debian's place)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(bin_dir) / "initdb").exists():
            return Path(bin_dir)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """One PostgreSQL cluster in a temporary directory, on a free port, trust auth."""

    def __init__(self) -> None:
        bin_dir = _binaries()
        if bin_dir is None:
            unavailable("initdb/pg_ctl not found (install the PostgreSQL server package)")
        self.bin = bin_dir
        self.user: str | None = None
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
            try:
                self.user = pwd.getpwnam("postgres").pw_name
            except KeyError:
                unavailable("running as root and there is no 'postgres' user to run initdb as")
        self.root = Path(tempfile.mkdtemp(prefix="lrsearch-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if self.user is not None:
            shutil.chown(self.root, user=self.user)
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _pg(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=60, cwd=self.root
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.root / "log")
        self._pg("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop now (``-m fast``: open connections are cut, as in a database restart)."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"{self.url}/postgres", autocommit=True, connect_timeout=5) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def private_pg():
    """A running private cluster for the session; the tests that stop it start it again."""
    try:
        cluster = PrivateCluster()
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"cannot start a private PostgreSQL cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.remove()
