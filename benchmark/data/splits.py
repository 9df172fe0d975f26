"""Train / validation / test splits (protocol.md §3), as index arithmetic on CSR sequences.

Each split is computed as a :class:`SplitIndex` — for every output position, the flat index
of the source position in ``Interactions.sequences`` — and then materialised by one gather,
so noise labels and timestamps travel with every position, and any per-position side data
(e.g. STEAM's deleted runs) can be mapped with :func:`occurrences`.

* :func:`leave_one_out`: train ``s_1..s_{n-2}``; valid history ``s_1..s_{n-2}`` → ``s_{n-1}``;
  test history ``s_1..s_{n-1}`` → ``s_n``. Users with 1 or 2 items have no evaluation
  instance and contribute their whole sequence as a train row; users with 0 items are skipped.
  Split ``loo_valid_in_train`` (reproduction only) trains on ``s_1..s_{n-1}``: the
  validation target is also a training target, as in the IADSR reference code.
* :func:`sliding_window`: LLM4DSR windows (llm4dsr.md §1.5), sorted globally by the time of
  their last item (stable: ties keep user order, then window order), cut 80/10/10 by count
  (``int(T * 0.8)``, ``int(T * 0.9)`` as in the reference). Windows of one item (users with a
  single interaction) have no history and are dropped. If the data carries
  ``meta['pre_noise_items']`` (replacement noise), test targets are restored to those items.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.data.raw import Interactions
from benchmark.data.sequences import EvalSet, Sequences


# loo_valid_in_train: leave-one-out whose training rows run through s_{n-1}, so the validation
# target is also trained on (the IADSR reference code's data; validation metrics are then
# in-sample, and a run must stop on its training loss: train.monitor=train/loss)
VALID_IN_TRAIN_SPLIT = "loo_valid_in_train"
LEAVE_ONE_OUT_SPLITS = ("loo", VALID_IN_TRAIN_SPLIT)


@dataclass
class Part:
    """Rows of a split as source flat indices.

    ``src`` int64 ``[nnz]`` (source flat index of each position), ``lengths`` int64 ``[n_rows]``,
    ``users`` int64 ``[n_rows]``, ``targets`` int64 ``[n_rows]`` source flat index of each row's
    target (evaluation parts only)."""

    src: np.ndarray
    lengths: np.ndarray
    users: np.ndarray
    targets: np.ndarray | None = None


@dataclass
class SplitIndex:
    train: Part
    valid: Part
    test: Part
    kind: str


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every (s, l), int64."""
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    row_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + np.arange(total, dtype=np.int64) - row_start


def leave_one_out_index(seqs: Sequences, valid_in_train: bool = False) -> SplitIndex:
    """Leave-one-out index (see module docstring) for one chronological row per user.
    ``valid_in_train``: training rows run through ``s_{n-1}`` (the validation target is also a
    training target, as in the IADSR reference code); validation and test rows are unchanged."""
    n = seqs.lengths
    start = seqs.offsets[:-1]
    ev = n >= 3
    train_len = np.where(ev, n - 1 if valid_in_train else n - 2, n)
    has_train = train_len > 0
    train = Part(_ranges(start[has_train], train_len[has_train]), train_len[has_train], seqs.users[has_train])
    s, m, u = start[ev], n[ev], seqs.users[ev]
    valid = Part(_ranges(s, m - 2), m - 2, u, targets=s + m - 2)
    test = Part(_ranges(s, m - 1), m - 1, u, targets=s + m - 1)
    return SplitIndex(train, valid, test, "loo")


