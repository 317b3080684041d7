"""Doctest collection over lrsearch/ (``--doctest-modules``): a launcher module whose engine is
not installed (the ``ray`` and ``slurm`` extras) cannot be imported, so it is not collected."""

from __future__ import annotations

import importlib.util

collect_ignore = [
    f"lrsearch/launchers/{module}.py"
    for module, package in (("ray", "ray"), ("slurm", "submitit"))
    if importlib.util.find_spec(package) is None
]
