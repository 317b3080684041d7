"""docker/k8s/workers.yaml: a valid Kubernetes Indexed Job that runs lrsearch workers safely.

Schema-checked offline (kubernetes-validate's bundled schemas, strict: no unknown fields), and
the rules the schema cannot express checked here: the failure policy that retries a preempted
pod without counting it, the storage URL from a Secret, a command the real CLI parses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lrsearch.errors import ConfigError, WorkloadError
from tests.test_docker import _check_against_cli, _documented_commands

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "docker" / "k8s" / "workers.yaml"


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


def _worker(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = [
        c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"
    ]
    return container


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_manifest_validates_against_the_kubernetes_schema(job, version) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(job, version, strict=True)
    broken = {**job, "spec": {**job["spec"], "completionMod": "Indexed"}}  # the check bites
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_indexed_job_retries_preempted_pods_without_counting_them(job) -> None:
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    rules = spec["podFailurePolicy"]["rules"]
    ignore = [r for r in rules if r["action"] == "Ignore"]
    assert [c["type"] for r in ignore for c in r["onPodConditions"]] == ["DisruptionTarget"]
    (fail,) = [r for r in rules if r["action"] == "FailIndex"]
    # a misconfigured worker or a broken workload fails its index at once: a retry cannot help
    assert fail["onExitCodes"]["containerName"] == _worker(job)["name"]
    assert fail["onExitCodes"]["operator"] == "In"
    assert sorted(fail["onExitCodes"]["values"]) == [ConfigError.exit_code, WorkloadError.exit_code]


def test_each_worker_asks_for_a_gpu_and_runs_on_it(job) -> None:
    worker = _worker(job)
    assert worker["resources"]["limits"]["nvidia.com/gpu"] >= 1
    args = worker["args"]
    assert args[args.index("--devices") + 1] == "auto"


def test_command_parses_with_the_real_cli(job) -> None:
    _check_against_cli(_worker(job)["args"], str(MANIFEST))


def test_storage_url_comes_from_a_secret_never_inline(job) -> None:
    env = {e["name"]: e for e in _worker(job)["env"]}
    assert env["LRSEARCH_STORAGE"]["valueFrom"]["secretKeyRef"]["name"]
    assert "value" not in env["LRSEARCH_STORAGE"]
    assert "value" not in env["LRSEARCH_TRACKING_URI"]
    text = yaml.safe_dump(job["spec"])  # comments are not in the object: nothing URL-like is
    assert not re.search(r"(postgresql|grpc|mysql)(\+\w+)?://", text)


def test_launcher_tag_references_only_earlier_variables(job) -> None:
    """Kubernetes expands $(VAR) only from variables defined before it in the list."""
    names = [e["name"] for e in _worker(job)["env"]]
    launcher = next(e for e in _worker(job)["env"] if e["name"] == "LRSEARCH_LAUNCHER")
    used = re.findall(r"\$\((\w+)\)", launcher["value"])
    assert used and all(names.index(u) < names.index("LRSEARCH_LAUNCHER") for u in used)


def test_pod_runs_as_the_image_user(job) -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+)", dockerfile).group(1))
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_commands_in_the_cluster_doc_exist_in_the_cli() -> None:
    """Every ``lrsearch`` line of docs/cluster.md's bash blocks parses with the real CLI."""
    commands = _documented_commands((ROOT / "docs" / "cluster.md").read_text(), set())
    assert {args[0] for args in commands} >= {"run", "ray-workers", "slurm-workers", "worker"}
    for args in commands:
        _check_against_cli(args, "docs/cluster.md")


def test_checkpoints_go_to_a_volume_every_pod_mounts(job) -> None:
    """A preempted pod's trial resumes on another pod: its checkpoints must be shared."""
    worker = _worker(job)
    env = {e["name"]: e.get("value") for e in worker["env"]}
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert env["LRSEARCH_CHECKPOINT_DIR"] == mounts["checkpoints"]
    assert "persistentVolumeClaim" in volumes["checkpoints"]  # not a pod's own emptyDir
