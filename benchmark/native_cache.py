"""The native phase of transfer runs, shared between target backbones.

A transfer run (``mode = transfer from <native>``) first trains the denoiser with its native
backbone (STEAM: BERT4Rec; HSD/SSDRec on BERT4Rec: SASRec), exports its decisions, then trains
the target backbone on the exported data. The native phase does not depend on the target: it
reads the dataset, noise, denoiser, training and evaluation settings and the seed, and builds
the native backbone from its own defaults. Runs that agree on everything but the ``backbone``
section therefore repeat the same native phase; on Beauty STEAM's corrector is 53 of a cell's
63 minutes.

The first such run stores its native outcome under ``<runs_dir>/_native/<key>/``: the decisions
on the training sequences (and on the evaluation histories when the method denoises them), the
denoiser's report, and the random-number-generator state right after the exports. A later run
with the same key takes these instead of training, restores the generators, and continues
exactly as it would have after training the native model itself: its results equal those of an
uncached run bit for bit (``tests/test_native_cache.py``). A run that reaches a native phase
another process is training waits for it (a lock beside the directory) rather than training the
same model at the same time. ``train.share_native=false`` turns
the sharing off; it is not part of run ids. The key is the run id of the config with the
``backbone`` section replaced by the native backbone's name.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from benchmark.data.sequences import DenoisedSequences, Sequences

log = logging.getLogger(__name__)
CACHE_DIR = "_native"
_ARRAYS = ("keep", "replacement", "score", "insert_items", "insert_before")
_STAGES = ("train", "valid", "test")


def rng_state() -> dict:
    """The torch, CUDA, numpy and Python generators' states, as tensors and plain values (so a
    file holding them loads with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Undo to :func:`rng_state`'s snapshot."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])


_TRANSFER = "transfer from "


def transfer_mode(native: str) -> str:
    """The ``mode`` a transfer run records: ``transfer from <native backbone>``."""
    return _TRANSFER + native


def native_of_mode(mode: str | None) -> str | None:
    """The native backbone named by a run's ``mode``, or None when it is not a transfer run."""
    return mode[len(_TRANSFER):] if mode and mode.startswith(_TRANSFER) else None


def native_key(config: dict, native: str) -> str:
    """The cache key of a transfer run's native phase: the run id of ``config`` (a resolved run
    config as a dict) with its ``backbone`` section replaced by ``{"name": native}``."""
    from benchmark.config import run_id

    data = json.loads(json.dumps(config))
    data["backbone"] = {"name": native}
    return run_id(data)


@dataclass
class NativeOutcome:
    """What the run after a native phase reads from it: decisions per stage (``train`` always;
    ``valid``/``test`` when the method denoises evaluation histories), the denoiser's report,
    the generators' state after the exports, and where it came from."""

    decisions: dict[str, DenoisedSequences]
    report: dict | None
    rng: dict
    source: dict  # run_id, git_commit, seconds, torch_threads of the run that trained the native model

    def decide(self, history: Sequences, stage: str) -> DenoisedSequences | None:
        """``denoise_eval_histories``'s callback, answered from the stored decisions."""
        stored = self.decisions.get(stage)
        if stored is None:
            return None
        return _on(stored, history, stage)


def _on(stored: DenoisedSequences, source: Sequences, stage: str) -> DenoisedSequences:
    if len(stored.source.items) != len(source.items) or not np.array_equal(stored.source.items, source.items):
        raise ValueError(f"native cache: the stored {stage} decisions were made on other sequences")
    return DenoisedSequences(source, *(getattr(stored, name) for name in _ARRAYS))


class NativeCache:
    """One native phase's directory under ``<runs_dir>/_native/``."""

    def __init__(self, runs_root: Path, key: str) -> None:
        self.directory = Path(runs_root) / CACHE_DIR / key

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the key's lock (``<key>.lock`` beside the directory) for the body: a second run
        with the same key waits here, then finds the outcome stored, instead of training the
        same native model at the same time. The kernel drops the lock when its holder exits
        however it exits, so a crashed holder leaves the waiter to train it."""
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory.with_name(self.directory.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("%s: another run is training this native phase; waiting for it", self.directory)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self, train: Sequences) -> NativeOutcome | None:
        """The stored outcome (its training decisions re-attached to ``train``), or None when
        there is none or it cannot be read (then the run trains the native model itself)."""
        meta_file = self.directory / "outcome.json"
        if not meta_file.exists():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            decisions = {}
            for stage in meta["stages"]:
                with np.load(self.directory / f"{stage}.npz", allow_pickle=False) as z:
                    src = Sequences(z["items"], z["offsets"], z["users"])
                    decisions[stage] = DenoisedSequences(src, *(z[name] for name in _ARRAYS))
            decisions["train"] = _on(decisions["train"], train, "train")
            rng = torch.load(self.directory / "rng.pt", weights_only=True)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: unreadable (%s: %s); training the native model again", self.directory,
                        type(exc).__name__, exc)
            return None
        return NativeOutcome(decisions, meta["report"], rng, meta["source"])

    def save(self, outcome: NativeOutcome) -> None:
        """Store ``outcome`` atomically (written aside, then renamed into place); a directory
        another process stored first is kept (both hold the same outcome)."""
        if self.directory.exists():
            return
        tmp = self.directory.with_name(f".{self.directory.name}.{uuid.uuid4().hex}.tmp")
        tmp.mkdir(parents=True)
        try:
            for stage, d in outcome.decisions.items():
                np.savez(tmp / f"{stage}.npz", items=d.source.items, offsets=d.source.offsets, users=d.source.users,
                         **{name: getattr(d, name) for name in _ARRAYS})
            torch.save(outcome.rng, tmp / "rng.pt")
            meta = {"stages": sorted(outcome.decisions, key=_STAGES.index), "report": outcome.report,
                    "source": outcome.source}
            (tmp / "outcome.json").write_text(json.dumps(meta, indent=2, default=float))
            try:
                os.rename(tmp, self.directory)
            except OSError:  # stored meanwhile by a concurrent run
                pass
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
