"""Artificial noise injection with per-position labels (protocol.md §5).

Every injector takes preprocessed ``Interactions`` (one chronological row per user), uses its
own ``numpy.random.default_rng(seed)`` and returns a NEW ``Interactions`` whose
``sequences.noise`` holds int8 labels (1 = injected). Labels already present (e.g. the
synthetic generator's planted noise) are kept: the result is their union with the injection.

Kinds (``NoiseConfig.kind``):

* ``none``: data unchanged.
* ``replace`` (LLM4DSR, §5.1): each eligible position is independently, with probability
  ``alpha``, replaced by an item drawn uniformly from ``1..n_items``. **Label 1 marks an
  injection event**, not a changed item: a draw can return the original item (probability
  1/n_items) and is still labelled 1. Uniforms are drawn for every position and compared with
  ``alpha``, so for one seed the injected set at alpha=0.1 is a subset of the set at 0.2.
  Eligible positions: split ``loo`` — ``s_1..s_{n-1}`` (``protect_valid`` also spares
  ``s_{n-1}``); split ``window`` — every position, as LLM4DSR does before windowing; the
  window split then restores the test-window targets from ``meta['pre_noise_items']``
  (training and validation targets stay noisy, history positions stay noisy everywhere).
* ``steam`` (§5.2): keep / delete / insert walk over the history part ``s_1..s_{n-2}``;
  see :func:`steam_noise`. Defined for the leave-one-out split only.
* ``target_flip`` (§5.3): not a rewrite of the sequences (a flipped target is not an input),
  so nothing happens here; :func:`flip_targets` draws the flips on the TRAIN split, and the
  build stores them as ``SplitData.meta['target_flip']`` for prefix-instance training.
"""
from __future__ import annotations

from dataclasses import replace as dc_replace

import numpy as np

from benchmark.config import ConfigError, NoiseConfig
from benchmark.data.raw import Interactions
from benchmark.data.sequences import Sequences

NOISE_KINDS = ("none", "replace", "steam", "target_flip")
STEAM_MAX_LEN = 58  # STEAM: modified_max_seqs_len (60) - 2; no insertion once a history is this long
STEAM_MAX_DELETE_RUN = 5  # STEAM: max_insert_num; a deletion is allowed while fewer than 5 were deleted


def inject_noise(inter: Interactions, cfg: NoiseConfig, split: str = "loo") -> Interactions:
    """Apply the noise of ``cfg`` (see module docstring) for a dataset split by ``split``."""
    kind = cfg.kind
    if kind not in NOISE_KINDS:
        raise ConfigError(f"dataset.noise.kind={kind!r}; expected one of {', '.join(NOISE_KINDS)}")
    if kind in ("none", "target_flip"):
        return inter
    if kind == "replace":
        return replace_noise(inter, cfg.alpha, cfg.seed, protect_valid=cfg.protect_valid, split=split)
    if split != "loo":
        raise ConfigError(
            f"dataset.noise.kind=steam with dataset.split={split!r}: the STEAM corruption spares the "
            "validation and test items of a leave-one-out split; use dataset.split=loo"
        )
    return steam_noise(inter, cfg.seed, keep=cfg.keep, delete=cfg.delete, insert=cfg.insert)


def _base_labels(seqs: Sequences) -> np.ndarray:
    return np.zeros(len(seqs.items), np.int8) if seqs.noise is None else seqs.noise.copy()


