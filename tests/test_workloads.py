from __future__ import annotations

import pytest
import torch

from lrsearch.errors import WorkloadError
from lrsearch.workloads import get_workload, workload_names


def test_builtin_names_listed() -> None:
    builtins = {"mnist1d-cnn", "mnist1d-mlp", "mnist1d-resnet", "char-transformer", "digits-mlp"}
    assert builtins | {"least-squares"} <= set(workload_names())


def test_mnist1d_cnn_matches_the_paper() -> None:
    w = get_workload("mnist1d-cnn")
    assert [len(w.train_data[0]), len(w.val_data[0]), len(w.test_data[0])] == [3000, 1000, 1000]
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
    assert torch.equal(a.val_data[1], b.val_data[1]) and torch.equal(a.test_data[0], b.test_data[0])
    sizes = [len(a.train_data[0]), len(a.val_data[0]), len(a.test_data[0])]
    assert sizes == [1077, 360, 360] and sum(sizes) == 1797


def _rows(tensors: tuple[torch.Tensor, torch.Tensor]) -> set[tuple[float, ...]]:
    return {tuple(row.tolist()) for row in tensors[0]}


@pytest.mark.parametrize("name", ["mnist1d-mlp", "digits-mlp"])
def test_tensor_splits_are_disjoint(name: str) -> None:
    w = get_workload(name)
    train, val, test = _rows(w.train_data), _rows(w.val_data), _rows(w.test_data)
    assert not (train & val) and not (train & test) and not (val & test)


def test_digits_split_is_stratified() -> None:
    w = get_workload("digits-mlp")
    for split in (w.val_data, w.test_data):
        counts = torch.bincount(split[1], minlength=10)
        assert counts.min() >= 35 and counts.max() <= 37  # 360 / 10, give or take rounding


def test_least_squares_has_no_test_split() -> None:
    assert not get_workload("least-squares").has_test


def test_mnist1d_validation_is_the_tail_of_its_training_set() -> None:
    from lrsearch.workloads._mnist1d import _mnist1d_arrays

    w = get_workload("mnist1d-cnn")
    raw = _mnist1d_arrays(None)
    assert torch.equal(w.val_data[0], torch.as_tensor(raw["x"][-1000:], dtype=torch.float32))
    assert torch.equal(w.test_data[0], torch.as_tensor(raw["x_test"], dtype=torch.float32))


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


def _blobs_fields() -> dict:
    w = get_workload("tests.tiny_workloads:blobs")
    return {f: getattr(w, f) for f in ("name", "build_model", "train_data", "val_data", "loss_fn")}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"train_data": 42}, "train_data must be (inputs, targets) tensors, a DataLoader"),
        ({"val_data": lambda e, s: []}, "val_data must be (inputs, targets) tensors"),
        ({"train_data": (torch.zeros(3),)}, "two non-empty tensors of equal length"),
        ({"loss_fn": None}, "needs loss_fn(outputs, targets), or a step_fn"),
        ({"accumulate": 0}, "accumulate must be >= 1"),
        ({"batches_per_epoch": 0}, "batches_per_epoch must be >= 1"),
        ({"optimizer": 3}, "optimizer must be a name, a torch.optim optimizer class or a factory"),
        ({"test_data": 42}, "test_data must be (inputs, targets) tensors, a DataLoader"),
    ],
)
def test_bad_workload_fields_say_what_is_wrong(change: dict, needle: str) -> None:
    from lrsearch.workloads import Workload

    with pytest.raises(ValueError) as info:
        Workload(**{**_blobs_fields(), **change})
    assert needle in str(info.value)


def test_data_in_every_form_is_accepted() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from lrsearch.workloads import Workload

    fields = _blobs_fields()
    x, y = fields["train_data"]
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    for data in (loader, lambda epoch, seed: loader, [(x[:8], y[:8])]):
        w = Workload(**{**fields, "train_data": data, "val_data": loader})
        assert not w.in_memory
    assert Workload(**{**fields, "train_data": loader}).n_train == len(x)
    assert Workload(**{**fields, "train_data": [(x, y)]}).n_train is None


def test_the_validation_loss_has_the_name_loss() -> None:
    from lrsearch.workloads import Metric

    with pytest.raises(ValueError, match="'loss' is taken"):
        Metric("loss", "minimize")
