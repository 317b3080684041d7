"""Train with PyTorch Lightning or the Hugging Face ``Trainer``, tuned by lrsearch.

Each integration builds the ``train(ctx)`` function a study file names (``loop =
"pkg.module:train"``) from what you already have: a LightningModule and LightningDataModule
(:func:`lightning_loop`), or a model factory, ``TrainingArguments`` and datasets
(:func:`hf_loop`). The sampled schedule drives every optimizer step, per-step losses and
per-epoch validation go to the trial, a pruned trial stops the trainer, and the study's range
test runs through the same trainer. ``lightning`` and ``transformers`` are optional
(``pip install "lrsearch[lightning]"`` / ``"lrsearch[transformers]"``): each is imported only
when its integration is first used. See docs/integrations.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from lrsearch.errors import WorkloadError

__all__ = ["hf_loop", "lightning_loop"]

# name -> (module, the optional dependency it needs, the extra that installs it)
_LAZY = {
    "lightning_loop": ("lrsearch.integrations._lightning", "lightning", "lightning"),
    "hf_loop": ("lrsearch.integrations._hf", "transformers", "transformers"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lrsearch.integrations' has no attribute {name!r}")
    module, needs, extra = _LAZY[name]
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != needs:
            raise
        raise WorkloadError(
            f"{name} needs {needs}, which is not installed: pip install 'lrsearch[{extra}]'"
        ) from None
    return getattr(loaded, name)


def __dir__() -> list[str]:
    return sorted(__all__)
