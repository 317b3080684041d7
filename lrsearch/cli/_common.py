"""The ``lrsearch`` group, its one place for errors, and helpers the commands share."""

from __future__ import annotations

import os
import re
from typing import Any

import click

from lrsearch.errors import ConfigError, LrsearchError


class LrsearchGroup(click.Group):
    """A click group that turns expected errors into one line on stderr and an exit code.

    :class:`LrsearchError` and click's usage errors (bad option values) both end here, so
    every command fails the same way: ``error: <what is wrong and how to fix it>``.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LrsearchError as exc:
            if _debug(ctx):
                raise
            from lrsearch.tracking import scrub  # messages redact at their source; once more

            click.echo(f"error: {scrub(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:
            if _debug(ctx):
                raise
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            ctx.exit(exc.exit_code)
        except (KeyboardInterrupt, Exception) as exc:
            # An error raised while a library cleaned up after Ctrl-C is the interrupt too.
            if _debug(ctx) or not _caused_by_interrupt(exc):
                raise
            click.echo(
                "error: interrupted; what was recorded is kept: run the same command again "
                "to resume",
                err=True,
            )
            ctx.exit(130)


def _debug(ctx: click.Context) -> bool:
    """Whether ``--debug`` was given: read when an error arrives, because the group's callback
    (which stores the flag) runs inside ``invoke``, after it has begun."""
    return bool((ctx.obj or {}).get("debug"))


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C or was raised while handling it (its context chain)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__context__
    return False


@click.group(cls=LrsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    envvar="LRSEARCH_THREADS",
    default=None,
    help="CPU threads per training process ($LRSEARCH_THREADS). Default: 1 for train and "
    "range-test and for CPU study workers (small models train fastest on one thread).",
)
@click.version_option(package_name="lrsearch")
@click.pass_context
def cli(ctx: click.Context, debug: bool, threads: int | None) -> None:
    """lrsearch: find learning-rate policies that train fast and well."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if threads is not None:
        os.environ["LRSEARCH_THREADS"] = str(threads)  # inherited by worker processes


def set_threads(default: int = 1) -> None:
    """Pin torch's CPU threads: ``--threads``/``$LRSEARCH_THREADS``, else ``default``."""
    import torch

    torch.set_num_threads(int(os.environ.get("LRSEARCH_THREADS", default)))


def positive(name: str) -> Any:
    """A click callback refusing values <= 0 for option ``--name``."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and value <= 0:
            raise click.BadParameter(f"must be > 0, got {value}", param_hint=f"--{name}")
        return value

    return check


def workload_option(f: Any) -> Any:
    """``--workload/-w``: a built-in name or an import path."""
    return click.option(
        "--workload",
        "-w",
        default="mnist1d-cnn",
        show_default=True,
        help="Built-in workload name or 'package.module:function'.",
    )(f)


def allow_workload_option(f: Any) -> Any:
    """``--allow-workload PATTERN``: import paths a study's storage may name (see README's
    "Trust model")."""
    return click.option(
        "--allow-workload",
        "allow_workloads",
        multiple=True,
        metavar="PATTERN",
        help="Trust workload import paths matching PATTERN (fnmatch, e.g. 'mypkg.*') when the "
        "study's storage names them; built-ins and installed entry points are always allowed.",
    )(f)


def device_option(f: Any) -> Any:
    """``--device``: where one training or range test runs."""
    return click.option("--device", default="cpu", show_default=True, help="'cpu' or 'cuda:N'.")(f)


def check_device(device: str) -> str:
    """Refuse a device that is not there, in one line."""
    import torch

    if device == "cpu":
        return device
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise ConfigError(f"--device: unknown device {device!r}; use 'cpu' or 'cuda:N'")
    index = int(match.group(1) or 0)
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not 0 <= index < available:
        raise ConfigError(
            f"--device: {device!r} is not available (this host has {available} CUDA device(s)); "
            "use 'cpu' or a listed GPU"
        )
    return device


def progress(*, quiet: bool) -> Any:
    """A rich progress bar on an interactive stderr; silent otherwise."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=True,
    )
