"""`make gpu-check` (lrsearch.harness.gpu_check): its no-GPU refusal and its report renderer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch

from lrsearch.harness import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA: the refusal cannot show")
def test_without_cuda_it_refuses_in_one_line_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [sys.executable, "-m", "lrsearch.harness.gpu_check", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [gpu_check.NO_GPU]
    assert proc.stdout == ""
    assert not out.exists()


def _run(per_device: int, **changes: object) -> dict[str, object]:
    run: dict[str, object] = {
        "trials_per_device": per_device,
        "command": f"lrsearch run $TMP/s.toml --devices auto --trials-per-device {per_device}",
        "rc": 0,
        "stderr_tail": "",
        "finished": 8,
        "wall_s": 480.0,
        "trials_per_hour": 60.0,
        "util_mean": 71.4,
        "util_peak": 99.0,
        "mem_peak_mib": 6144.0,
        "proc_mem_peak_mib": 3000.0,
    }
    run.update(changes)
    return run


def _measurement(runs: list[dict[str, object]]) -> dict[str, object]:
    return {
        "command": "python -m lrsearch.harness.gpu_check --trials 8",
        "date": "2026-01-01",
        "machine": {
            "gpu": "NVIDIA H200",
            "gpus": "1",
            "driver": "570.1",
            "torch": "2.13.0",
            "cuda": "12.8",
            "python": "3.12.0",
            "os": "Linux",
        },
        "workload_options": gpu_check.WORKLOAD_OPTIONS,
        "epochs": 4,
        "trials": 8,
        "minutes": 10.0,
        "runs": runs,
    }


def test_the_report_renders_one_table_row_per_setting() -> None:
    m = _measurement(
        [_run(2), _run(1, trials_per_hour=37.5, util_mean=None, proc_mem_peak_mib=None)]
    )
    report = gpu_check.render(m)
    lines = report.splitlines()
    assert lines[0] == "# GPU check: char-transformer at GPU size"
    assert "`python -m lrsearch.harness.gpu_check --trials 8`" in report
    assert "NVIDIA H200 (x1), driver 570.1" in report
    assert "torch 2.13.0, CUDA 12.8" in report
    header = next(i for i, line in enumerate(lines) if line.startswith("| --trials-per-device"))
    assert lines[header + 1].startswith("|---:")
    rows = lines[header + 2 : header + 4]
    assert rows[0] == "| 2 | 8 | 480 | 60.0 | 71% | 99% | 6,144 MiB | 3,000 MiB |"
    assert rows[1] == "| 1 | 8 | 480 | 37.5 | n/a | 99% | 6,144 MiB | n/a |"
    assert not lines[header + 4].startswith("|")
    assert "exited with" not in report
    assert gpu_check.render(m) == report  # pure


def test_a_failed_setting_shows_its_error() -> None:
    report = gpu_check.render(_measurement([_run(2, rc=1, finished=0, stderr_tail="error: boom")]))
    assert "exited with 1" in report and "error: boom" in report


def test_the_study_file_scales_the_workload_up(tmp_path) -> None:
    f = gpu_check.study_file(tmp_path, "gpu-check-2x", n_trials=3)
    study = tomllib.loads(f.read_text())["study"]
    assert study["workload"] == "char-transformer"
    assert study["workload_options"] == gpu_check.WORKLOAD_OPTIONS
    assert study["n_trials"] == 3
    from lrsearch.config import load_study_config
    from lrsearch.workloads import get_workload

    assert load_study_config(f).study.workload_options == gpu_check.WORKLOAD_OPTIONS
    options = gpu_check.WORKLOAD_OPTIONS
    w = get_workload("char-transformer", **options)
    assert w.batches_per_epoch == options["steps_per_epoch"]


def test_the_sampler_reads_nvidia_smi(tmp_path, monkeypatch) -> None:
    """A fake `nvidia-smi` on PATH: two GPUs sampled twice, one compute process."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  --query-compute-apps*) echo '123, 2048' ;;\n"
        "  *) printf '0, 50, 1000\\n1, 70, 3000\\n0, 90, 1500\\n1, 10, 500\\n'; exec sleep 30 ;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with gpu_check.GpuSampler() as sampler:
        time.sleep(1.5)
    assert sampler.util == [60.0, 50.0]
    assert sampler.mem_mib == [4000.0, 2000.0]
    assert sampler.proc_mem_mib and set(sampler.proc_mem_mib) == {2048.0}
