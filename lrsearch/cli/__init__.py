"""The ``lrsearch`` command line: thin wrappers over the library.

Errors lrsearch raises on purpose (:class:`~lrsearch.errors.LrsearchError`) and bad option
values become one line on stderr and a non-zero exit in one place (``_common.LrsearchGroup``);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import signal

from lrsearch.cli import _bench, _calibrate, _launch, _proxy, _study, _train  # noqa: F401  (registers the commands)
from lrsearch.cli._common import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        cli(obj={}, prog_name="lrsearch")
    finally:
        # The command has ended and said so; a Ctrl-C while the interpreter shuts down has
        # nothing left to stop and would only kill it silently (exit -2) in its exit hooks.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
