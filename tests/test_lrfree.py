"""LR-free optimizers: a study searches what their users tune; Schedule-Free is evaluated at
its averaged weights; the bench section's report."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from lrsearch.cli import cli
from lrsearch.config import parse_study_config
from lrsearch.errors import ConfigError, WorkloadError
from lrsearch.lrfree import optimizer_modes
from lrsearch.policies import build_schedule
from lrsearch.schedules import Warmup, schedule_from_dict
from lrsearch.training import evaluate, train
from lrsearch.workers import run_study
from tests.tiny_workloads import blobs, blobs_with_test

pytest.importorskip("schedulefree")
pytest.importorskip("prodigyopt")


def _config(optimizer: str, **space: object) -> dict:
    return {
        "study": {
            "name": f"lrfree-{optimizer}",
            "workload": "tests.tiny_workloads:blobs",
            "n_trials": 2,
            "epochs": 2,
            "training": {"optimizer": optimizer},
        },
        "range_test": {"repeats": 1, "num_iter": 20},
        "pruner": {"name": "none"},
        "space": space,
        "tracking": {"update_ratio_every": 0},
    }


@pytest.mark.parametrize(
    ("optimizer", "searched"),
    [("schedulefree_adamw", {"lr", "warmup_frac"}), ("prodigy", {"d_coef", "warmup_frac"})],
)
def test_a_study_of_an_lr_free_optimizer_searches_its_own_parameters(
    tmp_path, monkeypatch, optimizer, searched
) -> None:
    monkeypatch.setenv("LRSEARCH_HOME", str(tmp_path))
    monkeypatch.setenv("LRSEARCH_ALLOW_WORKLOAD", "tests.*")
    config = parse_study_config(_config(optimizer))
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    outcome = run_study(
        config,
        storage_url=storage,
        tracking=False,
        show_progress=False,
        echo=lambda s: None,
    )
    assert outcome.handle.range_test is None  # no max_lr to place: no range test
    trials = outcome.handle.study.trials
    assert trials[0].user_attrs["lrsearch.origin"] == "defaults"
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        assert set(t.params) == searched | {"weight_decay"}  # no max_lr, no momentum
        assert 0.0 <= t.params["warmup_frac"] <= 0.2
    first = trials[0].params  # the published defaults first
    assert first["warmup_frac"] == 0.05
    assert first.get("lr", first.get("d_coef")) in (0.0025, 1.0)
    # retrained from the study: the same value, exactly (CPU)
    args = ["train", "--from-study", config.study.name, "--storage", storage, "--json"]
    result = CliRunner().invoke(cli, args, obj={})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["val_metric"] == outcome.handle.study.best_value
    # the best trial as a plain script: its optimizer as the trial built it, in train mode
    args = ["best", "--study", config.study.name, "--storage", storage, "--format", "python"]
    script = CliRunner().invoke(cli, args, obj={})
    assert script.exit_code == 0, script.output
    scope: dict = {"__name__": "exported_script"}
    exec(script.stdout, scope)
    built = scope["make_optimizer"](blobs().build_model()).param_groups[0]
    assert built["lr"] == pytest.approx(scope["BUILD_LR"], rel=1e-12)
    best = outcome.handle.study.best_params
    if optimizer == "prodigy":
        assert built["d_coef"] == pytest.approx(best["d_coef"]) and built["safeguard_warmup"]
    else:
        assert built["train_mode"]  # it may step at once


def test_the_study_file_ties_an_lr_free_policy_to_its_optimizer() -> None:
    assert parse_study_config(_config("prodigy")).space.policies == ["prodigy"]
    with pytest.raises(ConfigError, match=r"space.policies: optimizer 'prodigy' is LR-free"):
        parse_study_config(_config("prodigy", policies=["triangular2"]), source="x")
    sgd = _config("sgd", policies=["schedulefree"])
    with pytest.raises(ConfigError, match='optimizer = "schedulefree_adamw" instead'):
        parse_study_config(sgd, source="x")
    default = parse_study_config({"study": {"name": "a", "workload": "digits-mlp"}})
    stored = parse_study_config(json.loads(parse_study_config(_config("prodigy")).to_json()))
    assert stored.space.policies == ["prodigy"]  # a stored study reloads as it was
    # the new [space] ranges, unset, hash as before them: stored studies resume
    assert default.fingerprint() == "e787cd96e0eed5da"


def test_schedule_free_is_validated_at_its_averaged_weights() -> None:
    w = blobs_with_test().with_options(optimizer="schedulefree_adamw")
    schedule = build_schedule(
        "schedulefree", {"lr": 0.01, "warmup_frac": 0.1}, total_steps=12, steps_per_epoch=6
    )
    result = train(w, schedule, epochs=2, seed=3, on_epoch=lambda info: None)
    # the same run by hand: the validation value is that of optimizer.eval()'s weights
    torch.manual_seed(3)
    model = w.build_model()
    optimizer = w.make_optimizer(model, lr=schedule.lr_at(0))
    batches = w.train_batches(w.batch_size, seed=3, device=torch.device("cpu"))
    for epoch in range(2):
        model.train()
        optimizer.train()
        for step, (x, y) in enumerate(batches.epoch(epoch)):
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr_at(epoch * 6 + step)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    at_y = evaluate(model, w, torch.device("cpu"))  # the weights it steps: not what counts
    optimizer.eval()
    at_x = evaluate(model, w, torch.device("cpu"))
    assert at_x == (result.val_loss, result.val_metric)
    assert at_y[0] != result.val_loss
    assert evaluate(model, w, torch.device("cpu"), split="test")[1] == result.test_metric


def test_batchnorm_statistics_are_recomputed_at_the_evaluation_weights() -> None:
    base = blobs()
    dim = base.train_data[0].shape[1]
    w = dataclasses.replace(
        base,
        build_model=lambda: nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.Linear(16, 4)),
        optimizer="schedulefree_adamw",
    )
    model = w.build_model()
    optimizer = w.make_optimizer(model, lr=0.01)
    modes = optimizer_modes(optimizer, model, w, batch_size=32, seed=0, device=torch.device("cpu"))
    x, y = w.train_data
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[:32]), y[:32]).backward()
        optimizer.step()
    bn = model[1]
    before = bn.running_mean.clone()
    rng = torch.get_rng_state()
    modes.eval()
    assert not model.training and not optimizer.param_groups[0]["train_mode"]
    assert not torch.equal(before, bn.running_mean)  # refreshed at x, not left from y
    assert torch.equal(rng, torch.get_rng_state())  # training's randomness untouched
    modes.train()
    assert optimizer.param_groups[0]["train_mode"]


def test_warmup_matches_schedule_free_and_cosine_matches_torch() -> None:
    s = Warmup(0.1, 100, warmup_steps=10)
    assert s.lr_at(0) == pytest.approx(0.01) and s.lr_at(9) == s.lr_at(99) == 0.1
    c = Warmup(1.0, 100, decay="cos", group_settings={"d_coef": 2.0})
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    for step in range(100):
        assert c.lr_at(step) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert schedule_from_dict(c.to_dict()) == c


def test_a_missing_package_is_one_line(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "prodigyopt" else real(n, *a)
    )
    monkeypatch.setitem(__import__("sys").modules, "prodigyopt", None)
    with pytest.raises(WorkloadError, match=r"pip install lrsearch\[lrfree\]$"):
        blobs().with_options(optimizer="prodigy").make_optimizer(nn.Linear(2, 2), lr=1.0)


def test_the_bench_section_reports_lr_free_arms_beside_lrsearch(tmp_path) -> None:
    from lrsearch.harness.bench import SIZES, run_bench, write_report

    config = SIZES["smoke"].replace(
        sections=("lrfree",),
        workloads=("tests.tiny_workloads:blobs_with_test",),
        trials=2,  # budget 4 trial-epochs: the range test (10 steps) and a trial of each
        range_test={"repeats": 1, "num_iter": 10},
        lrfree_search=True,
    )
    report = run_bench(config)
    section = report["lrfree"]["tests.tiny_workloads:blobs_with_test"]
    assert set(section["runs"]) == {
        "lrsearch",
        "schedulefree-default",
        "prodigy-default",
        "schedulefree-search",
        "prodigy-search",
    }
    for arm in ("schedulefree-search", "prodigy-search"):  # a study of it, within the budget
        (run,) = section["runs"][arm]
        assert run["trials"] == 2 and run["range_test_trial_epochs"] == 0
        assert section["summary"]["arms"][arm]["median_trial_epochs"] <= config.budget
    assert section["lrsearch_from"] == "run" and section["scored_on"] == "test"
    for arm in ("schedulefree-default", "prodigy-default"):
        (run,) = section["runs"][arm]
        assert run["trials"] == 1 and run["trial_epochs"] == config.epochs
        assert section["summary"]["arms"][arm]["median_best"] == run["best_test"]
        assert set(section["beats_lrsearch"][arm]) <= {"1/8", "1/4", "1/2", "1"}
    write_report(report, tmp_path, command="lrsearch bench --sections lrfree")
    md = (tmp_path / "report.md").read_text()
    assert "## LR-free optimizers" in md and "| prodigy-default |" in md
    # reused: lrsearch's runs from that report, not run again
    config2 = config.replace(lrfree_against=str(tmp_path / "report.json"), lrfree_search=False)
    saved = json.loads((tmp_path / "report.json").read_text())
    saved["search"] = {k: v for k, v in saved["lrfree"].items()}
    (tmp_path / "report.json").write_text(json.dumps(saved))
    again = run_bench(config2)["lrfree"]["tests.tiny_workloads:blobs_with_test"]
    assert again["lrsearch_from"] == "reused"
    assert again["runs"]["lrsearch"] == section["runs"]["lrsearch"]
