"""The layer rules of DESIGN.md, checked on the source: what each module may import.

Function-level imports count too: a lazy import still ties the layers together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lrsearch

PKG = Path(lrsearch.__file__).parent

FORBIDDEN = {
    "schedules.py": {"torch", "optuna", "mlflow", "click"},
    "prior.py": {"torch", "optuna", "mlflow", "click"},
    "suggest.py": {"torch", "optuna", "mlflow", "click"},
    "torch_schedule.py": {"optuna", "mlflow", "click"},
    "training.py": {"optuna", "mlflow", "click"},
    "range_test.py": {"optuna", "mlflow", "click"},
    "workloads": {"optuna", "mlflow", "click"},
    "tracking.py": {"optuna", "torch", "click"},
    "space.py": {"click", "mlflow"},
    "pruning.py": {"click", "mlflow", "torch"},
    "sampler.py": {"click", "mlflow", "torch"},
    "study.py": {"click", "mlflow"},
    "config.py": {"click", "torch", "optuna", "mlflow"},
    "workers.py": {"click"},
    "supervisor.py": {"click"},
    "devices.py": {"click", "optuna", "mlflow"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
            if node.module.startswith("lrsearch.cli"):
                names.add("lrsearch.cli")
    return names


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_module_respects_its_layer(name: str) -> None:
    target = PKG / name
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    for path in files:
        used = _imports(path)
        bad = used & (FORBIDDEN[name] | {"lrsearch.cli"})
        assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


def test_public_surface_is_pinned() -> None:
    assert set(lrsearch.__all__) == {
        "ConfigError",
        "Constant",
        "Cyclic",
        "ExpRamp",
        "LRPrior",
        "LinearRamp",
        "LrsearchError",
        "OneCycle",
        "PlateauDecay",
        "Schedule",
        "ScheduleDriver",
        "StorageError",
        "TrackingError",
        "TrainResult",
        "Workload",
        "WorkloadError",
        "__version__",
        "get_workload",
        "schedule_from_dict",
        "train",
    }
    for name in lrsearch.__all__:
        assert getattr(lrsearch, name) is not None
