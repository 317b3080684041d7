"""Bad input, table-driven: one line naming what is wrong and the fix, a non-zero exit, no
traceback, and nothing already recorded in the storage or in MLflow is changed."""

from __future__ import annotations

import hashlib
import json
import string

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrsearch.cli import cli
from lrsearch.errors import LrsearchError

# Every trial trains (no bracketing probe a decade out, which may diverge and be pruned): the
# tests built on this study count complete trials and FINISHED runs.
STUDY = """
[study]
name = "{name}"
workload = "tests.tiny_workloads:blobs"
n_trials = 2
epochs = 2
[range_test]
repeats = 1
num_iter = 40
[prior]
startup = "prior"
"""


def _invoke(args, env):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={}, env=env)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A home with a finished study "base" (Optuna storage + MLflow store)."""
    home = tmp_path_factory.mktemp("home")
    (home / "base.toml").write_text(STUDY.format(name="base"))
    env = {"LRSEARCH_HOME": str(home), "LRSEARCH_ALLOW_WORKLOAD": ""}
    result = _invoke(["run", home / "base.toml", "--devices", "cpu"], env)
    assert result.exit_code == 0, result.output
    return home, env


def _fingerprint(home) -> tuple[str, str]:
    """What is recorded: the Optuna journal's bytes, and the MLflow store's bytes."""
    optuna_state = hashlib.sha256((home / "optuna.journal").read_bytes()).hexdigest()
    mlflow_state = hashlib.sha256((home / "mlflow.db").read_bytes()).hexdigest()
    return optuna_state, mlflow_state


def _changed_file(home, **study):
    text = STUDY.format(name=study.get("name", "base")).replace("epochs = 2", "epochs = 3")
    (home / "changed.toml").write_text(text)
    return home / "changed.toml"


CASES = [
    # (id, args builder, expected text)
    ("missing-file", lambda h: ["run", h / "nope.toml"], "no such study file"),
    ("changed-config", lambda h: ["run", _changed_file(h)], "different config"),
    (
        "storage-refused",
        lambda h: ["run", h / "base.toml", "--storage", "postgresql://postgres@127.0.0.1:1/x"],
        "cannot open storage",
    ),
    (
        "storage-bad-role",
        lambda h: [
            "run",
            h / "base.toml",
            "--storage",
            "postgresql://nobody:hunter2@127.0.0.1:5432/postgres",
        ],
        "cannot open storage",
    ),
    (
        "storage-scheme",
        lambda h: ["run", h / "base.toml", "--storage", "mongodb://db/x"],
        "unsupported storage URL",
    ),
    (
        "mlflow-unreachable",
        lambda h: ["run", h / "base.toml", "--tracking-uri", "http://127.0.0.1:9"],
        "unreachable",
    ),
    (
        "gpu-missing",
        lambda h: ["run", h / "base.toml", "--devices", "cuda:3"],
        "cuda:3 is not available",
    ),
    ("devices-garbage", lambda h: ["run", h / "base.toml", "--devices", "tpu"], "--devices"),
    (
        "trials-per-device",
        lambda h: ["run", h / "base.toml", "--trials-per-device", "0"],
        "--trials-per-device",
    ),
    ("n-trials-zero", lambda h: ["run", h / "base.toml", "--n-trials", "0"], "--n-trials"),
    ("timeout-negative", lambda h: ["run", h / "base.toml", "--timeout", "-5"], "--timeout"),
    ("status-ghost", lambda h: ["status", "--study", "ghost"], "no study named 'ghost'"),
    ("best-ghost", lambda h: ["best", "--study", "ghost"], "no study named 'ghost'"),
    (
        "worker-ghost",
        lambda h: ["worker", "--study", "ghost", "--devices", "cpu"],
        "no study named 'ghost'",
    ),
    (
        "worker-untrusted",
        lambda h: ["worker", "--study", "base", "--devices", "cpu"],
        "does not trust",
    ),
    ("worker-gpu", lambda h: ["worker", "--study", "base", "--devices", "cuda:0"], "not available"),
    ("ui-ghost", lambda h: ["ui", "--study", "ghost", "--dry-run"], "no study named 'ghost'"),
    ("train-from-ghost", lambda h: ["train", "--from-study", "ghost"], "no study named 'ghost'"),
    ("train-raises", lambda h: ["train", "-w", "tests.tiny_workloads:raises"], "boom in user code"),
    (
        "train-wrong-type",
        lambda h: ["train", "-w", "tests.tiny_workloads:not_a_workload"],
        "expected lrsearch.Workload",
    ),
    (
        "train-bad-import",
        lambda h: ["train", "-w", "no_such_pkg.mod:fn"],
        "importing 'no_such_pkg.mod' failed",
    ),
    ("train-epochs", lambda h: ["train", "-w", "digits-mlp", "--epochs", "0"], "--epochs"),
    (
        "range-test-unknown",
        lambda h: ["range-test", "-w", "resnet", "--out", h / "rt"],
        "unknown workload 'resnet'",
    ),
    (
        "range-test-lrs",
        lambda h: [
            "range-test",
            "-w",
            "digits-mlp",
            "--start-lr",
            "1",
            "--end-lr",
            "0.5",
            "--out",
            h / "rt",
        ],
        "--start-lr",
    ),
    ("validate-missing", lambda h: ["validate", h / "missing.toml"], "no such study file"),
]


@pytest.mark.parametrize(("build", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_changes_nothing(recorded, build, needle) -> None:
    home, env = recorded
    before = _fingerprint(home)
    result = _invoke(build(home), env)
    out = result.output.strip()
    assert result.exit_code != 0, out
    assert needle in out, out
    assert len(out.splitlines()) == 1 and out.startswith("error: ")
    assert "Traceback" not in out and "hunter2" not in out
    assert _fingerprint(home) == before


def test_debug_shows_the_traceback(recorded) -> None:
    _home, env = recorded
    result = CliRunner().invoke(cli, ["--debug", "status", "--study", "ghost"], obj={}, env=env)
    # The error itself escapes (so a traceback is printed), not the one-line exit.
    assert isinstance(result.exception, LrsearchError), result.exception


_value = st.one_of(
    st.integers(-5, 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(string.ascii_letters + "-_:.", max_size=12),
    st.booleans(),
    st.lists(st.integers(-3, 3), max_size=3),
)
_field = st.sampled_from(
    [
        "name",
        "workload",
        "n_trials",
        "epochs",
        "batch_size",
        "timeout",
        "seed",
        "repeats",
        "start_lr",
        "div_factor",
        "patience",
        "bogus",
    ]
)


def _toml(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    study=st.dictionaries(_field, _value, max_size=6),
    section=st.sampled_from(["study", "range_test", "space", "pruner", "prior"]),
    extra=st.dictionaries(_field, _value, max_size=3),
)
def test_generated_study_files_never_crash(tmp_path, study, section, extra) -> None:
    text = "[study]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in study.items())
    if section != "study":
        text += f"[{section}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in extra.items())
    f = tmp_path / "gen.toml"
    f.write_text(text)
    result = CliRunner().invoke(cli, ["validate", str(f)], obj={})
    out = result.output.strip()
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    if result.exit_code != 0:
        assert len(out.splitlines()) == 1 and out.startswith("error: ") and "Traceback" not in out
