"""The GPU path, measured: a short ``char-transformer`` study at GPU size, twice.

Run ``python -m lrsearch.harness.gpu_check [--out docs/gpu.md] [--trials N] [--minutes M]``
(or ``make gpu-check``) on a CUDA host. It writes a study file for the built-in
``char-transformer`` workload scaled up through its ``workload_options`` (precision is the
workload's default on CUDA, bf16) and runs ``lrsearch run FILE --devices auto --no-tracking``
twice, with ``--trials-per-device 2`` and then ``1``, each with its own journal storage in a
fresh temporary ``LRSEARCH_HOME``. Meanwhile ``nvidia-smi`` samples GPU utilisation and memory
once a second (``--query-gpu``), and the memory of each compute process (``--query-compute-apps``).
The report (markdown, to ``--out``) gives the command, the machine (GPU, driver, torch and CUDA
versions) and, per setting: finished trials, wall time, trials/hour (finished trials over the
run's wall time, range test included), mean and peak GPU utilisation, peak GPU memory and the
peak memory of one worker process (the largest trial's footprint).

Without CUDA it prints one ``error:`` line and exits 1, writing nothing: a number it did not
measure is never reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

NO_GPU = (
    "error: gpu-check needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU host"
)

# char-transformer at GPU size: about 10.7M parameters, 6 layers x 384, context 256
WORKLOAD_OPTIONS: dict[str, Any] = {
    "n_layer": 6,
    "n_head": 6,
    "n_embd": 384,
    "block_size": 256,
    "batch_size": 64,
    "steps_per_epoch": 100,
}
EPOCHS = 4
SETTINGS = (2, 1)  # --trials-per-device, in the order they run

STUDY = """\
[study]
name = "{name}"
workload = "char-transformer"
workload_options = {options}
n_trials = {n_trials}
epochs = {epochs}
seed = 0
[range_test]
repeats = 1
num_iter = 50
[prior]
n_startup_trials = 3
[pruner]
name = "none"
[tracking]
update_ratio_every = 0
"""


def study_file(directory: Path, name: str, n_trials: int, epochs: int = EPOCHS) -> Path:
    """Write the study file of one setting; returns its path."""
    options = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in WORKLOAD_OPTIONS.items()) + " }"
    path = directory / f"{name}.toml"
    path.write_text(STUDY.format(name=name, options=options, n_trials=n_trials, epochs=epochs))
    return path


# --- sampling ---------------------------------------------------------------------------------


def _numbers(line: str) -> list[float]:
    out = []
    for field in line.split(","):
        try:
            out.append(float(field.strip()))
        except ValueError:
            return []
    return out


class GpuSampler:
    """``nvidia-smi -l 1`` in the background, plus a once-a-second per-process memory poll."""

    def __init__(self) -> None:
        self.util: list[float] = []  # per sample, the mean over the GPUs
        self.mem_mib: list[float] = []  # per sample, summed over GPUs
        self.proc_mem_mib: list[float] = []  # every compute process seen, every poll
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> GpuSampler:
        self._proc = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=index,utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                "-l",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._threads = [
            threading.Thread(target=self._read_gpu, daemon=True),
            threading.Thread(target=self._poll_apps, daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def _read_gpu(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        batch: dict[int, tuple[float, float]] = {}
        for line in self._proc.stdout:
            values = _numbers(line)
            if len(values) != 3:
                continue
            index = int(values[0])
            if index in batch:  # a new round of samples begins: close the last one
                self._add(batch)
                batch = {}
            batch[index] = (values[1], values[2])
        if batch:
            self._add(batch)

    def _add(self, batch: dict[int, tuple[float, float]]) -> None:
        self.util.append(sum(u for u, _ in batch.values()) / len(batch))
        self.mem_mib.append(sum(m for _, m in batch.values()))

    def _poll_apps(self) -> None:
        query = [
            "nvidia-smi",
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ]
        while not self._stop.wait(1.0):
            try:
                out = subprocess.run(
                    query, check=False, capture_output=True, text=True, timeout=10
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            for line in out.splitlines():
                values = _numbers(line)
                if len(values) == 2:
                    self.proc_mem_mib.append(values[1])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=10)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()


# --- one setting ------------------------------------------------------------------------------


def finished_trials(storage: str, name: str) -> int:
    """COMPLETE + PRUNED trials of the study."""
    import optuna
    from optuna.trial import TrialState

    from lrsearch.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    return len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_setting(per_device: int, n_trials: int, minutes: float) -> dict[str, Any]:
    """Run the study once with ``--trials-per-device per_device``; returns its measurements."""
    name = f"gpu-check-{per_device}x"
    with tempfile.TemporaryDirectory(prefix="lrsearch-gpu-check-") as tmp:
        home = Path(tmp)
        f = study_file(home, name, n_trials)
        storage = f"journal:{home / 'optuna.journal'}"
        args = [
            *("run", str(f), "--storage", storage, "--no-tracking"),
            *("--devices", "auto", "--trials-per-device", str(per_device)),
            *("--timeout", str(minutes * 60)),
        ]
        env = {**os.environ, "LRSEARCH_HOME": str(home)}
        env.pop("LRSEARCH_STORAGE", None)
        start = time.monotonic()
        with GpuSampler() as sampler:
            out = subprocess.run(
                [sys.executable, "-m", "lrsearch.cli", *args],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        wall = time.monotonic() - start
        try:
            finished = finished_trials(storage, name)
        except Exception:  # no study: `run` failed before creating one
            finished = 0
    return {
        "trials_per_device": per_device,
        "command": "lrsearch " + " ".join(args).replace(str(home), "$TMP"),
        "rc": out.returncode,
        "stderr_tail": out.stderr[-2000:] if out.returncode else "",
        "finished": finished,
        "wall_s": wall,
        "trials_per_hour": finished / wall * 3600 if wall > 0 else 0.0,
        "util_mean": sum(sampler.util) / len(sampler.util) if sampler.util else None,
        "util_peak": max(sampler.util, default=None),
        "mem_peak_mib": max(sampler.mem_mib, default=None),
        "proc_mem_peak_mib": max(sampler.proc_mem_mib, default=None),
    }


def machine() -> dict[str, str]:
    """GPU names and driver (nvidia-smi), torch and CUDA versions, Python and host OS."""
    import torch

    q = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    lines = subprocess.run(q, capture_output=True, text=True, check=False).stdout.splitlines()
    names = [line.rpartition(",")[0].strip() for line in lines if line.strip()]
    driver = lines[0].rpartition(",")[2].strip() if lines else "?"
    return {
        "gpu": ", ".join(names) or torch.cuda.get_device_name(0),
        "gpus": str(torch.cuda.device_count()),
        "driver": driver,
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


# --- the report -------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def render(m: dict[str, Any]) -> str:
    """The markdown report of a measurement dict (``machine``, ``command``, ``workload_options``,
    ``epochs``, ``trials``, ``minutes`` and ``runs``, one per setting as :func:`run_setting`
    returns). Pure: no I/O."""
    mach = m["machine"]
    options = ", ".join(f"{k}={v}" for k, v in m["workload_options"].items())
    lines = [
        "# GPU check: char-transformer at GPU size",
        "",
        f"Measured by `{m['command']}` ({m.get('date', 'date not recorded')}).",
        "",
        f"- GPU: {mach['gpu']} (x{mach['gpus']}), driver {mach['driver']}",
        f"- torch {mach['torch']}, CUDA {mach['cuda']}, Python {mach['python']}, {mach['os']}",
        f"- workload: `char-transformer` with {options}; {m['epochs']} epochs per trial, "
        "precision bf16 (the workload's default on CUDA)",
        f"- each setting: `--devices auto`, up to {m['trials']} trials or {m['minutes']:g} "
        "minutes, its own journal storage, `--no-tracking`",
        "",
        "| --trials-per-device | finished trials | wall (s) | trials/hour | mean GPU util | "
        "peak GPU util | peak GPU memory | peak memory per process |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in m["runs"]:
        lines.append(
            f"| {r['trials_per_device']} | {r['finished']} | {_fmt(r['wall_s'])} | "
            f"{_fmt(r['trials_per_hour'], 1)} | {_fmt(r['util_mean'], 0, '%')} | "
            f"{_fmt(r['util_peak'], 0, '%')} | {_fmt(r['mem_peak_mib'], 0, ' MiB')} | "
            f"{_fmt(r['proc_mem_peak_mib'], 0, ' MiB')} |"
        )
    lines += [
        "",
        "Trials/hour is finished trials (complete + pruned) over the run's wall time, the range "
        "test and worker start-up included. Utilisation and memory are `nvidia-smi` samples, "
        "once a second (utilisation averaged and memory summed over the GPUs); the per-process "
        "peak is the largest `--query-compute-apps` figure of any worker.",
    ]
    failed = [r for r in m["runs"] if r["rc"] != 0]
    for r in failed:
        lines += [
            "",
            f"**`{r['command']}` exited with {r['rc']}:**",
            "",
            "```",
            r["stderr_tail"],
            "```",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lrsearch.harness.gpu_check", description=__doc__
    )
    parser.add_argument("--out", type=Path, default=Path("docs/gpu.md"), help="report path")
    parser.add_argument("--trials", type=int, default=8, help="trials per setting (default 8)")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="stop starting trials after this (default 10)"
    )
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 1
    if shutil.which("nvidia-smi") is None:
        print(
            "error: gpu-check samples the GPU with nvidia-smi, which is not on PATH",
            file=sys.stderr,
        )
        return 1
    command = "python -m lrsearch.harness.gpu_check " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    runs = []
    for per_device in SETTINGS:
        print(f"gpu-check: --trials-per-device {per_device} ...", flush=True)
        runs.append(run_setting(per_device, args.trials, args.minutes))
        r = runs[-1]
        print(f"  rc {r['rc']}, {r['finished']} trials in {r['wall_s']:.0f} s", flush=True)
    report = render(
        {
            "command": command.strip(),
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "workload_options": WORKLOAD_OPTIONS,
            "epochs": EPOCHS,
            "trials": args.trials,
            "minutes": args.minutes,
            "runs": runs,
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"gpu-check: report written to {args.out}")
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
