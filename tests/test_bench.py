"""``lrsearch bench``: the report's shape (not its numbers), the recipes, the summaries."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import lrsearch.cli._bench  # noqa: F401  (registers the command)
from lrsearch.cli import cli
from lrsearch.harness.bench import (
    ARMS,
    PRUNER_ARMS,
    evaluate_targets,
    fastai_one_cycle,
    torch_one_cycle,
)
from lrsearch.harness.bench._report import HEADERS
from lrsearch.harness.bench._stats import (
    TEST,
    VAL,
    best_at,
    chosen,
    first_reach,
    median_or_none,
    summarize_pruning,
    summarize_search,
)

ARM_KEYS = (
    "median_best",
    "median_best_val",
    "q25_best",
    "q75_best",
    "median_best_at_quarter",
    "median_best_at_half",
    "median_trial_epochs_to_target",
    "median_wall_s_to_target",
    "reached_target",
    "median_trials",
    "median_trial_epochs",
    "median_wall_s",
    "median_range_test_trial_epochs",
)
# None: never reached / nothing completed that early
MAYBE_NONE = (
    "median_trial_epochs_to_target",
    "median_wall_s_to_target",
    "median_best_at_quarter",
    "median_best_at_half",
)
PRUNER_KEYS = (
    "median_trial_epochs",
    "median_best",
    "median_best_val",
    "median_pruned",
    "median_wall_s",
    "median_saved_fraction",
    "median_points_lost",
    "max_points_lost",
    "median_relative_lost",
    "seeds_top3_pruned",
)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_run(run: dict[str, object]) -> None:
    """Each point keeps both numbers of the chosen trial: validation and test."""
    curve = run["curve"]
    assert isinstance(curve, list)
    for point in curve:
        assert len(point) == 4  # [trial_epochs, wall_s, val, test]
        assert (point[VAL] is None) == (point[TEST] is None), point
    assert run["best"] == run["best_test"]  # scored on test
    assert run["best_val"] == curve[-1][VAL] and run["best_test"] == curve[-1][TEST]
    assert run["best_val"] is None or _number(run["best_val"])
    assert run["best_test"] is None or _number(run["best_test"])


def _check_pruning_run(run: dict[str, Any], trials: int) -> None:
    """A replayed pruner: what it pruned, and the chosen trial's two scores."""
    assert isinstance(run["pruned_trials"], list) and run["pruned"] == len(run["pruned_trials"])
    assert all(0 <= n < trials for n in run["pruned_trials"])
    assert run["chosen_trial"] is None or run["chosen_trial"] not in run["pruned_trials"]
    assert run["best"] == run["best_test"]  # scored on test
    assert run["best_val"] is None or _number(run["best_val"])
    assert isinstance(run["top3_pruned"], bool)


