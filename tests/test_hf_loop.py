"""A Hugging Face Trainer setup tuned by lrsearch (tests/hf_study.py): a real study, the
schedule per step, pruning, refusals.

Whole file in CI's distributed stage (`make test-distributed`): the Trainer's imports and a
study through it cost about twice the Lightning test's time, and the default suite has a budget.
"""

from __future__ import annotations

import pytest

from lrsearch import OneCycle, TrialContext
from lrsearch.errors import WorkloadError
from tests.integration_checks import check_study, run_study

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate: lrsearch[transformers]")
    from tests import hf_study

    return hf_study


def test_a_trainer_study_drives_every_step_prunes_and_range_tests(
    hf, tmp_path, mlflow_db_template
) -> None:
    hf.APPLIED.clear()
    hf.RANGE_TESTS.clear()
    loop = "tests.hf_study:train"
    storage = f"sqlite:///{tmp_path}/optuna.db"
    output = run_study(tmp_path, "hf-tiny", loop, hf.STEPS_PER_EPOCH, storage, mlflow_db_template)
    assert "1 pruned" in output or "2 pruned" in output
    check_study(tmp_path, "hf-tiny", loop, storage, hf.APPLIED, 2 * hf.STEPS_PER_EPOCH)
    assert [ctx.mode for ctx in hf.RANGE_TESTS] == ["range_test"]
    assert hf.RANGE_TESTS[0].steps >= 10  # optimizer steps the Trainer took on the ramp


def test_a_steps_per_epoch_mismatch_names_both_counts(hf) -> None:
    ctx = TrialContext(OneCycle(0.1, 10), epochs=2, steps_per_epoch=5)
    with pytest.raises(
        WorkloadError, match=r"takes 4 optimizer steps per epoch .* set steps_per_epoch = 4"
    ):
        hf._blobs(ctx)


def test_arguments_lrsearch_sets_are_refused(hf) -> None:
    with pytest.raises(WorkloadError, match="'lr_scheduler_type' is set by lrsearch"):
        hf.hf_loop(
            hf.BlobsNet,
            train_dataset=hf.Blobs("train"),
            eval_dataset=hf.Blobs("val"),
            monitor="accuracy",
            args={"lr_scheduler_type": "cosine"},
        )
