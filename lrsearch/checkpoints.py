"""Trial checkpoints: a trial's state at its last epoch boundary, where every worker can read.

A worker that is preempted or SIGKILLed loses its trial; the heartbeat fails it and Optuna
queues a retry with the same parameters (``failed_trial`` names the original). The retry, on
any worker, finds the original's last checkpoint here and goes on from it instead of from
epoch 1 (:func:`lrsearch.training.train` with ``resume=``), bit for bit on the CPU.

Where: a directory every worker can read, ``$LRSEARCH_CHECKPOINT_DIR`` (a shared mount on a
cluster), else ``checkpoints/`` next to the embedded journal file (one host's workers share
it). A plain directory rather than the MLflow run's artifacts: a file is replaced atomically
(temporary file + rename), read and deleted in one call, on any tracking setup (or none),
while an artifact store offers no rename or delete and the retry's run is not the dead one's.

When: at an epoch boundary, if the time trained since the last checkpoint is at least the last
checkpoint's cost divided by ``$LRSEARCH_CHECKPOINT_SHARE`` (default 0.01: checkpoints take at
most ~1% of training time). Long epochs (a GPU model's minutes) get one each; epochs of a
fraction of a second get one every few, so a preempted trial loses at most about a hundred
times a checkpoint's cost, plus the epoch it was in. A trial's first checkpoint waits the same
way for the cost of one measured by the worker's earlier trials (same model, same size); a
worker's first trial checkpoints its first epoch, whose cost is not known yet. A snapshot
(a copy of the model and optimizer) is taken only for a checkpoint that is due, and only it
holds up training: the file is written on a background thread (serializing, fsync, rename),
whose time counts against the share too; the trial's end (or preemption) waits for it.

Layout: ``<root>/<study>/trial-<original number>/epoch-<k>.pt``; a new checkpoint is written
beside the old one and the old one removed, so a reader always finds a whole file. The files
hold tensors and plain Python values only and are read with ``weights_only=True``: a shared
directory is no reason to unpickle arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrsearch.errors import ConfigError
from lrsearch.training import EpochInfo, Snapshot

__all__ = [
    "ENV",
    "SHARE_ENV",
    "TrialCheckpoints",
    "checkpoint_root",
    "decode",
    "encode",
    "remove_stale",
]

ENV = "LRSEARCH_CHECKPOINT_DIR"
"""Where trial checkpoints go; ``off`` (or empty) turns them off."""
SHARE_ENV = "LRSEARCH_CHECKPOINT_SHARE"
"""The most of a trial's training time its checkpoints may take (default 0.01; 1: every epoch)."""

FORMAT = 1
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.pt$")


