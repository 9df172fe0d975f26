"""Training and evaluation tensors built from CSR sequences, fully vectorised.

Training constructions (backbones.md §7):

* ``all_positions``: each training row is cut from its end into windows of ``L`` targets;
  window slot s holds input ``x_{t-1}`` and target ``x_t``. One forward pass per window
  trains every target (SASRec/GRU4Rec/Caser with causal states).
* ``prefix``: one instance per target ``x_t`` (t >= 1) with the most recent ``L`` items before
  it as input; the target sits in the last slot only.
* ``last_only``: one instance per row, the last item as target.
* ``windows``: each row cut from its end into windows of ``L`` items, no targets (BERT4Rec's
  cloze objective chooses its own).

Every construction also returns ``positions [n, L]``: the flat index in the source
``Sequences.items`` of the input item in each slot (-1 for padding), which lets denoisers key
per-position state (masks, scores) by absolute position.
"""
from __future__ import annotations

import numpy as np

from benchmark.data.sequences import EvalSet, Sequences


def _scatter_windows(seqs: Sequences, flat_idx: np.ndarray, inst: np.ndarray, slot: np.ndarray, n_inst: int, L: int):
    items = np.zeros((n_inst, L), dtype=np.int64)
    positions = np.full((n_inst, L), -1, dtype=np.int64)
    items[inst, slot] = seqs.items[flat_idx]
    positions[inst, slot] = flat_idx
    return items, positions


def _chunks(seqs: Sequences, L: int, first: int):
    """Cut each row's positions ``p >= first`` from the end into chunks of L.

    Returns flat indices of the covered positions, their instance ids, slots, the row of each
    instance and the instance count."""
    lengths = seqs.lengths
    pos_in_row = seqs.position_in_row
    row = seqs.row_of_position
    valid = pos_in_row >= first
    from_end = np.repeat(lengths, lengths) - 1 - pos_in_row  # 0 for the last item
    chunk = from_end // L
    slot = L - 1 - from_end % L
    n_chunks = np.where(lengths > first, (lengths - first + L - 1) // L, 0)
    chunk_base = np.concatenate([[0], np.cumsum(n_chunks)[:-1]])
    flat = np.nonzero(valid)[0]
    # instance id: chunks of a row in chronological order (oldest chunk first)
    inst = chunk_base[row[flat]] + (n_chunks[row[flat]] - 1 - chunk[flat])
    inst_row = np.repeat(np.arange(seqs.n_rows), n_chunks)
    return flat, inst, slot[flat], inst_row, int(n_chunks.sum())


def build_train_tensors(seqs: Sequences, L: int, mode: str, target_override: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Training arrays for ``mode`` (see module docstring).

    ``target_override`` (int64 ``[nnz]``, 0 = unchanged) replaces the item used as the
    *target* at a position while its use as an input is untouched (the target-flip noise of
    protocol.md §5.3).

    Returns ``items [n, L]``, ``targets [n, L]`` (0 = no loss), ``positions [n, L]``,
    ``users [n]`` and ``noise [n, L]`` (int8, only if ``seqs`` carries labels)."""
    if mode == "all_positions":
        # targets are positions >= 1; the input at the same slot is the previous position
        flat_t, inst, slot, inst_row, n = _chunks(seqs, L, first=1)
        targets = np.zeros((n, L), dtype=np.int64)
        targets[inst, slot] = _target_items(seqs, flat_t, target_override)
        items, positions = _scatter_windows(seqs, flat_t - 1, inst, slot, n, L)
    elif mode == "windows":
        flat, inst, slot, inst_row, n = _chunks(seqs, L, first=0)
        items, positions = _scatter_windows(seqs, flat, inst, slot, n, L)
        targets = np.zeros((n, L), dtype=np.int64)
    elif mode in ("prefix", "last_only"):
        pos_in_row = seqs.position_in_row
        row = seqs.row_of_position
        if mode == "prefix":
            tgt = np.nonzero(pos_in_row >= 1)[0]
        else:
            lengths = seqs.lengths
            tgt = (seqs.offsets[1:] - 1)[lengths >= 2]
        n = len(tgt)
        ctx_len = np.minimum(pos_in_row[tgt], L)
        total = int(ctx_len.sum())
        inst = np.repeat(np.arange(n), ctx_len)
        within = np.arange(total) - np.repeat(np.concatenate([[0], np.cumsum(ctx_len)[:-1]]), ctx_len)
        flat = np.repeat(tgt - ctx_len, ctx_len) + within
        slot = L - np.repeat(ctx_len, ctx_len) + within
        items, positions = _scatter_windows(seqs, flat, inst, slot, n, L)
        targets = np.zeros((n, L), dtype=np.int64)
        targets[:, -1] = _target_items(seqs, tgt, target_override)
        inst_row = row[tgt]
    else:
        raise ValueError(f"train.train_instances={mode!r}; expected all_positions, prefix, last_only or windows")
    out = {"items": items, "targets": targets, "positions": positions, "users": seqs.users[inst_row]}
    if seqs.noise is not None:
        out["noise"] = np.where(positions >= 0, seqs.noise[np.maximum(positions, 0)], 0).astype(np.int8)
    return out


def _target_items(seqs: Sequences, flat: np.ndarray, override: np.ndarray | None) -> np.ndarray:
    items = seqs.items[flat]
    if override is None:
        return items
    if len(override) != len(seqs.items):
        raise ValueError("target_override must align with the training sequences' items")
    return np.where(override[flat] > 0, override[flat], items)


def build_eval_tensors(ev: EvalSet, L: int) -> dict[str, np.ndarray]:
    """Evaluation arrays: ``items [n, L]`` (last L history items), ``targets [n]``,
    ``positions [n, L]``, ``users [n]``, ``lengths [n]``."""
    items, positions = ev.history.padded(L)
    return {
        "items": items,
        "targets": ev.targets,
        "positions": positions,
        "users": ev.history.users,
        "lengths": np.minimum(ev.history.lengths, L),
    }
