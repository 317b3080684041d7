"""Places lrsearch writes to, checked before anything long starts.

A read-only or missing directory otherwise shows up late (after the range test, or after
minutes of MLflow retrying to create its database) and as a traceback. The check tries what
the write will do (create the directory, create a file in it, open an existing file for
appending), so it holds for a read-only mount, an immutable file, a path under a regular
file, and for root, whom permission bits do not stop.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lrsearch.errors import LrsearchError

__all__ = ["check_writable"]


def check_writable(
    directory: Path,
    *,
    what: str,
    fix: str,
    files: tuple[str, ...] = (),
    error: type[LrsearchError] = LrsearchError,
) -> None:
    """Create ``directory`` if needed and check that lrsearch can write there.

    Args:
        directory: where the writes go.
        what: what is written there, for the message (e.g. ``"the study storage"``).
        fix: how to fix it, for the message (e.g. ``"set LRSEARCH_HOME to a writable
            directory"``).
        files: names in ``directory`` that, where they exist, must open for appending.
        error: the error to raise.

    Raises:
        LrsearchError: (``error``) one line naming the path and the fix.
    """
    target = directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        for name in files:
            target = directory / name
            if target.exists():
                with open(target, "ab"):
                    pass
    except OSError as exc:
        where = str(target)  # the directory, or the file that would not open
        if isinstance(exc, FileNotFoundError | NotADirectoryError | FileExistsError):
            where = _blocker(directory)
        why = exc.strerror or type(exc).__name__
        raise error(f"cannot write {what} at {where} ({why}); {fix}") from None


def _blocker(directory: Path) -> str:
    """The deepest path on the way to ``directory`` that exists (what stops its creation)."""
    for parent in [directory, *directory.parents]:
        if os.path.lexists(parent):
            return str(parent)
    return str(directory)
