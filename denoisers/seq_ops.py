"""Vectorised slot operations shared by HSD and SSDRec (specs/hsd.md §9, ssdrec.md §6).

Layouts: the benchmark feeds **left-padded** ``[B, L]`` batches (most recent item in slot
``L-1``); the RecBole references compute on **right-padded** rows (items in slots
``0..n-1``). Every function here works on whole batches with index arithmetic, gathers and
sorts: no Python loop over rows or slots.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def left_to_right(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Move each row's last ``lengths[b]`` slots to the front.

    Args:
        x: ``[B, L, ...]`` left-padded (real entries in slots ``L-n..L-1``).
        lengths: int ``[B]``, real entries per row (``0 <= n <= L``).
    Returns ``[B, L, ...]`` right-padded: slot ``j < n`` holds left slot ``L-n+j``; the
    remaining slots hold the former padding slots (unchanged values)."""
    B, L = x.shape[:2]
    idx = (torch.arange(L, device=x.device).unsqueeze(0) + (L - lengths.to(torch.long)).unsqueeze(1)) % L
    return _gather_slots(x, idx)


def _gather_slots(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, j] = x[b, idx[b, j]]`` for ``x [B, L, ...]`` and ``idx [B, L]``."""
    if x.dim() == 2:
        return x.gather(1, idx)
    shape = idx.shape + x.shape[2:]
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(shape))


def compaction_order(keep: torch.Tensor) -> torch.Tensor:
    """Gather index ``[B, L]`` that moves kept slots to the right end, preserving their order.

    ``keep`` is bool ``[B, L]``. A stable sort on ``keep`` (False first) puts the dropped and
    padding slots on the left and the kept slots, in their original order, on the right, which
    is the benchmark's left-padded layout for the denoised sequence."""
    return torch.argsort(keep.to(torch.int8), dim=1, stable=True)


def compact_right(keep: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Apply :func:`compaction_order` of ``keep [B, L]`` to every ``[B, L, ...]`` tensor
    (gradients flow through the gather)."""
    order = compaction_order(keep)
    return [_gather_slots(t, order) for t in tensors]


def hard_gumbel(
    logits: torch.Tensor, tau: float, generator: torch.Generator | None = None, dim: int = -1
) -> torch.Tensor:
    """Straight-through hard Gumbel-softmax sample along ``dim``.

    Forward value: a one-hot of ``argmax(logits + g)`` with ``g ~ Gumbel(0, 1)`` (a sample from
    ``softmax(logits)``, whatever ``tau``); gradient: that of ``softmax((logits + g) / tau)``.
    Equivalent to ``F.gumbel_softmax(logits, tau, hard=True)`` but accepts a ``generator`` so
    that exported decisions can be seeded without touching the global RNG."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    gumbels = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    soft = F.softmax((logits + gumbels) / tau, dim=dim)
    index = soft.argmax(dim=dim, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(dim, index, 1.0)
    return hard - soft.detach() + soft


def zero_largest(values: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, L]``: the ``k[b]`` largest ``values[b]`` among the ``valid`` slots of each row
    (ties broken by the sort). A rank mask replaces the reference's per-row Python loop."""
    masked = values.detach().masked_fill(~valid, float("-inf"))
    order = torch.argsort(masked, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
    return (rank < k.unsqueeze(1)) & valid


def insert_two(ids: torch.Tensor, p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Right-padded insertion ``[s_0..s_{p-1}, a, s_p, b, s_{p+1}, ...]`` truncated to ``L``.

    Args:
        ids: ``[B, L]`` (or ``[B, L, H]``) right-padded rows.
        p: int ``[B]``, insertion slot, ``0 <= p <= L-3``.
        a, b: ``[B]`` (or ``[B, H]``) values placed at slots ``p`` and ``p+2``.
    Index arithmetic: output slot ``t`` reads ``t - (t > p) - (t > p+1)``; the last two source
    slots fall off (the reference's list construction, vectorised)."""
    B, L = ids.shape[:2]
    t = torch.arange(L, device=ids.device).unsqueeze(0)
    pp = p.view(-1, 1)
    src = (t - (t > pp).long() - (t > pp + 1).long()).clamp(0, L - 1)
    out = _gather_slots(ids, src)
    at_a, at_b = t == pp, t == pp + 2
    if ids.dim() == 3:
        at_a, at_b = at_a.unsqueeze(-1), at_b.unsqueeze(-1)
        a, b = a.unsqueeze(1), b.unsqueeze(1)
    else:
        a, b = a.view(-1, 1), b.view(-1, 1)
    return torch.where(at_a, a, torch.where(at_b, b, out))
