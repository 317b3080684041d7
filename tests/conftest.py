"""Shared fixtures: a private dataset cache and tiny, fast workloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Generated datasets go to a per-session cache unless the caller shares one on purpose.
    if "LRSEARCH_CACHE_DIR" not in os.environ:
        os.environ["LRSEARCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # Tiny models train fastest on one thread, and tests share two cores.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh MLflow store's database, made once: a study test copies it into its home
    (``$LRSEARCH_HOME/mlflow.db``) instead of creating MLflow's schema again (seconds)."""
    from lrsearch.tracking import MlflowTracker, local_tracking_uri

    root = tmp_path_factory.mktemp("mlflow-template")
    MlflowTracker(local_tracking_uri(root)[0])
    return root / "mlflow.db"
