from __future__ import annotations

import pytest
import torch

from lrsearch.errors import WorkloadError
from lrsearch.workloads import get_workload, workload_names


def test_builtin_names_listed() -> None:
    assert {"mnist1d-cnn", "mnist1d-mlp", "digits-mlp", "least-squares"} <= set(workload_names())


def test_mnist1d_cnn_matches_the_paper() -> None:
    w = get_workload("mnist1d-cnn")
    assert len(w.train_data[0]) == 4000 and len(w.val_data[0]) == 1000
    assert w.train_data[0].shape[1] == 40
    model = w.build_model()
    n_params = sum(p.numel() for p in model.parameters())
    assert 5000 <= n_params <= 5400  # ~5.2k in the paper
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.kernel_size[0] for c in convs] == [5, 3, 3]
    assert all(c.out_channels == 25 and c.stride == (2,) for c in convs)
    assert model(w.val_data[0][:7]).shape == (7, 10)


def test_mnist1d_is_cached_and_identical(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LRSEARCH_CACHE_DIR", str(tmp_path))
    first = get_workload("mnist1d-mlp")
    files = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(files) == 1
    second = get_workload("mnist1d-cnn")
    assert torch.equal(first.train_data[0], second.train_data[0])


def test_digits_split_is_fixed() -> None:
    a, b = get_workload("digits-mlp"), get_workload("digits-mlp")
    assert torch.equal(a.val_data[1], b.val_data[1])
    assert len(a.train_data[0]) + len(a.val_data[0]) == 1797


def test_import_path_with_kwargs() -> None:
    w = get_workload("tests.tiny_workloads:blobs", n=64)
    assert w.name == "blobs" and len(w.train_data[0]) == 48


@pytest.mark.parametrize(
    ("spec", "kwargs", "needle"),
    [
        ("nope", {}, "unknown workload 'nope'; use one of"),
        ("no_such_module_xyz:fn", {}, "importing 'no_such_module_xyz' failed"),
        ("tests.tiny_workloads:missing", {}, "has no callable 'missing'"),
        ("tests.tiny_workloads:not_a_workload", {}, "returned dict, expected lrsearch.Workload"),
        ("tests.tiny_workloads:raises", {}, "RuntimeError: boom in user code"),
        ("digits-mlp", {"bogus": 1}, "does not take these options"),
    ],
)
def test_bad_workloads_say_what_is_wrong(spec: str, kwargs: dict, needle: str) -> None:
    with pytest.raises(WorkloadError, match=None) as info:
        get_workload(spec, **kwargs)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_unknown_name_lists_builtins() -> None:
    with pytest.raises(WorkloadError) as info:
        get_workload("mnist2d")
    assert "mnist1d-cnn" in str(info.value) and "digits-mlp" in str(info.value)
