"""Full-softmax cross-entropy over the item catalogue, blocked for CPU caches.

The next-item CE head dominates a training step on CPU (``[M, h] @ [h, N]`` logits for every
target, then log-softmax, forward and backward). Materialising the whole ``[M, N]`` logit
matrix makes the head memory-bound; computing it in blocks of rows that stay in cache, and
recomputing each block's logits in the backward pass instead of storing them, is about twice as
fast on a 2-core CPU (ML-100K, N = 1,683) and 1.5x on Beauty (N = 12,101), for the same loss
and gradients (to float rounding). On accelerators the plain ``F.cross_entropy`` path is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK_ROWS = 128  # rows of logits per block: 128 x N floats stay in L2/L3 for catalogues up to ~10^4


class _BlockedCrossEntropy(torch.autograd.Function):
    """Per-row ``logsumexp(s W^T + b) - (s W^T + b)[t]``; see :func:`item_cross_entropy`."""

    @staticmethod
    def forward(ctx, states, table, bias, targets, block):  # type: ignore[override]
        losses = states.new_empty(len(states))
        for lo in range(0, len(states), block):  # blocks of rows, not users
            z = torch.addmm(bias, states[lo: lo + block], table.T) if bias is not None else states[lo: lo + block] @ table.T
            losses[lo: lo + block] = torch.logsumexp(z, 1) - z.gather(1, targets[lo: lo + block, None]).squeeze(1)
        ctx.save_for_backward(states, table, bias, targets)
        ctx.block = block
        return losses

    @staticmethod
    def backward(ctx, grad_losses):  # type: ignore[override]
        states, table, bias, targets = ctx.saved_tensors
        block = ctx.block
        d_states = torch.empty_like(states)
        d_table = torch.zeros_like(table)
        d_bias = torch.zeros_like(bias) if bias is not None else None
        for lo in range(0, len(states), block):
            s = states[lo: lo + block]
            z = torch.addmm(bias, s, table.T) if bias is not None else s @ table.T
            p = torch.softmax(z, 1)  # d loss / d z = softmax - onehot(target), times the upstream grad
            p[torch.arange(len(s), device=s.device), targets[lo: lo + block]] -= 1.0
            p.mul_(grad_losses[lo: lo + block, None])
            d_states[lo: lo + block] = p @ table
            d_table.addmm_(p.T, s)
            if d_bias is not None:
                d_bias += p.sum(0)
        return d_states, d_table, d_bias, None, None


def item_cross_entropy(states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                       bias: torch.Tensor | None = None, block: int = BLOCK_ROWS) -> torch.Tensor:
    """Per-target CE losses ``[M]`` of ``states [M, h]`` against every item.

    ``table [N+1, h]`` (row 0 = padding, never a class), ``bias [N+1]`` or None, ``targets [M]``
    in 1..N. Equals ``F.cross_entropy(logits, targets, reduction="none")`` with the padding
    logit at -inf."""
    table, targets = table[1:], targets - 1
    bias = bias[1:] if bias is not None else None
    blocked = (states.device.type == "cpu" and states.dtype == torch.float32 and table.dtype == torch.float32
               and not torch.is_autocast_enabled("cpu") and len(states) > block)
    if not blocked:
        z = states @ table.T
        return F.cross_entropy(z + bias if bias is not None else z, targets, reduction="none")
    return _BlockedCrossEntropy.apply(states, table, bias, targets, block)
