"""Export of denoised training data and its reuse by other backbones (transfer protocol).

``save_denoised(dir, split, decisions)`` writes:

* ``decisions.npz``: the source training sequences (``items``, ``offsets``, ``users``,
  ``noise``) and the per-position ``keep``, ``replacement``, ``score`` plus insertions;
* ``<dataset>.inter``: the rewritten training sequences as a RecBole atomic file
  (``user_id:token item_id:token timestamp:float``; raw ids where known, timestamp = position);
* ``masks.tsv``: one line per source position (user, position, item, keep, replacement, score);
* ``MANIFEST.json`` (written last): sha256 and size of the three files and the provenance
  (``dataset``, plus what the caller passes: the producing run's id and config).

``load_denoised_split(dir, split)`` replaces ``split.train`` with the rewritten sequences,
after checking every file against the manifest (a corrupted or changed file is an
:class:`~benchmark.integrity.IntegrityError` naming it: an export is a result, not a cache, and
is never silently rebuilt) and that the stored source matches the split being loaded;
evaluation histories exported under ``<dir>/valid`` and ``<dir>/test`` (same layout) replace
those histories too. Exports written before manifests existed load with a warning.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

from benchmark.data.sequences import DenoisedSequences, Sequences, SplitData
from benchmark.integrity import IntegrityError, read_manifest, verify_files, write_manifest

log = logging.getLogger(__name__)
DECISIONS = "decisions.npz"


def _raw(ids: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    return idx.astype(str) if ids is None else np.asarray(ids, dtype=object)[idx].astype(str)


def save_denoised(directory: Path, split: SplitData, decisions: DenoisedSequences,
                  provenance: dict | None = None) -> Path:
    """Write the export of ``decisions`` (module docstring) into ``directory``; ``provenance``
    (JSON-ready) goes into its manifest. A manifest of an earlier export stays until the new
    one replaces it, so an interrupted rewrite fails verification instead of passing it."""
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
    tmp.replace(directory / DECISIONS)
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
    write_manifest(directory, [DECISIONS, f"{split.name}.inter", "masks.tsv"],
                   {"dataset": split.name, **(provenance or {})})
    return directory


def verify_export(directory: Path) -> dict | None:
    """Check ``directory``'s files against its manifest; returns the manifest (None for an
    export written before manifests, with a warning). Raises IntegrityError naming each
    changed file and how to re-create the export."""
    try:
        manifest = read_manifest(directory)
        if manifest is None:
            log.warning("%s: no %s (exported before checksums were recorded); its files are not verified",
                        directory, "MANIFEST.json")
            return None
        verify_files(directory, manifest)
    except IntegrityError as exc:
        raise IntegrityError(f"{exc}\n{_recreate_hint(directory)}") from exc
    return manifest


def _recreate_hint(directory: Path) -> str:
    run_dir = directory.parent.parent if directory.name in ("valid", "test") else directory.parent
    return (f"the exported data cannot be trusted; re-create it by running the configuration in "
            f"{run_dir / 'config.yaml'} again with --force")


def load_decisions(directory: Path) -> DenoisedSequences:
    """The decisions stored in ``directory`` (verified against its manifest)."""
    path = directory / DECISIONS
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `bench denoise` (or a run with a denoiser that exports) first")
    verify_export(directory)
    try:
        with np.load(path, allow_pickle=False) as z:
            noise = z["noise"] if len(z["noise"]) else None
            src = Sequences(z["items"], z["offsets"], z["users"], noise=noise)
            return DenoisedSequences(src, z["keep"], z["replacement"], z["score"], z["insert_items"], z["insert_before"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # in practice: exports without a manifest
        raise IntegrityError(f"{path}: unreadable ({type(exc).__name__}: {exc})\n{_recreate_hint(directory)}") from exc


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