def checkpoint_root(storage_url: str) -> Path | None:
    """The checkpoint directory for a study on ``storage_url``, or None (no checkpoints).

    ``$LRSEARCH_CHECKPOINT_DIR`` where set (``off`` turns checkpoints off); else, for the
    embedded journal file, ``checkpoints/`` beside it; else None: a database's workers may be
    on any host, and only the operator knows a directory they all share.
    """
    configured = os.environ.get(ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off") else Path(configured)
    if storage_url.startswith("journal:"):
        return Path(storage_url.removeprefix("journal:")).parent / "checkpoints"
    return None


def encode(snapshot: Snapshot) -> dict[str, Any]:
    """``snapshot`` as tensors and plain values (what ``torch.load(weights_only=True)`` reads)."""
    fields = {f.name: getattr(snapshot, f.name) for f in dataclasses.fields(snapshot)}
    fields["history"] = [dataclasses.asdict(e) for e in snapshot.history]
    fields["cuda_rng"] = None if snapshot.cuda_rng is None else list(snapshot.cuda_rng)
    if snapshot.np_rng is not None:
        kind, keys, pos, has_gauss, gauss = snapshot.np_rng
        fields["np_rng"] = [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos]
        fields["np_rng"] += [has_gauss, gauss]
    if snapshot.py_rng is not None:
        version, state, gauss = snapshot.py_rng
        fields["py_rng"] = [version, list(state), gauss]
    return fields


def decode(fields: Mapping[str, Any]) -> Snapshot:
    """The :class:`Snapshot` that :func:`encode` made ``fields`` of."""
    values = dict(fields)
    values["history"] = tuple(EpochInfo(**e) for e in values["history"])
    if values.get("cuda_rng") is not None:
        values["cuda_rng"] = tuple(values["cuda_rng"])
    if values.get("np_rng") is not None:
        kind, keys, pos, has_gauss, gauss = values["np_rng"]
        values["np_rng"] = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    if values.get("py_rng") is not None:
        version, state, gauss = values["py_rng"]
        values["py_rng"] = (version, tuple(state), gauss)
    return Snapshot(**values)


class TrialCheckpoints:
    """One trial's checkpoints: save at each epoch boundary, load the last, remove at the end.

    Args:
        root: the checkpoint directory (:func:`checkpoint_root`).
        study: the study's name.
        origin: the trial's original number (a retry's ``failed_trial``, else its own).
        identity: what a checkpoint must match to be resumed (parameters and seed): a
            checkpoint of anything else is ignored.
        expected_s: what one save is expected to cost (seconds: the worker's earlier trials'
            :meth:`stats`), so that the first one also waits for its share; 0: unknown, the
            first epoch gets one.
    """

    def __init__(
        self,
        root: Path,
        study: str,
        origin: int,
        identity: Mapping[str, Any],
        *,
        expected_s: float = 0.0,
    ) -> None:
        self.directory = root / re.sub(r"[^A-Za-z0-9._-]", "_", study) / f"trial-{origin}"
        self.identity = {k: _plain(v) for k, v in identity.items()}
        self.saves = 0
        self.seconds = 0.0
        self.bytes = 0
        self.share = _share()
        self._last_cost = expected_s
        self._last_end = time.perf_counter()
        self._warned = False
        self._writing: threading.Thread | None = None

    def due(self) -> bool:
        """Whether a checkpoint now keeps within its share of the training time (and the
        previous one is written)."""
        if self.share >= 1:
            return True  # every epoch, whatever it costs
        if self._writing is not None and self._writing.is_alive():
            return False
        trained = time.perf_counter() - self._last_end
        return trained * self.share >= self._last_cost

    def save(self, take: Callable[[], Snapshot]) -> None:
        """When :meth:`due`, take a snapshot and write it, atomically, in the background.

        Only the snapshot (a copy of the state) holds up training; the writing (serializing,
        fsync, rename, dropping the older ones) runs on a thread, and its time counts against
        the share as well. A failed write only warns.
        """
        if not self.due():
            return
        self.wait()  # share 1: the previous one is written first, whatever it takes
        started = time.perf_counter()
        snapshot = take()
        self._last_end = time.perf_counter()  # training goes on from here
        self._writing = threading.Thread(
            target=self._write,
            args=(snapshot, started),
            name=f"lrsearch-checkpoint-{self.directory.name}",
            daemon=True,  # a write stuck on a shared mount must not keep the process alive
        )
        self._writing.start()

    def wait(self) -> None:
        """Until the checkpoint being written (if any) is on disk."""
        if self._writing is not None:
            self._writing.join()
            self._writing = None

    def _write(self, snapshot: Snapshot, started: float) -> None:
        final = self.directory / f"epoch-{snapshot.epoch}.pt"
        tmp = self.directory / f".epoch-{snapshot.epoch}.{os.getpid()}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            payload = {"format": FORMAT, "identity": self.identity, "snapshot": encode(snapshot)}
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())  # whole on disk before it has the name a reader looks for
            os.replace(tmp, final)
            for older in self._files():
                if older[0] < snapshot.epoch:
                    older[1].unlink(missing_ok=True)
            size = final.stat().st_size
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._warn(f"trial checkpoint not written to {final}: {exc}")
            return
        self._last_cost = time.perf_counter() - started
        self.saves += 1
        self.seconds += self._last_cost
        self.bytes = size

    def load(self) -> Snapshot | None:
        """The latest whole checkpoint of this trial with the same identity, or None."""
        for _, path in sorted(self._files(), reverse=True):
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # a torn or foreign file: try the one before
                self._warn(f"trial checkpoint {path} unreadable, skipped: {exc}")
                continue
            if payload.get("format") == FORMAT and payload.get("identity") == self.identity:
                return decode(payload["snapshot"])
        return None

    def remove(self) -> None:
        """Delete this trial's checkpoints (the trial has ended)."""
        self.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def stats(self) -> dict[str, float]:
        """What checkpointing cost this trial: saves, seconds per save (the snapshot and its
        writing), bytes of the last; once the one being written is on disk."""
        self.wait()
        if not self.saves:
            return {}
        per_save = round(self.seconds / self.saves, 6)
        return {"checkpoints": self.saves, "checkpoint_s": per_save, "checkpoint_bytes": self.bytes}

    def _files(self) -> list[tuple[int, Path]]:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        found = (_EPOCH_FILE.match(n) for n in names)
        return [(int(m.group(1)), self.directory / m.group(0)) for m in found if m]

    def _warn(self, message: str) -> None:
        if not self._warned:
            print(f"warning: {message}", file=sys.stderr)
            self._warned = True


def remove_stale(root: Path, study: str, live: set[int]) -> list[int]:
    """Delete the checkpoints of a study's trials that no trial will resume; their numbers.

    A trial's own end removes its checkpoints; a lost trial's stay for its retry. When no
    retry will run (the budget was full, or the retries ran out), nothing else would remove
    them: ``live`` are the original numbers of the trials still RUNNING or WAITING.
    """
    directory = root / re.sub(r"[^A-Za-z0-9._-]", "_", study)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        match = re.fullmatch(r"trial-(\d+)", name)
        if match and int(match.group(1)) not in live:
            shutil.rmtree(directory / name, ignore_errors=True)
            removed.append(int(match.group(1)))
    return sorted(removed)


def _share() -> float:
    raw = os.environ.get(SHARE_ENV, "0.01")
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise ConfigError(
            f"{SHARE_ENV} must be a share of the training time in (0, 1], got {raw!r} — fix: "
            "e.g. 0.01 (checkpoints take at most 1%), or 1 (one every epoch)"
        )
    return share


def _plain(value: Any) -> Any:
    """A parameter as a plain value (floats stay floats: they must compare exactly)."""
    if isinstance(value, np.generic):
        return value.item()
    return value
