"""The layer rules of DESIGN.md, checked on the source: what each module may import.

Function-level and type-checking imports count too: a lazy import still ties the layers
together. Two rules: third-party packages a layer must not know (torch below the search, MLflow
outside tracking, click outside the surface), and lrsearch's own modules: a module imports only
from its own layer or the layers above it in DESIGN.md's table, so nothing in the core imports
the surface or the harness.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lrsearch

PKG = Path(lrsearch.__file__).parent

# DESIGN.md's layers, top (imports nothing of lrsearch's below it) to bottom.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "schedule math",
        {"errors", "interrupt", "defaults", "paths", "schedules", "_schedule_math", "policies"},
    ),
    ("prior math", {"prior", "suggest", "config"}),
    (
        "torch parts",
        {
            "torch_schedule",
            "workloads",
            "training",
            "train_step",
            "range_test",
            "lrfree",
            "checkpoints",
        },
    ),
    ("drawing", {"plots"}),
    ("tracking", {"tracking"}),
    ("trainers", {"trainers", "integrations"}),
    (
        "search",
        {
            "storage",
            "journal",
            "retrying",
            "heartbeat",
            "study",
            "objective",
            "space",
            "sampler",
            "pruning",
            "branching",
            "reporting",
            "export",
            "trials",
        },
    ),
    ("execution", {"workers", "supervisor", "devices", "recording", "progress", "launchers"}),
    ("surface", {"cli", "harness"}),
]
LAYER_OF = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}

FORBIDDEN = {
    "schedule math": {"torch", "optuna", "mlflow", "click"},
    "prior math": {"torch", "optuna", "mlflow", "click"},
    "torch parts": {"optuna", "mlflow", "click"},
    "drawing": {"optuna", "mlflow", "click", "torch"},
    "tracking": {"optuna", "torch", "click"},
    "trainers": {"optuna", "mlflow", "click"},
    "search": {"click", "mlflow"},
    "execution": {"click", "mlflow"},
}


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


def _top(path: Path) -> str:
    """The lrsearch module a file belongs to: ``tracking`` for ``tracking/_base.py``."""
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Third-party top-level packages and lrsearch modules a file imports."""
    outside: set[str] = set()
    inside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "lrsearch":
                names = [f"lrsearch.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "lrsearch" and len(parts) > 1:
                inside.add(parts[1])
            elif parts[0] != "lrsearch":
                outside.add(parts[0])
    return outside, inside


def test_every_module_has_a_layer() -> None:
    unplaced = {_top(p) for p in _modules()} - set(LAYER_OF)
    assert not unplaced, f"place these in LAYERS (and DESIGN.md): {sorted(unplaced)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_respects_its_layer(path: Path) -> None:
    own = LAYER_OF[_top(path)]
    layer = LAYERS[own][0]
    outside, inside = _imports(path)
    bad = outside & FORBIDDEN.get(layer, set())
    assert not bad, f"{layer} module imports {sorted(bad)}"
    below = {m for m in inside if LAYER_OF.get(m, own) > own}
    assert not below, (
        f"{layer} module imports {sorted(below)} from lower layers "
        f"({sorted({LAYERS[LAYER_OF[m]][0] for m in below})})"
    )


def test_no_private_names_across_modules() -> None:
    """Modules use each other's public names only (a private name stays in its module)."""
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lrsearch"):
                parts = (node.module or "").split(".")
                own_package = len(parts) > 1 and parts[1] == _top(path)
                for alias in node.names:
                    if alias.name.startswith("_") and not own_package:
                        offenders.append(f"{path.relative_to(PKG)}: {node.module}.{alias.name}")
    assert not offenders


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
        "TrialContext",
        "Workload",
        "WorkloadError",
        "__version__",
        "get_workload",
        "schedule_from_dict",
        "train",
    }
    for name in lrsearch.__all__:
        assert getattr(lrsearch, name) is not None


# --- no import cycles between lrsearch's modules -------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _providing(name: str) -> str | None:
    """The lrsearch module a dotted import name lands in (a submodule, else its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:``: never executed, so they cannot make a cycle."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }


def _edges(module: str, path: Path) -> set[str]:
    """lrsearch modules ``module`` imports, at module or function level."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                names.append(sub if sub in MODULES else base)
    found = {_providing(n) for n in names if n.startswith("lrsearch")}
    return {m for m in found if m is not None and m != module}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = {stack.pop()}
            while v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# Known cycles, to be removed (issue 23); delete an entry when its cycle is gone.
KNOWN_CYCLES: list[set[str]] = []


def test_the_cycle_finder() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules() -> None:
    """Function-level imports count: a lazy import still makes two modules one concept."""
    graph = {module: _edges(module, path) for module, path in MODULES.items()}
    cycles = _cycles(graph)
    new = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not new, f"import cycles: {new}"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"these cycles are gone: delete them from KNOWN_CYCLES: {gone}"
    assert "lrsearch.policies" not in graph["lrsearch.schedules"]
