"""``lrsearch storage-proxy``: Optuna's gRPC storage proxy in front of the study database."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import click

from lrsearch.cli._common import cli
from lrsearch.errors import StorageError

_ANY = ("0.0.0.0", "::", "")


@cli.command("storage-proxy")
@click.option(
    "--storage",
    envvar="LRSEARCH_STORAGE",
    default=None,
    help="The database to serve: postgresql://..., mysql://... or sqlite:///path "
    "(default: $LRSEARCH_STORAGE, which keeps the password off the command line).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 for workers on other hosts.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=13000, show_default=True, help="Port."
)
def storage_proxy(storage: str | None, host: str, port: int) -> None:
    """Serve a study database to workers through Optuna's gRPC storage proxy.

    Workers then use --storage grpc://HOST:PORT: many workers (or hosts) share the proxy's few
    database connections instead of opening their own. Ctrl-C stops it.
    """
    import optuna

    from lrsearch.storage import redact, served_storage

    if not storage:
        raise click.UsageError("no database to serve: pass --storage URL or set $LRSEARCH_STORAGE")
    served = served_storage(storage)  # Optuna's cache in front
    _check_free(host, port)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the line below says where it listens
    reach = socket.gethostname() if host in _ANY else host
    click.echo(
        f"storage proxy for {redact(storage)} listening on {host}:{port}; "
        f"workers: --storage grpc://{reach}:{port}"
    )
    pool = ThreadPoolExecutor(max_workers=10, thread_name_prefix="lrsearch-proxy")
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.run_grpc_proxy_server(
                    served, host=host, port=port, thread_pool=pool
                )
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)

    # The server waits in its own thread; the main thread sleeps, where Ctrl-C always lands at
    # once (a wait inside gRPC's C core could hold it off now and then).
    server = threading.Thread(target=serve, name="lrsearch-proxy-server", daemon=True)
    server.start()
    try:
        while server.is_alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        click.echo("storage proxy stopped")
        sys.stdout.flush()
        # the proxy holds no state of its own (every call is a committed transaction of the
        # database), and gRPC's threads can keep the interpreter from exiting: leave at once
        os._exit(0)
    if failed:
        raise StorageError(f"storage proxy stopped: {failed[0]}")


def _check_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (gRPC would share it, SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no listener
            probe.bind((host, port))
    except OSError as exc:
        raise StorageError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host"
        ) from None
