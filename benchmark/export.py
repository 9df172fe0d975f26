"""Export of denoised training data and its reuse by other backbones (transfer protocol).

``save_denoised(dir, split, decisions)`` writes:

* ``decisions.npz``: the source training sequences (``items``, ``offsets``, ``users``,
  ``noise``) and the per-position ``keep``, ``replacement``, ``score`` plus insertions;
* ``<dataset>.inter``: the rewritten training sequences as a RecBole atomic file
  (``user_id:token item_id:token timestamp:float``; raw ids where known, timestamp = position);
* ``masks.tsv``: one line per source position (user, position, item, keep, replacement, score).

``load_denoised_split(dir, split)`` replaces ``split.train`` with the rewritten sequences,
after checking that the stored source matches the split being loaded; evaluation histories
exported under ``<dir>/valid`` and ``<dir>/test`` (same layout) replace those histories too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from benchmark.data.sequences import DenoisedSequences, Sequences, SplitData


def _raw(ids: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    return idx.astype(str) if ids is None else np.asarray(ids, dtype=object)[idx].astype(str)


def save_denoised(directory: Path, split: SplitData, decisions: DenoisedSequences) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    src = decisions.source
    tmp = directory / "decisions.tmp.npz"
    np.savez_compressed(
        tmp,
        items=src.items, offsets=src.offsets, users=src.users,
        noise=src.noise if src.noise is not None else np.zeros(0, np.int8),
        keep=decisions.keep, replacement=decisions.replacement, score=decisions.score.astype(np.float32),
        insert_items=decisions.insert_items, insert_before=decisions.insert_before,
    )
    tmp.replace(directory / "decisions.npz")
    cleaned = decisions.apply()
    pl.DataFrame({
        "user_id:token": _raw(split.user_raw_ids, cleaned.users[cleaned.row_of_position]),
        "item_id:token": _raw(split.item_raw_ids, cleaned.items),
        "timestamp:float": cleaned.position_in_row.astype(np.float64),
    }).write_csv(directory / f"{split.name}.inter", separator="\t")
    pl.DataFrame({
        "user": src.users[src.row_of_position], "position": src.position_in_row, "item": src.items,
        "keep": decisions.keep.astype(np.int8), "replacement": decisions.replacement,
        "score": decisions.score.astype(np.float32),
    }).write_csv(directory / "masks.tsv", separator="\t")
    return directory


def load_decisions(directory: Path) -> DenoisedSequences:
    path = directory / "decisions.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `bench denoise` (or a run with a denoiser that exports) first")
    z = np.load(path)
    noise = z["noise"] if len(z["noise"]) else None
    src = Sequences(z["items"], z["offsets"], z["users"], noise=noise)
    return DenoisedSequences(src, z["keep"], z["replacement"], z["score"], z["insert_items"], z["insert_before"])


def load_denoised_split(directory: Path, split: SplitData) -> SplitData:
    decisions = load_decisions(directory)
    src = decisions.source
    if len(src.items) != len(split.train.items) or not np.array_equal(src.items, split.train.items):
        raise ValueError(
            f"{directory}: the exported decisions were made on different training data than "
            f"dataset '{split.name}' with this configuration (dataset, noise and split must match the denoising run)"
        )
    out = split.with_train(decisions.apply(), data_source=str(directory))
    return _load_eval_histories(directory, out)


def _load_eval_histories(directory: Path, split: SplitData) -> SplitData:
    """Apply exported evaluation-history decisions (``<dir>/valid``, ``<dir>/test``, written by
    ``benchmark.run.denoise_eval_histories``) when present."""
    from dataclasses import replace

    from benchmark.data.sequences import EvalSet

    changes = {}
    for stage in ("valid", "test"):
        sub = directory / stage
        if not (sub / "decisions.npz").exists():
            continue
        decisions = load_decisions(sub)
        history = getattr(split, stage).history
        if not np.array_equal(decisions.source.items, history.items) or not np.array_equal(decisions.source.offsets, history.offsets):
            raise ValueError(f"{sub}: the exported {stage} decisions were made on different {stage} histories")
        changes[stage] = EvalSet(decisions.apply(), getattr(split, stage).targets)
    return replace(split, **changes) if changes else split