# A whole benchmark (every section, real studies): 20 s, so it runs with `make test-slow` and
# keeps the default suite under three minutes and CI under fifteen.
@pytest.mark.slow
def test_smoke_bench_writes_a_well_formed_report(tmp_path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["bench", "--smoke", "--out", str(out), "-q"], obj={})
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output

    markdown = (out / "report.md").read_text()
    for header in HEADERS:
        assert f"\n{header}\n" in markdown
    assert "lrsearch bench --smoke" in markdown
    # digits-mlp has a test split: tables and targets score the validation-chosen trial on it
    assert "best test metric (chosen on validation)" in markdown
    assert "on best test metric (chosen on validation)" in markdown
    assert "test points lost (median / worst)" in markdown
    assert "(validation: no test split)" not in markdown
    assert "best validation metric (no test split)" not in markdown

    report = json.loads((out / "report.json").read_text())
    for name, section in report["search"].items():
        assert section["scored_on"] == "test" and section["summary"]["scored_on"] == "test"
        assert set(section["summary"]["arms"]) == set(ARMS)
        assert _number(section["summary"]["target"])
        for arm, summary in section["summary"]["arms"].items():
            for key in ARM_KEYS:
                ok = _number(summary[key]) or (key in MAYBE_NONE and summary[key] is None)
                assert ok, (name, arm, key, summary[key])
            assert len(section["runs"][arm]) == report["settings"]["seeds"]
            for run in section["runs"][arm]:
                _check_run(run)
    for section in report["pruning"].values():
        assert section["scored_on"] == "test"
        assert set(section["summary"]) == set(PRUNER_ARMS)
        for summary in section["summary"].values():
            assert all(_number(summary[key]) for key in PRUNER_KEYS)
        for runs in section["runs"].values():
            for run in runs:
                _check_pruning_run(run, section["trials"])
    for variant in report["overhead"]["variants"].values():
        assert _number(variant["median_ratio"]) and variant["median_ratio"] > 0
        assert variant["same_result"] is True  # the bare twin trained exactly the same run
        # with the MLflow writer process's CPU added: never below the training process's own
        assert variant["median_total_cpu_ratio"] >= variant["median_cpu_ratio"] - 1e-9
        # 2-epoch trials: every pair compared on the epochs its trial trained, none of 3 s
        assert variant["left_out"] == 0 and variant["long"]["pairs"] == 0
        assert all(row["epochs"] for row in variant["rows"])
    (row,) = [t for t in report["targets"] if t["target"].startswith("overhead ratio")]
    assert row["status"] == "missed" and row["measured"].startswith("no pair of a >= 3 s trial")
    _check_storage(report["storage"], report["settings"], report["targets"])
    assert {t["status"] for t in report["targets"]} <= {"met", "missed", "not measured"}

    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {"search_digits-mlp.png", "pruning.png"}
    for png in pngs:
        with Image.open(png) as image:
            image.verify()

    # --merge: this report and a copy under another workload name, judged again as one
    other = tmp_path / "other"
    other.mkdir()
    copy = {**report, "search": {"digits-copy": report["search"]["digits-mlp"]}}
    (other / "report.json").write_text(json.dumps(copy))
    before = (out / "report.json").read_text()
    merged_dir = tmp_path / "merged"
    result = CliRunner().invoke(
        cli,
        ["bench", "--merge", str(out), "--merge", str(other), "--out", str(merged_dir)],
        obj={},
    )
    assert result.exit_code == 0, result.output
    merged = json.loads((merged_dir / "report.json").read_text())
    assert set(merged["search"]) == {"digits-mlp", "digits-copy"}
    assert merged["search"]["digits-copy"]["summary"] == merged["search"]["digits-mlp"]["summary"]
    tallies = [t for t in merged["targets"] if t["target"].endswith("of 2 workloads")]
    assert len(tallies) == 2 and all(t["measured"].startswith("met on ") for t in tallies)
    assert "Merged from 2 runs" in (merged_dir / "report.md").read_text()
    assert (merged_dir / "search_digits-copy.png").exists()
    assert (out / "report.json").read_text() == before  # the merged reports are left alone


