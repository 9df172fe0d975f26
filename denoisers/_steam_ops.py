"""Parameter-free tensor operations of STEAM (specs/steam.md §3, §4.3, §10), batched.

All sequences are left-padded ``[B, L]`` int64 tensors (0 = padding, items ``1..N``, the most
recent item in the last slot). Nothing here loops over users or positions:

* :func:`slice_batch` — a random contiguous sub-sequence of every row (the reference's
  ``create_sub_seqs``), re-left-aligned together with every other ``[B, L]`` tensor of a batch.
* :func:`corrupt` — the self-supervised keep / delete / insert corruption. The reference walks
  each sequence with a random draw per turn; here the same process is sampled per raw position:
  the number of insertions before a position is geometric, its delete decision comes from one
  of two independent draws (a fresh draw outside a deletion run, a continuation draw inside),
  and the deletion-run state is propagated by a parallel prefix composition of per-position
  state maps (``ceil(log2 L)`` gathers). Length and item-pool caps become a clamped cumulative
  sum (one ``cummin``). The result has the reference walk's distribution (tests compare them).
* :func:`apply_corrections` — keep / delete / insert decisions plus generated insertion lists
  → corrected sequences, by index arithmetic and one scatter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


# ---------------------------------------------------------------------------- helpers
def _shift_right(x: torch.Tensor, shift: torch.Tensor, fill: int) -> torch.Tensor:
    """Row-wise shift of ``x [B, L]`` (or ``[B, L, ...]``) to the right by ``shift [B]`` slots,
    filling vacated slots with ``fill``: ``out[b, j] = x[b, j - shift[b]]``."""
    B, L = x.shape[:2]
    src = torch.arange(L, device=x.device).unsqueeze(0) - shift.unsqueeze(1)
    ok = src >= 0
    idx = src.clamp(min=0)
    if x.dim() > 2:
        idx = idx.view(B, L, *([1] * (x.dim() - 2))).expand_as(x)
        ok = ok.view(B, L, *([1] * (x.dim() - 2)))
    out = torch.gather(x, 1, idx)
    return torch.where(ok, out, torch.full_like(out, fill))


def lengths_of(items: torch.Tensor) -> torch.Tensor:
    """Number of real (non-padding) slots per row, ``[B]`` int64."""
    return (items > 0).sum(1)


# ---------------------------------------------------------------------------- slicing
def slice_batch(batch: dict[str, torch.Tensor], max_len: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random contiguous sub-sequence of every row of ``batch['items'] [B, L]`` (left-padded).

    As the reference: start uniform over the row's positions, length uniform in
    ``1..max_len``, cut at the row's end. Every ``[B, L]`` tensor of the batch follows its items
    (``positions`` is filled with -1 outside the slice, everything else with 0); other entries
    are passed through. Empty rows stay empty."""
    items = batch["items"]
    B, L = items.shape
    n = lengths_of(items)
    dev = items.device
    u1 = torch.rand(B, device=dev, generator=generator)
    u2 = torch.rand(B, device=dev, generator=generator)
    start = torch.minimum((u1 * n).long(), (n - 1).clamp(min=0))  # relative to the row's first item
    length = 1 + torch.minimum((u2 * max_len).long(), torch.tensor(max_len - 1, device=dev))
    end = torch.minimum(start + length, n)
    m = end - start
    cut_tail = n - end  # items dropped after the slice: shift right by this much
    slot = torch.arange(L, device=dev).unsqueeze(0)
    inside = slot >= (L - m).unsqueeze(1)
    out = dict(batch)
    for key, value in batch.items():
        if not torch.is_tensor(value) or value.dim() != 2 or value.shape != (B, L):
            continue
        fill = -1 if key == "positions" else 0
        shifted = _shift_right(value, cut_tail, fill)
        out[key] = torch.where(inside, shifted, torch.full_like(shifted, fill))
    return out


# ---------------------------------------------------------------------------- corruption
@dataclass
class Corruption:
    """A corrupted batch (all left-padded to ``M`` slots).

    ``items [B, M]``: corrupted sequences. ``ops [B, M]``: 0 keep, 1 delete (a randomly
    inserted item), 2 insert (items were deleted right before this one). ``targets [B, M, K]``:
    at ops == 2, the deleted run most recent first, then ``eos`` if shorter than K, then 0.
    Diagnostics over the RAW slots ``[B, L]``: ``deleted`` (bool), ``inserted`` (items inserted
    before the slot), ``run`` (deleted items immediately before the slot, i.e. the state of the
    deletion run when the slot is reached)."""

    items: torch.Tensor
    ops: torch.Tensor
    targets: torch.Tensor
    deleted: torch.Tensor
    inserted: torch.Tensor
    run: torch.Tensor


