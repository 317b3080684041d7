"""A LightningModule tuned by lrsearch: a real study, the schedule per step, pruning, refusals."""

from __future__ import annotations

import pytest

pytest.importorskip("lightning")

import lightning as L
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrsearch import OneCycle, TrialContext
from lrsearch.cli import cli
from lrsearch.errors import WorkloadError
from lrsearch.integrations import lightning_loop
from tests.integration_checks import check_study, run_study

BATCH, BATCHES, ACCUMULATE = 16, 8, 2  # 4 optimizer steps per epoch
STEPS_PER_EPOCH = BATCHES // ACCUMULATE
APPLIED: dict[int, list[float]] = {}  # trial number -> the LR of each optimizer step taken
RANGE_TESTS: list[TrialContext] = []


class Blobs(L.LightningDataModule):
    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 4, (BATCH * BATCHES + 64,), generator=g)
        x = torch.randn(4, 8, generator=g)[y] * 2.0 + torch.randn(len(y), 8, generator=g)
        self.train_set = TensorDataset(x[:-64], y[:-64])
        self.val_set = TensorDataset(x[-64:], y[-64:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=BATCH, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64)


class Tiny(L.LightningModule):
    """A user's module: SGD with momentum, biases in a group at 0.1x and undecayed."""

    trail = False  # set per trial by `train` below: report a trailing metric
    applied: list[float] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
        x, y = batch
        accuracy = (self.net(x).argmax(1) == y).float().mean() * 100.0
        self.log("val_acc", accuracy * 0.0 if Tiny.trail else accuracy)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        weights = [p for p in self.parameters() if p.dim() > 1]
        biases = [p for p in self.parameters() if p.dim() == 1]
        groups = [
            {"params": weights, "weight_decay": 1e-4},
            {"params": biases, "lr": 0.01, "weight_decay": 0.0},
        ]
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if Tiny.applied is not None:  # the LR the step just taken ran at
            Tiny.applied.append(self.trainer.optimizers[0].param_groups[0]["lr"])


class WithScheduler(Tiny):
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return {
            "optimizer": optimizer,
            "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 5),
        }


_tiny = lightning_loop(Tiny, Blobs, monitor="val_acc", accumulate_grad_batches=ACCUMULATE)


def train(ctx: TrialContext) -> None:
    """The study's loop: the integration, with trial 2 made to trail and the LRs recorded."""
    if ctx.mode == "range_test":
        RANGE_TESTS.append(ctx)
    Tiny.trail = ctx.number == 2
    Tiny.applied = APPLIED.setdefault(ctx.number, []) if ctx.mode == "trial" else None
    _tiny(ctx)


with_scheduler = lightning_loop(WithScheduler, Blobs, monitor="val_acc")


def test_a_lightning_study_drives_every_step_prunes_and_range_tests(
    tmp_path, mlflow_db_template
) -> None:
    APPLIED.clear()
    RANGE_TESTS.clear()
    loop = "tests.test_lightning_loop:train"
    storage = f"journal:{tmp_path}/optuna.journal"
    output = run_study(
        tmp_path, "lightning-tiny", loop, STEPS_PER_EPOCH, storage, mlflow_db_template
    )
    assert "1 pruned" in output or "2 pruned" in output
    check_study(tmp_path, "lightning-tiny", loop, storage, APPLIED, 2 * STEPS_PER_EPOCH)
    assert [ctx.mode for ctx in RANGE_TESTS] == ["range_test"]
    assert RANGE_TESTS[0].steps >= 10  # optimizer steps the Trainer took on the ramp


def test_a_module_with_its_own_scheduler_gets_one_line(tmp_path, repo_root) -> None:
    study_file = tmp_path / "s.toml"
    study_file.write_text(
        '[study]\nname = "sched"\nloop = "tests.test_lightning_loop:with_scheduler"\n'
        'metric = "accuracy"\ndirection = "maximize"\nepochs = 1\nsteps_per_epoch = 8\n'
        "n_trials = 1\n[range_test]\nrepeats = 1\nnum_iter = 10\n"
    )
    result = CliRunner().invoke(
        cli,
        ["run", str(study_file), "--devices", "cpu", "--no-tracking"],
        obj={},
        env={"LRSEARCH_HOME": str(tmp_path)},
    )
    assert result.exit_code == WorkloadError.exit_code, result.output
    line = result.output.strip().splitlines()[-1]
    assert line == (
        "error: WithScheduler.configure_optimizers returns an LR scheduler (StepLR); lrsearch's "
        "sampled schedule drives the LR: return the optimizer alone"
    )


def test_a_steps_per_epoch_mismatch_names_both_counts() -> None:
    ctx = TrialContext(OneCycle(0.1, 10), epochs=2, steps_per_epoch=5)
    with pytest.raises(
        WorkloadError,
        match=r"takes 4 optimizer steps per epoch .* steps_per_epoch = 5; set steps_per_epoch = 4",
    ):
        _tiny(ctx)


def test_options_lrsearch_sets_are_refused() -> None:
    with pytest.raises(WorkloadError, match="Trainer option 'max_epochs' is set by lrsearch"):
        lightning_loop(Tiny, Blobs, monitor="val_acc", max_epochs=3)


def test_a_diverged_trial_stops_the_trainer() -> None:
    ctx = TrialContext(OneCycle(1e6, 40), epochs=10, steps_per_epoch=STEPS_PER_EPOCH)
    _tiny(ctx)
    assert ctx.diverged and "non-finite loss" in ctx.diverged
    assert ctx.steps < 40  # stopped within a chunk of losses, not at max_epochs