def sliding_window_index(seqs: Sequences, window_size: int = 11, ratios=(0.8, 0.1, 0.1)) -> SplitIndex:
    """LLM4DSR sliding-window index (see module docstring). Needs ``seqs.timestamps``."""
    if window_size < 2:
        raise ValueError(f"dataset.window_size={window_size}; expected >= 2 (history + target)")
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or (r < 0).any() or abs(r.sum() - 1.0) > 1e-6:
        raise ValueError(f"sliding_window ratios={tuple(ratios)}; expected three non-negative shares summing to 1")
    if seqs.timestamps is None:
        raise ValueError("sliding_window: the sequences carry no timestamps; windows are ordered by time")
    n = seqs.lengths
    n_win = np.where(n >= 2, np.maximum(n - window_size + 1, 1), 0)
    row = np.repeat(np.arange(seqs.n_rows), n_win)
    k = np.arange(int(n_win.sum())) - np.repeat(np.cumsum(n_win) - n_win, n_win)
    last = np.minimum(window_size - 1, n[row] - 1) + k  # 0-based index of the window's last item
    w_len = np.minimum(last + 1, window_size)
    end = seqs.offsets[row] + last
    order = np.argsort(seqs.timestamps[end], kind="stable")
    end, w_len, users = end[order], w_len[order], seqs.users[row[order]]
    total = len(end)
    cut1, cut2 = int(total * r[0]), int(total * (r[0] + r[1]))

    def part(lo: int, hi: int, evaluation: bool) -> Part:
        e, ln, u = end[lo:hi], w_len[lo:hi], users[lo:hi]
        if not evaluation:
            return Part(_ranges(e - ln + 1, ln), ln, u)
        return Part(_ranges(e - ln + 1, ln - 1), ln - 1, u, targets=e)

    return SplitIndex(part(0, cut1, False), part(cut1, cut2, True), part(cut2, total, True), "window")


def gather(seqs: Sequences, part: Part) -> Sequences:
    """The rows of ``part`` as ``Sequences`` (items, labels and timestamps gathered)."""
    return Sequences.from_lengths(
        seqs.items[part.src],
        part.lengths,
        part.users,
        noise=None if seqs.noise is None else seqs.noise[part.src],
        timestamps=None if seqs.timestamps is None else seqs.timestamps[part.src],
    )


def materialize(inter: Interactions, index: SplitIndex) -> tuple[Sequences, EvalSet, EvalSet]:
    """``(train, valid, test)`` from a split index. Test targets come from
    ``meta['pre_noise_items']`` when present (never-corrupted test targets)."""
    seqs = inter.sequences
    clean = inter.meta.get("pre_noise_items")
    test_items = seqs.items if clean is None else np.asarray(clean)
    train = gather(seqs, index.train)
    valid = EvalSet(gather(seqs, index.valid), seqs.items[index.valid.targets])
    test = EvalSet(gather(seqs, index.test), test_items[index.test.targets])
    return train, valid, test


def leave_one_out(inter: Interactions) -> tuple[Sequences, EvalSet, EvalSet]:
    """Leave-one-out split (protocol.md §3.1) → ``(train, valid, test)``."""
    return materialize(inter, leave_one_out_index(inter.sequences))


def sliding_window(
    inter: Interactions, window_size: int = 11, ratios=(0.8, 0.1, 0.1)
) -> tuple[Sequences, EvalSet, EvalSet]:
    """LLM4DSR sliding-window split (protocol.md §3.2) → ``(train, valid, test)``; train rows
    are whole windows (every position after the first is a target)."""
    return materialize(inter, sliding_window_index(inter.sequences, window_size, ratios))


def occurrences(src: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where source positions appear in a split part.

    ``src`` int64 ``[nnz_part]`` (a ``Part.src``), ``positions`` int64 ``[m]`` source flat
    indices. Returns ``(which [k], flat [k])``: ``positions[which[i]]`` appears at part flat
    index ``flat[i]``; positions that appear several times (overlapping windows) are repeated,
    positions absent from the part are omitted."""
    order = np.argsort(src, kind="stable")
    sorted_src = src[order]
    lo = np.searchsorted(sorted_src, positions, side="left")
    hi = np.searchsorted(sorted_src, positions, side="right")
    counts = hi - lo
    which = np.repeat(np.arange(len(positions)), counts)
    flat = order[_ranges(lo, counts)]
    return which, flat


def subsample(ev: EvalSet, n: int = 5000, seed: int = 42) -> EvalSet:
    """``n`` evaluation rows drawn without replacement (seeded), in their original order; the
    whole set if it has at most ``n`` rows. (LLM4DSR's ``test_5000``; numpy's generator, so
    not the same rows as the reference's pandas sample.)"""
    if ev.history.n_rows <= n:
        return ev
    rows = np.sort(np.random.default_rng(seed).choice(ev.history.n_rows, size=n, replace=False))
    return EvalSet(ev.history.take_rows(rows), ev.targets[rows])