def _compose_prefix(maps: torch.Tensor) -> torch.Tensor:
    """Inclusive prefix composition of per-slot state maps.

    ``maps [B, L, S]``: ``maps[b, t, s]`` = state after slot t given state s before it.
    Returns ``P [B, L, S]`` with ``P[b, t] = maps[b, t] ∘ … ∘ maps[b, 0]`` (Hillis–Steele scan,
    ``ceil(log2 L)`` gathers)."""
    B, L, S = maps.shape
    out = maps
    identity = torch.arange(S, device=maps.device).view(1, 1, S).expand(B, 1, S)
    d = 1
    while d < L:
        earlier = torch.cat([identity.expand(B, d, S), out[:, : L - d]], dim=1)  # P[t - d]
        out = torch.gather(out, 2, earlier)  # P[t] ∘ P[t - d]
        d *= 2
    return out


def _geometric(q: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Samples ``G`` with ``P(G >= g) = q**g`` (failures before the first stop), int64."""
    u = 1.0 - torch.rand(q.shape, device=q.device, generator=generator)  # (0, 1]
    logq = torch.log(q.clamp(min=1e-12))
    g = torch.floor(torch.log(u) / logq)
    return torch.where(q > 0, g, torch.zeros_like(g)).clamp(max=1 << 20).long()


def _sample_unseen(raw: torch.Tensor, n_items: int, k: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` distinct items per row drawn uniformly without replacement from the items NOT in
    the row of ``raw [B, L]``; returns ``(items [B, k], pool [B])`` (``pool`` = how many such
    items exist; entries beyond it are meaningless)."""
    B = raw.shape[0]
    scores = torch.rand(B, n_items + 1, device=raw.device, generator=generator)
    seen = torch.zeros(B, n_items + 1, dtype=torch.bool, device=raw.device)
    seen.scatter_(1, raw, True)
    seen[:, 0] = True
    scores = scores.masked_fill(seen, -1.0)
    pool = n_items + 1 - seen.sum(1)
    k = min(k, n_items)
    if k == 0:
        return torch.zeros(B, 0, dtype=torch.long, device=raw.device), pool
    return scores.topk(k, dim=1).indices, pool


def corrupt(
    raw: torch.Tensor,
    n_items: int,
    keep: float,
    delete: float,
    insert: float,
    max_len: int,
    max_run: int,
    eos: int,
    generator: torch.Generator | None = None,
) -> Corruption:
    """STEAM's random keep / delete / insert corruption of ``raw [B, L]`` (left-padded).

    Semantics (the reference walk, specs/steam.md §3): outside a deletion run, insertions before
    the current item are drawn with probability ``insert`` per turn until a keep/delete draw;
    that draw deletes with probability ``delete / (keep + delete)`` when deleting is allowed
    (not the row's last item; a redraw otherwise). Inside a run one draw decides: delete with
    probability ``delete`` while the run has fewer than ``max_run`` items and the item is not
    the last, else the item is kept and labelled "insert" with the run (most recent first, then
    ``eos``) as targets; no insertions happen inside a run. Insertions are refused (redrawn)
    once the current length reaches ``max_len`` or the row's unseen-item pool is exhausted;
    inserted items are distinct and never occur in the raw row.

    Returns a :class:`Corruption` with ``M = max_len`` slots (requires ``L <= max_len``)."""
    B, L = raw.shape
    dev = raw.device
    if L > max_len:
        raise ValueError(f"corrupt: raw sequences have {L} slots, more than max_len={max_len}")
    real = raw > 0
    n = real.sum(1)
    last = torch.zeros_like(real)
    last[:, -1] = True
    can_delete = real & ~last & (n > 1).unsqueeze(1)  # left padding: the last slot is the last item

    # --- deletions: per-slot state maps over run counts 0..max_run, then a prefix scan
    p_fresh = delete / (keep + delete)
    fresh_del = (torch.rand(B, L, device=dev, generator=generator) < p_fresh) & can_delete
    cont_del = (torch.rand(B, L, device=dev, generator=generator) < delete) & can_delete
    S = max_run + 1
    state = torch.arange(S, device=dev).view(1, 1, S)
    nxt_if_run = torch.where(cont_del.unsqueeze(-1) & (state < max_run), state + 1, torch.zeros_like(state))
    maps = torch.where(state == 0, fresh_del.long().unsqueeze(-1) * 1, nxt_if_run)  # [B, L, S]
    after = _compose_prefix(maps)[:, :, 0]  # run count after each slot, starting from state 0
    run = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=dev), after[:, :-1]], dim=1)
    deleted = after > 0
    kept = real & ~deleted

    # --- insertions: geometric counts at slots reached outside a run, capped by length and pool
    fresh = real & (run == 0)
    q = insert / (insert + keep + delete * can_delete.float())
    wanted = torch.where(fresh, _geometric(q, generator), torch.zeros(B, L, dtype=torch.long, device=dev))
    del_before = torch.cumsum(deleted.long(), 1) - deleted.long()
    max_ins_total = min(max_len, n_items)  # inserted items are distinct: at most n_items of them
    unseen, pool = _sample_unseen(raw, n_items, max_ins_total, generator)
    cap = torch.minimum(max_len - n.unsqueeze(1) + del_before, pool.unsqueeze(1))  # cumulative cap, non-decreasing
    G = torch.cumsum(wanted, 1)
    total_ins = G + torch.clamp(torch.cummin(cap - G, dim=1).values, max=0)
    inserted = total_ins - torch.cat([torch.zeros(B, 1, dtype=torch.long, device=dev), total_ins[:, :-1]], 1)

    # --- output layout: per raw slot, its insertions then the item itself (if kept)
    count = inserted + kept.long()
    end = torch.cumsum(count, 1)
    T = end[:, -1]
    base = (max_len - T).unsqueeze(1)
    items = torch.zeros(B, max_len, dtype=torch.long, device=dev)
    ops = torch.zeros_like(items)
    targets = torch.zeros(B, max_len, max_run, dtype=torch.long, device=dev)

    b_k, t_k = kept.nonzero(as_tuple=True)
    dst_k = (base + end - 1)[b_k, t_k]
    items[b_k, dst_k] = raw[b_k, t_k]
    run_k = run[b_k, t_k]
    ops[b_k, dst_k] = torch.where(run_k > 0, 2, 0)
    k_idx = torch.arange(max_run, device=dev).view(1, -1)
    src_slot = (t_k.unsqueeze(1) - 1 - k_idx).clamp(min=0)
    run_items = raw[b_k.unsqueeze(1), src_slot]  # the deleted run, most recent first
    tgt = torch.where(k_idx < run_k.unsqueeze(1), run_items, torch.zeros_like(run_items))
    tgt = torch.where((k_idx == run_k.unsqueeze(1)) & (run_k.unsqueeze(1) > 0), torch.full_like(tgt, eos), tgt)
    targets[b_k, dst_k] = tgt

    flat_counts = inserted.reshape(-1)
    n_total = int(flat_counts.sum())
    if n_total:
        slot_id = torch.repeat_interleave(torch.arange(B * L, device=dev), flat_counts)
        first = torch.cumsum(flat_counts, 0) - flat_counts
        j = torch.arange(n_total, device=dev) - first[slot_id]
        b_i, t_i = slot_id // L, slot_id % L
        dst_i = (base + end - kept.long() - inserted)[b_i, t_i] + j
        rank_in_row = (total_ins - inserted)[b_i, t_i] + j  # 0-based index of the insertion in its row
        items[b_i, dst_i] = unseen[b_i, rank_in_row]
        ops[b_i, dst_i] = 1
    return Corruption(items, ops, targets, deleted & real, inserted, run)


