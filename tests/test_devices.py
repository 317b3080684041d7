"""Device slots. The GPU cases mock the CUDA device count (no GPU on CI); the CPU ones are real."""

from __future__ import annotations

import pytest

import lrsearch.devices as devices
from lrsearch.devices import parse_devices
from lrsearch.errors import ConfigError


def test_cpu_slots_one_thread_each() -> None:
    slots = parse_devices("cpu", 3, cpu_count=8)
    assert [s.device for s in slots] == ["cpu"] * 3
    assert all(s.visible_gpu is None and s.threads == 1 for s in slots)
    assert len({s.label for s in slots}) == 3


def test_auto_without_gpus_is_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(devices, "_gpu_count", lambda: 0)
    assert [s.device for s in parse_devices("auto")] == ["cpu"]


def test_auto_with_gpus_pins_one_gpu_per_worker(monkeypatch) -> None:
    monkeypatch.setattr(devices, "_gpu_count", lambda: 2)
    slots = parse_devices("auto", 2, cpu_count=16)
    assert [s.visible_gpu for s in slots] == ["0", "0", "1", "1"]
    assert all(s.device == "cuda:0" for s in slots)  # each worker sees only its GPU
    assert all(s.threads == 4 for s in slots)


def test_explicit_gpu_list(monkeypatch) -> None:
    monkeypatch.setattr(devices, "_gpu_count", lambda: 4)
    assert [s.visible_gpu for s in parse_devices("cuda:3,cuda:1")] == ["3", "1"]


@pytest.mark.parametrize(
    ("spec", "per_device", "needle"),
    [
        ("cuda:2", 1, "cuda:2 is not available"),
        ("tpu", 1, "cannot read 'tpu'"),
        ("cuda:0,gpu1", 1, "cannot read 'gpu1'"),
        ("cpu", 0, "--trials-per-device"),
    ],
)
def test_bad_specs(monkeypatch, spec: str, per_device: int, needle: str) -> None:
    monkeypatch.setattr(devices, "_gpu_count", lambda: 1)
    with pytest.raises(ConfigError, match=None) as info:
        parse_devices(spec, per_device)
    assert needle in str(info.value)