def replace_noise(
    inter: Interactions, alpha: float, seed: int, protect_valid: bool = False, split: str = "loo"
) -> Interactions:
    """Random replacement (protocol.md §5.1). Returns new Interactions with labels and
    ``meta['pre_noise_items']`` (int64 ``[nnz]``, the items before injection)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"dataset.noise.alpha={alpha}; expected a probability in [0, 1]")
    if split not in ("loo", "window"):
        raise ConfigError(f"dataset.split={split!r}; expected loo or window")
    seqs = inter.sequences
    nnz = len(seqs.items)
    rng = np.random.default_rng(seed)
    u = rng.random(nnz)
    draws = rng.integers(1, inter.n_items + 1, size=nnz)
    if split == "loo":
        from_end = np.repeat(seqs.lengths, seqs.lengths) - 1 - seqs.position_in_row  # 0 = s_n
        eligible = from_end >= (2 if protect_valid else 1)
    else:
        eligible = np.ones(nnz, dtype=bool)
    hit = eligible & (u < alpha)
    labels = _base_labels(seqs)
    labels[hit] = 1
    noisy = Sequences(
        np.where(hit, draws, seqs.items), seqs.offsets.copy(), seqs.users.copy(), labels,
        None if seqs.timestamps is None else seqs.timestamps.copy(),
    )
    meta = {**inter.meta, "pre_noise_items": seqs.items.copy()}
    return dc_replace(inter, sequences=noisy, meta=meta)


# ---------------------------------------------------------------------------- unseen items
def distinct_items(seqs: Sequences, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's distinct items, ascending, as CSR ``(items [m], offsets [n_rows + 1])``."""
    keys = np.unique(seqs.row_of_position * (n_items + 1) + seqs.items)
    counts = np.bincount(keys // (n_items + 1), minlength=seqs.n_rows)
    offsets = np.zeros(seqs.n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return keys % (n_items + 1), offsets


def nth_unseen(seen: np.ndarray, seen_offsets: np.ndarray, rows: np.ndarray, j: np.ndarray, n_items: int) -> np.ndarray:
    """Item id of the ``j``-th (0-based, ascending) item of ``1..n_items`` NOT in row ``rows``'s
    seen set (CSR from :func:`distinct_items`). ``rows``, ``j``: int64 ``[m]``; requires
    ``j < n_items - |seen(row)|``. Vectorised with one ``searchsorted``."""
    counts = np.diff(seen_offsets)
    rank = np.arange(len(seen)) - np.repeat(seen_offsets[:-1], counts)
    below = seen - 1 - rank  # unseen items smaller than each seen item; non-decreasing in a row
    stride = n_items + 2
    keys = np.repeat(np.arange(len(counts)), counts) * stride + below
    n_seen_below = np.searchsorted(keys, rows * stride + j, side="right") - seen_offsets[rows]
    return j + 1 + n_seen_below


def _distinct_indices(rng: np.random.Generator, rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """For slots ``rows [m]``, indices in ``[0, pool[row])`` that are distinct within each row
    (uniform sampling without replacement; duplicates are redrawn). Needs
    ``#slots(row) <= pool[row]``."""
    j = rng.integers(0, pool[rows]) if len(rows) else np.zeros(0, np.int64)
    stride = int(pool.max(initial=0)) + 1
    while len(rows):
        keys = rows * stride + j
        order = np.argsort(keys, kind="stable")
        dup = np.zeros(len(rows), dtype=bool)
        dup[order[1:]] = keys[order[1:]] == keys[order[:-1]]
        if not dup.any():
            break
        j[dup] = rng.integers(0, pool[rows[dup]])
    return j


# ---------------------------------------------------------------------------- STEAM
def steam_noise(
    inter: Interactions,
    seed: int,
    keep: float = 0.8,
    delete: float = 0.1,
    insert: float = 0.1,
    max_len: int = STEAM_MAX_LEN,
    max_delete_run: int = STEAM_MAX_DELETE_RUN,
    rng: np.random.Generator | None = None,
) -> Interactions:
    """STEAM keep / delete / insert corruption of each user's ``s_1..s_{n-2}`` (protocol.md §5.2,
    steam.md §3/§7); ``s_{n-1}, s_n`` are appended untouched.

    Per user, a pointer walks the history; each turn draws ``r ~ U(0, 1)``:

    * ``r <= keep``: keep the current item, advance.
    * ``keep < r <= keep + delete`` and allowed (current length > 1, fewer than
      ``max_delete_run`` deleted in this run, not the last history item): delete it, advance,
      and enter a run: while the following draws are allowed deletions, delete further items;
      the first other draw keeps the current item unconditionally (as the reference does), so a
      run has 1..``max_delete_run`` items and is always followed by a kept item.
    * ``r > keep + delete`` and allowed (length < ``max_len``, the user still has
      never-interacted items): insert an item before the current one, drawn without
      replacement from the items the user NEVER interacted with (valid/test included), label 1;
      do not advance, so insertions chain.
    * a branch that is not allowed is redrawn.

    "Current length" is the history length after the edits so far plus the items still ahead.
    Users with fewer than 3 items are unchanged. Vectorised over users: the loop runs over
    walk steps, all active users at once (one ``rng.random(n_active)`` per step; ``rng``
    defaults to ``default_rng(seed)`` and may be any object with numpy's ``random`` and
    ``integers``, e.g. a scripted one in tests).

    Returns new Interactions: ``sequences`` corrupted (noise labels: inserted 1, kept items keep
    their previous label; inserted items take the timestamp of the item they precede), and
    ``meta['steam_deleted'] = {'items': int64 [n_del], 'before': int64 [n_del]}`` — every
    deleted item, chronological, with the flat index (into the NEW ``sequences.items``) of the
    kept item its run preceded; ``np.bincount(before, minlength=nnz)`` is the number of items
    missing immediately before each position.
    """
    probs = np.array([keep, delete, insert], dtype=np.float64)
    if (probs < 0).any() or abs(probs.sum() - 1.0) > 1e-6 or keep <= 0:
        raise ConfigError(
            f"dataset.noise.keep/delete/insert = {keep}/{delete}/{insert}; expected non-negative "
            "probabilities summing to 1 with keep > 0 (the walk must be able to advance)"
        )
    t_keep, t_del = keep, keep + delete
    seqs, n_items = inter.sequences, inter.n_items
    rng = np.random.default_rng(seed) if rng is None else rng
    n_users = seqs.n_rows
    start = seqs.offsets[:-1]
    hist = np.maximum(seqs.lengths - 2, 0)
    seen, seen_off = distinct_items(seqs, n_items)
    pool = n_items - np.diff(seen_off)

    pos = np.zeros(n_users, np.int64)  # raw pointer into the history part
    cur = hist.copy()  # current length
    run = np.zeros(n_users, np.int64)  # items deleted in the current run
    n_ins = np.zeros(n_users, np.int64)
    deleted = np.zeros(len(seqs.items), dtype=bool)
    ins_rows, ins_anchor, ins_step = [], [], []
    active = np.nonzero(pos < hist)[0]
    step = 0
    while len(active):
        a = active
        r = rng.random(len(a))
        in_run = run[a] > 0
        can_del = (cur[a] > 1) & (run[a] < max_delete_run) & (pos[a] != hist[a] - 1)
        do_del = (r > t_keep) & (r <= t_del) & can_del
        do_keep = np.where(in_run, ~do_del, r <= t_keep)
        do_ins = ~in_run & (r > t_del) & (cur[a] < max_len) & (n_ins[a] < pool[a])

        d = a[do_del]
        deleted[start[d] + pos[d]] = True
        run[d] += 1
        cur[d] -= 1
        pos[d] += 1
        k = a[do_keep]
        run[k] = 0
        pos[k] += 1
        s = a[do_ins]
        ins_rows.append(s)
        ins_anchor.append(start[s] + pos[s])
        ins_step.append(np.full(len(s), step, np.int64))
        n_ins[s] += 1
        cur[s] += 1
        step += 1
        active = a[pos[a] < hist[a]]

    ins_rows_a = np.concatenate(ins_rows) if ins_rows else np.zeros(0, np.int64)
    ins_anchor_a = np.concatenate(ins_anchor) if ins_anchor else np.zeros(0, np.int64)
    ins_step_a = np.concatenate(ins_step) if ins_step else np.zeros(0, np.int64)
    j = _distinct_indices(rng, ins_rows_a, pool)
    ins_items = nth_unseen(seen, seen_off, ins_rows_a, j, n_items)

    kept = np.nonzero(~deleted)[0]
    anchor = np.concatenate([kept, ins_anchor_a])
    sub = np.concatenate([np.full(len(kept), np.iinfo(np.int64).max), ins_step_a])
    order = np.lexsort((sub, anchor))  # insertions just before their anchor, in walk order
    rows = np.concatenate([seqs.row_of_position[kept], ins_rows_a])[order]
    labels = np.concatenate([_base_labels(seqs)[kept], np.ones(len(ins_items), np.int8)])[order]
    ts = None
    if seqs.timestamps is not None:
        ts = np.concatenate([seqs.timestamps[kept], seqs.timestamps[ins_anchor_a]])[order]
    out = Sequences.from_lengths(
        np.concatenate([seqs.items[kept], ins_items])[order],
        np.bincount(rows, minlength=n_users),
        seqs.users.copy(),
        noise=labels,
        timestamps=ts,
    )
    new_index = np.empty(len(order), np.int64)
    new_index[order] = np.arange(len(order))
    del_flat = np.nonzero(deleted)[0]
    before = new_index[np.searchsorted(kept, del_flat)]  # the next kept item (same user)
    meta = {**inter.meta, "steam_deleted": {"items": seqs.items[del_flat], "before": before}}
    return dc_replace(inter, sequences=out, meta=meta)


# ---------------------------------------------------------------------------- target flips
def flip_targets(train: Sequences, full: Sequences, n_items: int, rate: float, seed: int) -> np.ndarray:
    """Target flips for prefix-instance training (protocol.md §5.3, said.md §6).

    Every training target (positions ``t >= 1`` of each train row) is flipped independently with
    probability ``rate`` to an item drawn uniformly from the items its user never interacted
    with (in ``full``, one row per user: all of ``s_1..s_n``). Inputs are untouched.

    Returns int64 ``[len(train.items)]``: the replacement target, 0 where the target is kept
    (always 0 at row starts, which are never targets). ``flips > 0`` are the noise labels.
    """
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"dataset.noise.alpha={rate} (target_flip rate); expected a probability in [0, 1]")
    rng = np.random.default_rng(seed)
    u = rng.random(len(train.items))
    hit = (train.position_in_row >= 1) & (u < rate)
    row_of_user = np.full(int(full.users.max(initial=0)) + 1, -1, np.int64)
    row_of_user[full.users] = np.arange(full.n_rows)
    seen, seen_off = distinct_items(full, n_items)
    pool = n_items - np.diff(seen_off)
    rows = row_of_user[train.users[train.row_of_position[hit]]]
    if (rows < 0).any():
        raise ValueError("flip_targets: a train row's user has no row in the full sequences")
    hit_idx = np.nonzero(hit)[0]
    possible = pool[rows] > 0  # a user who interacted with every item cannot be flipped
    out = np.zeros(len(train.items), np.int64)
    j = rng.integers(0, np.maximum(pool[rows], 1))
    out[hit_idx[possible]] = nth_unseen(seen, seen_off, rows[possible], j[possible], n_items)
    return out
