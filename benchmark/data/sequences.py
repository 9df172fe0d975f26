"""Core containers for sequential interaction data.

All containers store sequences in CSR layout (flat ``items`` array plus ``offsets``), so
every operation on them is a vectorised NumPy expression, never a per-user loop.

Conventions: item ids are ``1..n_items`` and 0 is padding; user ids are ``1..n_users``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Sequences:
    """A batch of variable-length item sequences in CSR layout.

    Attributes:
        items: int64 ``[nnz]``, concatenated sequences, oldest first.
        offsets: int64 ``[n_rows + 1]``; row ``r`` is ``items[offsets[r]:offsets[r+1]]``.
        users: int64 ``[n_rows]``, the user id of each row (rows may repeat a user, e.g. windows).
        noise: optional int8 ``[nnz]`` labels, 1 where the position was injected as noise.
        timestamps: optional float64 ``[nnz]``.
    """

    items: np.ndarray
    offsets: np.ndarray
    users: np.ndarray
    noise: np.ndarray | None = None
    timestamps: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items, dtype=np.int64)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.users = np.asarray(self.users, dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) != len(self.users) + 1:
            raise ValueError(
                f"Sequences: offsets has {len(self.offsets)} entries, expected n_rows + 1 = {len(self.users) + 1}"
            )
        if self.offsets[-1] != len(self.items):
            raise ValueError(f"Sequences: offsets[-1]={self.offsets[-1]} != len(items)={len(self.items)}")
        if self.noise is not None:
            self.noise = np.asarray(self.noise, dtype=np.int8)
            if len(self.noise) != len(self.items):
                raise ValueError("Sequences: noise labels must align with items")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_lists(cls, rows: list[list[int]], users=None, noise: list[list[int]] | None = None) -> "Sequences":
        """Build from Python lists (tests and small fixtures only)."""
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.array([i for r in rows for i in r], dtype=np.int64)
        users = np.arange(1, len(rows) + 1) if users is None else np.asarray(users)
        flat_noise = None if noise is None else np.array([x for r in noise for x in r], dtype=np.int8)
        return cls(items, offsets, users, flat_noise)

    @classmethod
    def from_lengths(cls, items: np.ndarray, lengths: np.ndarray, users: np.ndarray, **extra) -> "Sequences":
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(items, offsets, users, **extra)

    # ------------------------------------------------------------------ views
    @property
    def n_rows(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def row_of_position(self) -> np.ndarray:
        """int64 ``[nnz]``: the row index of every flat position."""
        return np.repeat(np.arange(self.n_rows), self.lengths)

    @property
    def position_in_row(self) -> np.ndarray:
        """int64 ``[nnz]``: 0-based index of every flat position inside its row."""
        return np.arange(len(self.items)) - np.repeat(self.offsets[:-1], self.lengths)

    def row(self, r: int) -> np.ndarray:
        return self.items[self.offsets[r] : self.offsets[r + 1]]

    def to_lists(self) -> list[list[int]]:
        return [self.row(r).tolist() for r in range(self.n_rows)]

    def select(self, mask: np.ndarray) -> "Sequences":
        """Keep the flat positions where ``mask`` is true (rows are kept, possibly empty)."""
        mask = np.asarray(mask, dtype=bool)
        counts = np.add.reduceat(mask.astype(np.int64), self.offsets[:-1]) if len(self.items) else np.zeros(self.n_rows, np.int64)
        counts = np.where(self.lengths == 0, 0, counts)
        return Sequences.from_lengths(
            self.items[mask],
            counts,
            self.users.copy(),
            noise=None if self.noise is None else self.noise[mask],
            timestamps=None if self.timestamps is None else self.timestamps[mask],
        )

    def take_rows(self, rows: np.ndarray) -> "Sequences":
        """Sub-select whole rows (vectorised gather)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        starts = self.offsets[rows]
        flat = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        return Sequences.from_lengths(
            self.items[flat],
            lengths,
            self.users[rows],
            noise=None if self.noise is None else self.noise[flat],
            timestamps=None if self.timestamps is None else self.timestamps[flat],
        )

    def truncate_to_last(self, max_len: int) -> "Sequences":
        """Keep each row's most recent ``max_len`` items."""
        keep = self.position_in_row >= np.repeat(self.lengths - max_len, self.lengths)
        return self.select(keep)

    def padded(self, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded matrix of the most recent ``max_len`` items.

        Returns ``(items [n_rows, max_len] int64, flat_index [n_rows, max_len] int64)``; the
        flat index points into ``self.items`` and is -1 at padding slots.
        """
        lengths = np.minimum(self.lengths, max_len)
        out = np.zeros((self.n_rows, max_len), dtype=np.int64)
        index = np.full((self.n_rows, max_len), -1, dtype=np.int64)
        total = int(lengths.sum())
        if total:
            row = np.repeat(np.arange(self.n_rows), lengths)
            within = np.arange(total) - np.repeat(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
            col = max_len - np.repeat(lengths, lengths) + within
            src = np.repeat(self.offsets[1:] - lengths, lengths) + within
            out[row, col] = self.items[src]
            index[row, col] = src
        return out, index


@dataclass
class EvalSet:
    """Evaluation instances: a history per row and one held-out target per row.

    ``history`` rows align with ``targets`` (int64 ``[n_rows]``)."""

    history: Sequences
    targets: np.ndarray

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.int64)
        if len(self.targets) != self.history.n_rows:
            raise ValueError("EvalSet: one target per history row expected")

    @property
    def users(self) -> np.ndarray:
        return self.history.users


TRAIN_ALIGNED_META = ("target_flip", "steam_deleted")


@dataclass
class SplitData:
    """A dataset after preprocessing, noise injection and splitting.

    ``train`` holds training sequences: every position t >= 1 of a row is a next-item target
    predicted from the items before it. ``item_text[i]`` is item i's text ('' for none; index 0
    is padding). ``protocol`` records how the split was made (printed with every result).
    """

    name: str
    train: Sequences
    valid: EvalSet
    test: EvalSet
    n_users: int
    n_items: int
    item_text: list[str]
    protocol: dict = field(default_factory=dict)
    item_raw_ids: np.ndarray | None = None
    user_raw_ids: np.ndarray | None = None
    # Per-position side data that is not part of the protocol record (arrays, not printed):
    # 'valid_target_noise' int8 [n_valid]; 'steam_deleted' {'items','before'} (before = flat
    # index into train.items); 'target_flip' int64 [len(train.items)] (0 = target unchanged);
    # synthetic data: 'item_cluster', 'user_clusters'. See benchmark/data/build.py.
    meta: dict = field(default_factory=dict)

    @property
    def has_noise_labels(self) -> bool:
        return self.train.noise is not None

    def with_train(self, train: Sequences, **protocol_extra) -> "SplitData":
        """A copy with new training sequences. Meta arrays aligned with the old training
        positions (``TRAIN_ALIGNED_META``) no longer apply and are dropped."""
        meta = {k: v for k, v in self.meta.items() if k not in TRAIN_ALIGNED_META}
        return replace(self, train=train, protocol={**self.protocol, **protocol_extra}, meta=meta)


@dataclass
class DenoisedSequences:
    """A data-level denoiser's decision for every flat position of some ``Sequences``.

    Attributes:
        source: the sequences the decisions refer to.
        keep: bool ``[nnz]``; False = remove the item.
        replacement: int64 ``[nnz]``; a non-zero value replaces the item (implies keep).
        score: float32 ``[nnz]``; higher = more likely noise (for ROC-style analyses).
        insert_items / insert_before: optional int64 ``[n_ins]`` arrays; item ``insert_items[k]``
            is inserted immediately before flat position ``insert_before[k]`` of ``source``
            (``insert_before == offsets[r+1]`` means "append at the end of row r" is NOT allowed;
            insertions always precede an existing position).
    """

    source: Sequences
    keep: np.ndarray
    replacement: np.ndarray | None = None
    score: np.ndarray | None = None
    insert_items: np.ndarray | None = None
    insert_before: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.source.items)
        self.keep = np.asarray(self.keep, dtype=bool)
        if self.keep.shape != (n,):
            raise ValueError(f"DenoisedSequences: keep has shape {self.keep.shape}, expected ({n},)")
        if self.replacement is None:
            self.replacement = np.zeros(n, dtype=np.int64)
        if self.score is None:
            self.score = (~self.keep).astype(np.float32)
        if self.insert_items is None:
            self.insert_items = np.zeros(0, dtype=np.int64)
            self.insert_before = np.zeros(0, dtype=np.int64)

    @property
    def flagged(self) -> np.ndarray:
        """bool ``[nnz]``: positions this denoiser changed (removed or replaced)."""
        return (~self.keep) | (self.replacement > 0)

    def apply(self) -> Sequences:
        """The rewritten sequences: replacements applied, removals dropped, insertions placed.

        Noise labels follow their items (inserted items get label 0)."""
        src = self.source
        items = np.where(self.replacement > 0, self.replacement, src.items)
        noise = src.noise
        n_ins = len(self.insert_items)
        if n_ins:
            # Sort key: insertions just before their anchor position (anchor - 0.5), stable.
            keys = np.concatenate([np.arange(len(items), dtype=np.float64), self.insert_before - 0.5])
            order = np.argsort(keys, kind="stable")
            all_items = np.concatenate([items, self.insert_items])[order]
            all_keep = np.concatenate([self.keep, np.ones(n_ins, bool)])[order]
            rows = np.concatenate([src.row_of_position, src.row_of_position[self.insert_before]])[order]
            all_noise = None if noise is None else np.concatenate([noise, np.zeros(n_ins, np.int8)])[order]
        else:
            all_items, all_keep, rows, all_noise = items, self.keep, src.row_of_position, noise
        counts = np.bincount(rows[all_keep], minlength=src.n_rows)
        return Sequences.from_lengths(
            all_items[all_keep],
            counts,
            src.users.copy(),
            noise=None if all_noise is None else all_noise[all_keep],
        )