# ---------------------------------------------------------------------------- correction
def insertion_lengths(generated: torch.Tensor, eos: int) -> torch.Tensor:
    """Items before the first ``eos`` in each list ``generated [..., K]`` (K if none)."""
    K = generated.shape[-1]
    is_eos = generated == eos
    idx = torch.arange(K, device=generated.device).expand_as(generated)
    return torch.where(is_eos, idx, torch.full_like(idx, K)).min(-1).values


def apply_corrections(
    items: torch.Tensor,
    decisions: torch.Tensor,
    generated: torch.Tensor,
    eos: int,
    out_len: int,
    carry: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Corrected sequences from per-slot decisions.

    Args:
        items: ``[B, L]`` left-padded raw sequences.
        decisions: ``[B, L]`` 0 keep, 1 delete, 2 insert (padding slots are treated as keep).
        generated: ``[B, L, K]`` insertion lists, most recent first as the decoder emits them;
            read only where ``decisions == 2``, cut at the first ``eos``; must hold real items.
        out_len: slots of the result; longer corrected rows keep their most recent items.
        carry: optional ``[B, L]`` per-slot values (e.g. flat positions) to move along with
            kept items; inserted items get -1.

    Returns ``(corrected [B, out_len], carried [B, out_len] or None)``, left-padded. Each
    insertion list is placed, in chronological order (reversed), right before its item."""
    B, L = items.shape
    dev = items.device
    real = items > 0
    kept = real & (decisions != 1)
    ins_len = torch.where(real & (decisions == 2), insertion_lengths(generated, eos), torch.zeros_like(items))
    end = torch.cumsum(ins_len + kept.long(), 1)
    base = (out_len - end[:, -1]).unsqueeze(1)
    out = torch.zeros(B, out_len, dtype=torch.long, device=dev)
    moved = None if carry is None else torch.full((B, out_len), -1, dtype=carry.dtype, device=dev)

    dst = base + end - 1  # slot of each kept item
    b_k, t_k = (kept & (dst >= 0)).nonzero(as_tuple=True)
    out[b_k, dst[b_k, t_k]] = items[b_k, t_k]
    if moved is not None:
        moved[b_k, dst[b_k, t_k]] = carry[b_k, t_k]

    K = generated.shape[-1]
    j = torch.arange(K, device=dev).view(1, 1, K)
    dst_g = dst.unsqueeze(-1) - 1 - j  # generated j (0 = most recent) sits j + 1 slots before its item
    use = (j < ins_len.unsqueeze(-1)) & (dst_g >= 0)
    b_g, t_g, j_g = use.nonzero(as_tuple=True)
    out[b_g, dst_g[b_g, t_g, j_g]] = generated[b_g, t_g, j_g]
    return out, moved


def correction_stats(items: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
    """Counts ``[3]`` of keep / delete / insert decisions over the real slots of ``items``."""
    real = items > 0
    return torch.bincount(decisions[real], minlength=3)[:3]
