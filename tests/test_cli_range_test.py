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
