"""Shared layers: a cheap dropout and the post-LN transformer block of RecBole's form.

``FastDropout`` exists because CPU ``torch.bernoulli_`` (what ``nn.Dropout`` calls) draws one
random number per element and took ~28% of a SASRec training step on this machine. Here one
64-bit draw gives eight 8-bit uniforms, so the drop probability is quantised to 1/256 (0.5 is
exact; 0.2 becomes 51/256 = 0.199) and the survivors are rescaled by the realised keep rate.
Draws come from torch's global generator, so seeding keeps runs reproducible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with drop probability ``round(256 p) / 256``; any shape, any device."""
    if not training or p <= 0.0:
        return x
    threshold = int(round(p * 256))
    if threshold >= 256:
        return torch.zeros_like(x)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
    uniform8 = words.view(torch.uint8)[:n].view(x.shape)
    keep = uniform8 >= threshold
    return x * keep * (256.0 / (256 - threshold))


class FastDropout(nn.Module):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PositionalInput(nn.Module):
    """``Dropout(LN(E + P))`` over left-padded slots: the input block of SASRec, BERT4Rec,
    FMLP-Rec and DCRec. Positions count from the right, so a batch trimmed to ``L <= max_len``
    slots uses the last ``L`` position vectors. ``embedded [B, L, d] -> [B, L, d]``."""

    def __init__(self, max_len: int, d: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.max_len = max_len
        self.position_embedding = nn.Embedding(max_len, d)
        self.input_norm = nn.LayerNorm(d, eps=eps)
        self.input_dropout = FastDropout(dropout)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        B, L, _ = embedded.shape
        slots = torch.arange(self.max_len - L, self.max_len, device=embedded.device)
        return self.input_dropout(self.input_norm(embedded + self.position_embedding(slots).unsqueeze(0)))


class TransformerBlock(nn.Module):
    """``x = LN(x + Drop(MHA(x)))``, ``x = LN(x + Drop(W2 GELU(W1 x)))`` (RecBole's SASRec /
    BERT4Rec layer: attention-probability dropout, no dropout on the FFN's inner activation).

    ``x [B, L, d]``, ``blocked [B, 1, L, L]`` (True = key not visible) -> ``[B, L, d]``."""

    def __init__(self, d: int, n_heads: int, inner: int, dropout: float, attn_dropout: float, eps: float) -> None:
        super().__init__()
        if d % n_heads:
            raise ValueError(f"embedding size {d} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.attn_dropout = attn_dropout
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.ffn_in = nn.Linear(d, inner)
        self.ffn_out = nn.Linear(inner, d)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.dropout = FastDropout(dropout)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        return self._attend_and_feed(x, q, k, v, blocked)

    def forward_last(self, x: torch.Tensor, blocked_last: torch.Tensor) -> torch.Tensor:
        """The output of the last slot only: ``x [B, L, d]``, ``blocked_last [B, 1, 1, L]`` (the
        mask's last query row) -> ``[B, d]``; equals ``forward(x, blocked)[:, -1]``. Keys and
        values need every slot, the query, the attention output and the FFN only the last."""
        B, L, d = x.shape
        dh = d // self.n_heads
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, -1:], weight[:d], bias[:d]).view(B, 1, self.n_heads, dh).transpose(1, 2)
        k, v = F.linear(x, weight[d:], bias[d:]).view(B, L, 2, self.n_heads, dh).permute(2, 0, 3, 1, 4)
        return self._attend_and_feed(x[:, -1:], q, k, v, blocked_last)[:, 0]

    def _attend_and_feed(self, residual: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         blocked: torch.Tensor) -> torch.Tensor:
        """Both sublayers for the query slots: ``residual [B, Q, d]``, ``q [B, heads, Q, dh]``,
        ``k, v [B, heads, L, dh]``, ``blocked [B, 1, Q, L]`` -> ``[B, Q, d]``."""
        B, Q, d = residual.shape
        scores = (q @ k.transpose(-1, -2)) * (d // self.n_heads) ** -0.5  # [B, heads, Q, L]
        probs = torch.softmax(scores.masked_fill(blocked, float("-inf")), dim=-1)
        probs = fast_dropout(probs, self.attn_dropout, self.training)
        attended = (probs @ v).transpose(1, 2).reshape(B, Q, d)
        x = self.norm1(residual + self.dropout(self.attn_out(attended)))
        return self.norm2(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


def attention_blocked(pad_mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean ``[B, 1, L, L]``, True = blocked: padding keys (and future keys when causal);
    the diagonal is always allowed, so fully padded rows stay finite."""
    L = pad_mask.shape[1]
    blocked = pad_mask[:, None, None, :]
    if causal:
        future = torch.triu(torch.ones(L, L, dtype=torch.bool, device=pad_mask.device), diagonal=1)
        blocked = blocked | future
    eye = torch.eye(L, dtype=torch.bool, device=pad_mask.device)
    return blocked & ~eye


class TransformerStack(nn.Module):
    """``n_layers`` :class:`TransformerBlock` s sharing one attention mask (SASRec, BERT4Rec, DCRec)."""

    def __init__(self, d: int, n_layers: int, n_heads: int, inner: int, dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        self.n_heads = n_heads
        self.layers = nn.ModuleList(TransformerBlock(d, n_heads, inner, dropout, attn_dropout, eps) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor, causal: bool) -> torch.Tensor:
        blocked = attention_blocked(pad_mask, causal)
        for layer in self.layers:
            x = layer(x, blocked)
        return x

    def forward_last(self, x: torch.Tensor, pad_mask: torch.Tensor, causal: bool) -> torch.Tensor:
        """``forward(x, pad_mask, causal)[:, -1]`` -> ``[B, d]``, the last layer run for the last
        slot only (what a contrastive view's user state needs)."""
        blocked = attention_blocked(pad_mask, causal)
        for layer in self.layers[:-1]:
            x = layer(x, blocked)
        return self.layers[-1].forward_last(x, blocked[:, :, -1:, :])