def _storage_children() -> list[str]:
    """Command lines of this process's children that are a storage proxy or worker."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            stat = Path(entry.path, "stat").read_text()
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == os.getpid() and ("storage-proxy" in cmd or "spawn_main" in cmd):
            found.append(cmd)
    return found


def _check_storage(
    storage: dict[str, Any], settings: dict[str, Any], targets: list[dict[str, str]]
) -> None:
    """Every worker count ran direct and through the proxy; the largest studies were filled."""
    if Path("/proc").is_dir():
        assert not _storage_children()  # the proxy was stopped, the workers joined
    if "skipped" in storage:
        return
    arms = ["direct"] if "proxy_skipped" in storage else ["direct", "proxy"]
    workers = settings["storage_workers"]
    assert sorted((r["arm"], r["workers"]) for r in storage["runs"]) == sorted(
        (a, w) for a in arms for w in workers
    )
    for r in storage["runs"]:
        keys = ("trials_per_s", "p50_ms", "p95_ms", "p95_ms_first_tenth", "p95_ms_last_tenth")
        assert all(_number(r[k]) for k in keys), r
        assert r["p50_ms"] <= r["p95_ms"] and _number(r["client_cpu_ms_per_trial"])
        assert r["round_trips_per_trial"] >= 9  # ask, 7 parameters, tell: one each at least
        if r["arm"] == "direct":
            assert r["proxy_cpu_ms_per_trial"] is None
        largest = r["workers"] == max(workers)
        fewer = settings["storage_trials_fewer"] or settings["storage_trials"]
        assert r["trials"] == (settings["storage_trials"] if largest else fewer)
        assert r["timed"] + r["filled"] == r["trials"]
        tenth = r["trials"] // 10
        if largest and settings["storage_fill"]:  # the workers made the first and last tenth
            assert r["timed"] == 2 * tenth and r["filled"] == r["trials"] - 2 * tenth
            assert [b["trials_done"] for b in r["buckets"]] == [tenth, r["trials"]]
        else:
            assert r["filled"] == 0 and len(r["buckets"]) == 10
    rt = storage["round_trips"]  # the round trips of one lrsearch trial, and what they are for
    assert rt["per_trial"] <= rt["max_per_trial"] and rt["by_purpose"], rt
    if storage["projection"]:
        (row,) = [t for t in targets if t["target"].endswith("(projection)")]
        assert row["status"] == "not measured" and "not measured" in row["measured"]


def _storage_run(arm: str, workers: int, trials: int, first: float, last: float) -> dict[str, Any]:
    return {
        "arm": arm,
        "workers": workers,
        "trials": trials,
        "timed": trials,
        "filled": 0,
        "trials_per_s": 20.0,
        "mean_ms": 30.0,
        "p50_ms": 25.0,
        "p95_ms": max(first, last),
        "p95_ms_first_tenth": first,
        "p95_ms_last_tenth": last,
        "client_cpu_ms_per_trial": 10.0,
        "postgres_cpu_ms_per_trial": 5.0,
        "proxy_cpu_ms_per_trial": 5.0 if arm == "proxy" else None,
    }


def test_storage_targets_growth_proxy_and_projection() -> None:
    from lrsearch.harness.bench._storage_stats import project

    runs = [
        _storage_run("direct", 1, 1000, 40.0, 44.0),
        _storage_run("proxy", 1, 1000, 40.0, 44.0),
        _storage_run("direct", 8, 20_000, 100.0, 110.0) | {"timed": 4000, "filled": 16_000},
        _storage_run("proxy", 8, 20_000, 100.0, 300.0) | {"timed": 4000, "filled": 16_000},
    ]
    projection = project(runs, cores=2)
    # 1 worker: 30 ms = 10 (worker CPU) + 5 (server) + 15 waiting; proxy: + 5 of the proxy's
    direct, proxy = projection["direct"], projection["proxy"]
    assert direct["wait_ms"] == pytest.approx(15.0) and proxy["wait_ms"] == pytest.approx(10.0)
    assert direct["trials_per_s"] == pytest.approx(8000 / 30)
    assert direct["p95_ms"] == pytest.approx(44.0)  # no CPU queue: the 1-worker p95
    assert direct["server_cores"] == pytest.approx(8 * 5 / 30)
    assert direct["cpu_bound_trials_per_s"] == pytest.approx(2000 / 15)
    # the proxy (5 ms of its CPU per trial) serves at most 200 trials/s: 8 workers queue there
    assert proxy["trials_per_s"] == pytest.approx(200.0) and "proxy" in proxy["bound"]
    assert proxy["p95_ms"] == pytest.approx(44.0 * (8000 / 200) / 30)
    rows = evaluate_targets({"storage": {"runs": runs, "projection": projection}})
    got = {t["target"]: (t["status"], t["measured"]) for t in rows}
    growth = "storage p95 at the last tenth within 1.2x of the first tenth, study of 20,000 trials"
    assert got[f"{growth} (direct)"][0] == "met" and "1.10x" in got[f"{growth} (direct)"][1]
    proxy_growth = got[f"{growth} (proxy)"]
    assert proxy_growth[0] == "missed" and "16,000 of them written in bulk" in proxy_growth[1]
    assert got["storage with 8 workers: p95 through the proxy no worse than direct"][0] == "missed"
    assert got["storage p95 ask+tell < 50 ms at 5,000 trials with 8 workers"][0] == "missed"
    (projected,) = [v for k, v in got.items() if k.endswith("(projection)")]
    assert projected[0] == "not measured" and projected[1].startswith("projected")
    # a smaller study: the growth is reported, but not judged against the 20,000
    small = [r | {"trials": 2000} for r in runs]
    rows = evaluate_targets({"storage": {"runs": small}})
    status = {t["target"]: t["status"] for t in rows}
    assert status[f"{growth} (direct)"] == "not measured"
    assert status["storage with 8 workers: p95 through the proxy no worse than direct"] == "missed"


def test_storage_latency_is_summarized_per_tenth_of_the_study() -> None:
    from lrsearch.harness.bench._storage_stats import summarize as _summarize

    # 100 trials: 10 ms each, except the last tenth's (50 ms); one ends every 0.1 s
    rows = [(n, 0.05 if n >= 90 else 0.01, 100.0 + n / 10) for n in range(100)]
    s = _summarize(rows, seconds=10.0, workers=2, n_trials=100)
    assert [b["trials_done"] for b in s["buckets"]] == list(range(10, 101, 10))
    assert s["p95_ms_first_tenth"] == pytest.approx(10.0)
    assert s["p95_ms_last_tenth"] == pytest.approx(50.0) and s["trials_per_s"] == 10.0
    # the middle written in bulk: only the two tenths the workers made
    timed = [r for r in rows if r[0] < 10 or r[0] >= 90]
    s = _summarize(timed, seconds=2.0, workers=2, n_trials=100)
    assert [(b["trials_done"], b["trials"]) for b in s["buckets"]] == [(10, 10), (100, 10)]
    assert s["p95_ms_last_tenth"] / s["p95_ms_first_tenth"] == pytest.approx(5.0)


def test_storage_is_skipped_with_a_note_without_postgres(tmp_path) -> None:
    out = tmp_path / "report"
    args = [
        "bench",
        "--smoke",
        "--sections",
        "storage",
        "--postgres",
        "postgresql://postgres@127.0.0.1:9",
        "--out",
        str(out),
        "-q",
    ]
    result = CliRunner().invoke(cli, args, obj={})
    assert result.exit_code == 0, result.output
    assert (
        "Skipped: PostgreSQL at postgresql://postgres@127.0.0.1:9 is unreachable"
        in (out / "report.md").read_text()
    )
    assert "skipped" in json.loads((out / "report.json").read_text())["storage"]


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--workloads", "nope"], "unknown workload 'nope'", 3),
        (["--sections", "search,bogus"], "unknown sections ['bogus']", 2),
        (["--seeds", "0"], "must be > 0", 2),
        (["--arms", "lrsearch,bogus"], "unknown arms ['bogus']", 2),
    ],
)
def test_bad_options_fail_in_one_line(tmp_path, args, message, code) -> None:
    result = CliRunner().invoke(cli, ["bench", "--smoke", "--out", str(tmp_path), *args], obj={})
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output


def test_merge_refuses_what_it_cannot_read_or_would_overwrite(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["bench", "--merge", str(empty), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "no readable report.json" in result.output
    result = CliRunner().invoke(cli, ["bench", "--merge", str(empty), "--out", str(empty)])
    assert result.exit_code != 0 and "would be overwritten" in result.output
    assert "Traceback" not in result.output


def test_torch_recipe_is_torch_one_cycle_lr() -> None:
    total = 137
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.3, total_steps=total)
    lrs, momenta = [], []
    for step in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        if step < total - 1:
            scheduler.step()
    ours = torch_one_cycle(0.3, total)
    np.testing.assert_allclose(ours.lrs(), lrs, rtol=1e-9)
    np.testing.assert_allclose(ours.momenta(), momenta, atol=1e-12)


def test_fastai_recipe_follows_combined_cos() -> None:
    total = 200
    ours = fastai_one_cycle(1.0, total)

    def combined_cos(pos: float) -> float:  # fastai: combined_cos(0.25, 1/25, 1, 1e-5)
        def cos(start: float, end: float, p: float) -> float:
            return start + (1 + math.cos(math.pi * (1 - p))) * (end - start) / 2

        return cos(1 / 25, 1.0, pos / 0.25) if pos < 0.25 else cos(1.0, 1e-5, (pos - 0.25) / 0.75)

    np.testing.assert_allclose(
        ours.lrs(), [combined_cos(k / total) for k in range(total)], rtol=1e-12
    )
    assert ours.lr_at(50) == pytest.approx(1.0)
    assert ours.momentum_at(0) == pytest.approx(0.95) and ours.momentum_at(50) == pytest.approx(
        0.85
    )


def test_curve_helpers() -> None:
    curve = [[2.0, 1.0, None], [12.0, 3.0, 80.0], [22.0, 5.0, 90.0], [32.0, 7.0, 90.0]]
    assert best_at(curve, 1.0) is None and best_at(curve, 2.0) is None
    assert best_at(curve, 21.9) == 80.0 and best_at(curve, 100.0) == 90.0
    assert best_at(curve, 5.0, axis=1) == 90.0
    assert first_reach(curve, 85.0, maximize=True) == 22.0
    assert first_reach(curve, 95.0, maximize=True) is None
    assert first_reach(curve, 85.0, maximize=False) == 12.0  # lower is better: 80 is
    assert median_or_none([1.0, None, 3.0], worst=-math.inf) == 1.0
    assert median_or_none([None, None, 3.0], worst=-math.inf) is None
    assert median_or_none([4.0, 2.0], worst=math.inf) == 3.0


def _run(seed: int, points: list[list[float | None]]) -> dict[str, object]:
    return {
        "seed": seed,
        "trials": len(points) - 1,
        "complete": len(points) - 1,
        "pruned": 0,
        "trial_epochs": points[-1][0],
        "wall_s": points[-1][1],
        "best": points[-1][2],
        "range_test_trial_epochs": points[0][0],
        "curve": points,
    }


def test_summaries_and_targets() -> None:
    fast = [[5.0, 1.0, None], [15.0, 2.0, 97.0], [25.0, 3.0, 98.0]]
    slow = [[0.0, 0.0, None], [10.0, 1.0, 90.0], [20.0, 2.0, 97.9], [30.0, 3.0, 99.0]]
    recipe = [[5.0, 1.0, None], [15.0, 2.0, 96.0]]
    section = {
        "direction": "maximize",
        "budget": 25,
        "runs": {
            "lrsearch": [_run(0, fast)],
            "tpe-wide": [_run(0, slow)],
            "random-wide": [_run(0, slow)],
            "fastai-valley": [_run(0, recipe)],
            "torch-steep": [_run(0, recipe)],
        },
    }
    summary = summarize_search(section, tolerance=0.3)
    assert summary["target"] == pytest.approx(97.7)  # the last slow trial is over budget
    arms = summary["arms"]
    assert arms["lrsearch"]["median_trial_epochs_to_target"] == 25.0
    assert arms["tpe-wide"]["median_trial_epochs_to_target"] == 20.0
    assert arms["fastai-valley"]["median_trial_epochs_to_target"] is None
    targets = evaluate_targets({"search": {"w": {**section, "summary": summary}}})
    assert [t["status"] for t in targets] == ["missed", "met", "missed", "missed"]
    # half way in (12.5 trial-epochs) lrsearch had nothing finished yet, tpe-wide had 90.0
    assert "tpe-wide at 1/2 (90.00 vs -)" in targets[2]["measured"]
    assert targets[3]["measured"] == "worse at 1/2 (nothing yet vs 90.00)"
    # two workloads: the "on at least 3 of 4" tallies, here 2 of 2
    both = {"search": {n: {**section, "summary": summary} for n in ("w1", "w2")}}
    tallies = evaluate_targets(both)[-2:]
    assert [t["target"] for t in tallies] == [
        "anytime: lrsearch's median best >= every other arm's at every budget fraction, "
        "on at least 2 of 2 workloads",
        "lrsearch reaches the target in <= 1/3 of TPE-wide's trial-epochs, on at least 2 of 2 "
        "workloads",
    ]
    assert [t["measured"] for t in tallies] == ["met on 0 of 2", "met on 0 of 2"]


def test_near_tpe_is_judged_against_the_seeds_spread() -> None:
    """lrsearch 0.5 behind TPE at the whole budget: within an IQR of 4, beyond one of 0.4."""

    def section(spread: float) -> dict[str, object]:
        def arm(centre: float) -> list[dict[str, object]]:
            return [
                _run(k, [[0.0, 0.0, None], [10.0, 1.0, centre + d]])
                for k, d in enumerate((-spread, 0.0, spread))
            ]

        runs = {"lrsearch": arm(95.0), "tpe-wide": arm(95.5)}
        out: dict[str, object] = {"direction": "maximize", "budget": 10, "runs": runs}
        return {**out, "summary": summarize_search(out, tolerance=0.3)}

    wide = evaluate_targets({"search": {"w": section(2.0)}})[-1]
    narrow = evaluate_targets({"search": {"w": section(0.2)}})[-1]
    assert wide["status"] == "met" and wide["measured"] == "within the IQR at every fraction"
    assert narrow["status"] == "missed" and "1 (95.00 vs 95.50, IQR 0.40)" in narrow["measured"]


def test_the_chosen_trial_is_the_best_on_validation_not_on_test() -> None:
    trials = [
        {"number": 0, "value": 90.0, "test_metric": 95.0},  # best on test
        {"number": 1, "value": 97.0, "test_metric": 91.0},  # best on validation: chosen
        {"number": 2, "value": float("nan"), "test_metric": 99.0},  # diverged: never chosen
        {"number": 3, "value": 97.0, "test_metric": 93.0},  # a tie keeps the earlier
        {"number": 4, "value": None, "test_metric": None},
    ]
    best = chosen(trials, maximize=True)
    assert best is not None and best["number"] == 1 and best["test_metric"] == 91.0
    lowest = chosen(trials, maximize=False)
    assert lowest is not None and lowest["number"] == 0
    assert chosen([], maximize=True) is None
    assert chosen([trials[2], trials[4]], maximize=True) is None


def test_summaries_score_test_of_the_validation_choice() -> None:
    # validation rises 90 -> 97 while the chosen trial's test falls 95 -> 91: reported is 91
    ours = [[0.0, 0.0, None, None], [10.0, 1.0, 90.0, 95.0], [20.0, 2.0, 97.0, 91.0]]
    theirs = [[0.0, 0.0, None, None], [10.0, 1.0, 92.0, 93.0], [20.0, 2.0, 92.0, 93.0]]
    runs = {
        "lrsearch": [_run(0, ours)],
        "tpe-wide": [_run(0, theirs)],
        "random-wide": [_run(0, theirs)],
        "fastai-valley": [_run(0, theirs)],
        "torch-steep": [_run(0, theirs)],
    }
    section = {"direction": "maximize", "budget": 20, "scored_on": "test", "runs": runs}
    summary = summarize_search(section, tolerance=0.3)
    lrs = summary["arms"]["lrsearch"]
    assert summary["scored_on"] == "test"
    assert lrs["median_best"] == 91.0 and lrs["median_best_val"] == 97.0
    assert summary["target"] == pytest.approx(92.7)  # from test: tpe-wide's 93, not our 97
    assert lrs["median_trial_epochs_to_target"] == 10.0  # test 95 at the first trial
    # the same curves without a test split: validation stands in
    val = summarize_search({**section, "scored_on": "validation"}, tolerance=0.3)
    assert val["arms"]["lrsearch"]["median_best"] == 97.0
    assert val["target"] == pytest.approx(96.7)

    def prune_run(val_best: float, test_best: float, epochs: float) -> dict[str, object]:
        return {
            "seed": 0,
            "trial_epochs": epochs,
            "pruned": 1,
            "wall_s": 1.0,
            "best": test_best,
            "best_val": val_best,
            "best_test": test_best,
        }

    pruning = {
        "direction": "maximize",
        "scored_on": "test",
        "runs": {"plateau": [prune_run(97.0, 91.0, 10.0)], "none": [prune_run(96.0, 94.0, 20.0)]},
    }
    p = summarize_pruning(pruning)["plateau"]
    # plateau's chosen trial is better on validation but 3 test points worse
    assert p["median_points_lost"] == pytest.approx(3.0)
    assert p["median_best"] == 91.0 and p["median_best_val"] == 97.0
    assert p["median_saved_fraction"] == pytest.approx(0.5)
    targets = evaluate_targets({"pruning": {"w": {**pruning, "summary": {"plateau": p}}}})
    assert "3.00 test points" in targets[0]["measured"] and targets[0]["status"] == "missed"


def _curves() -> dict[str, Any]:
    """Four recorded trials of 4 epochs: two good, one poor, one that diverged at epoch 2."""

    def trial(n: int, values: list[float | None], test: float | None) -> dict[str, Any]:
        diverged = values[-1] is None
        return {
            "number": n,
            "params": {},
            "derived": {"cycle_steps": 90, "total_steps": 100},
            "values": values,
            "value": None if diverged else values[-1],
            "test_metric": test,
            "diverged": diverged,
            "epochs_trained": float(len(values)),
        }

    return {
        "workload": "w",
        "seed": 0,
        "epochs": 4,
        "direction": "maximize",
        "trials": [
            trial(0, [50.0, 70.0, 80.0, 90.0], 89.0),
            trial(1, [20.0, 25.0, 30.0, 35.0], 34.0),
            trial(2, [60.0, None], None),
            trial(3, [55.0, 72.0, 85.0, 92.0], 90.5),
        ],
    }


def test_replay_counts_every_epoch_trained_and_picks_on_validation() -> None:
    from optuna.pruners import NopPruner, ThresholdPruner

    from lrsearch.harness.bench._curves import replay, top_numbers

    curves = _curves()
    none = replay(curves, NopPruner())
    assert none["epochs"] == none["epochs_unpruned"] == 4 + 4 + 2 + 4
    assert none["saved"] == 0.0 and none["pruned"] == []
    assert none["chosen"] == none["chosen_unpruned"] == 3 and none["test"] == 90.5
    # stops a trial below 40 at its first report: trial 1 trains 1 epoch instead of 4
    cut = replay(curves, ThresholdPruner(lower=40.0))
    assert cut["pruned"] == [1] and cut["epochs"] == 1 + 4 + 2 + 4
    assert cut["saved"] == pytest.approx(3 / 14) and cut["test"] == 90.5
    assert top_numbers(curves) == [3, 0, 1]


def test_the_anytime_target_names_every_arm_and_fraction_ahead_of_lrsearch() -> None:
    from lrsearch.harness.bench._targets import _anytime_target

    def arm(eighth: float, quarter: float, half: float, whole: float) -> dict[str, float]:
        return {
            "median_best_at_eighth": eighth,
            "median_best_at_quarter": quarter,
            "median_best_at_half": half,
            "median_best": whole,
        }

    section = {
        "direction": "maximize",
        "summary": {
            "arms": {
                "lrsearch": arm(90.0, 91.0, 92.0, 93.0),
                "tpe-wide": arm(40.0, 80.0, 92.5, 93.0),
            }
        },
    }
    row = _anytime_target("w", section)
    assert (
        row["status"] == "missed" and row["measured"] == "behind tpe-wide at 1/2 (92.50 vs 92.00)"
    )
    section["summary"]["arms"]["tpe-wide"]["median_best_at_half"] = 91.0
    assert _anytime_target("w", section)["status"] == "met"


def test_the_target_of_a_loss_is_one_percent_above_the_best() -> None:
    section = {
        "direction": "minimize",
        "budget": 20,
        "runs": {
            "lrsearch": [_run(0, [[0.0, 0.0, None], [10.0, 1.0, 3.0], [20.0, 2.0, 2.90]])],
            "tpe-wide": [_run(0, [[0.0, 0.0, None], [10.0, 1.0, 2.95]])],
        },
    }
    summary = summarize_search(section, tolerance=0.3)
    assert summary["target"] == pytest.approx(2.90 * 1.01)  # not 2.90 + 0.3 bits
    assert summary["arms"]["lrsearch"]["median_trial_epochs_to_target"] == 20.0
    assert summary["arms"]["tpe-wide"]["median_trial_epochs_to_target"] is None
