from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image

from lrsearch.cli import cli


def test_range_test_writes_json_csv_png(tmp_path) -> None:
    out = tmp_path / "rt"
    result = CliRunner().invoke(
        cli,
        [
            "range-test",
            "-w",
            "tests.tiny_workloads:blobs",
            "--repeats",
            "2",
            "--num-iter",
            "30",
            "--out",
            str(out),
        ],
        obj={},
    )
    assert result.exit_code == 0, result.output
    assert "valley" in result.output and "max_lr prior" in result.output
    data = json.loads((out / "range_test.json").read_text())
    for name in ("steep", "min10", "valley", "diverge"):
        assert len(data["suggestions"][name]["values"]) == 2
    assert data["prior"]["low"] < data["prior"]["center"] <= data["prior"]["high"]
    assert (out / "range_test.csv").read_text().startswith("repeat,step,lr,loss,smoothed")
    with Image.open(out / "range_test.png") as png:
        assert png.size[0] > 400


def test_range_test_json_to_stdout(tmp_path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "range-test",
            "-w",
            "tests.tiny_workloads:blobs",
            "--repeats",
            "1",
            "--num-iter",
            "20",
            "--out",
            str(tmp_path),
            "--json",
        ],
        obj={},
    )
    assert result.exit_code == 0
    assert json.loads(result.stdout)["settings"]["repeats"] == 1


def test_range_test_bad_input(tmp_path) -> None:
    for args, needle in (
        (["--start-lr", "1", "--end-lr", "0.1"], "--start-lr"),
        (["--num-iter", "2"], "--num-iter"),
        (["--repeats", "0"], "--repeats"),
    ):
        result = CliRunner().invoke(
            cli,
            ["range-test", "-w", "tests.tiny_workloads:blobs", "--out", str(tmp_path), *args],
            obj={},
        )
        assert result.exit_code != 0 and needle in result.output
        assert "Traceback" not in result.output


def test_range_test_logs_one_mlflow_run(tmp_path) -> None:
    from mlflow import MlflowClient

    from lrsearch.tracking import local_tracking_uri

    store = tmp_path / "store"
    result = CliRunner().invoke(
        cli,
        [
            "range-test",
            "-w",
            "tests.tiny_workloads:blobs",
            "--repeats",
            "2",
            "--num-iter",
            "25",
            "--out",
            str(tmp_path / "rt"),
            "--tracking-uri",
            str(store),
        ],
        obj={},
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(local_tracking_uri(store)[0])
    exp = client.get_experiment_by_name("lrsearch-range-tests")
    (run,) = client.search_runs([exp.experiment_id])
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"range_test.json", "range_test.csv", "range_test.png"} <= files
    data = json.loads((tmp_path / "rt" / "range_test.json").read_text())
    n_steps = len(data["repeats"][0]["lrs"])
    assert len(client.get_metric_history(run.info.run_id, "loss_r0")) == n_steps
    assert len(client.get_metric_history(run.info.run_id, "lr_r0")) == n_steps
