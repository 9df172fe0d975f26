"""Minimal one-pass PyTorch SASRec and GRU4Rec, timed beside the suite's models in ``bench perf``.

Throughput targets quoted against other frameworks depend on the machine that measured them.
These references are what a plain training loop reaches on *this* machine, on the very batches
the suite's step used (data in memory, same sizes and dropout): ``nn.GRU`` or
``nn.TransformerEncoder`` (post-LN, GELU, causal mask), logits against the whole item table and
``F.cross_entropy`` on the real targets, Adam. No early stopping, evaluation or hooks, so the
reference is a floor for what the step costs without the suite's own work (blocked CE head,
batch trimming, denoiser hooks).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


class MiniGRU4Rec(nn.Module):
    """Embedding -> dropout -> bias-free GRU -> linear back to the embedding size."""

    def __init__(self, n_items: int, embedding_size: int, hidden_size: int, num_layers: int, dropout: float, **_) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, embedding_size, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers=num_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(hidden_size, embedding_size)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``items [B, L]`` -> states ``[B, L, d]``."""
        out, _ = self.gru(self.dropout(self.item_embedding(items)))
        return self.dense(out)


class MiniSASRec(nn.Module):
    """Item + learned position embeddings, LayerNorm, dropout, causal post-LN transformer."""

    def __init__(self, n_items: int, max_len: int, embedding_size: int, n_layers: int, n_heads: int, inner_size: int,
                 dropout: float, **_) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, embedding_size, padding_idx=0)
        self.position = nn.Embedding(max_len, embedding_size)
        self.norm = nn.LayerNorm(embedding_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(embedding_size, n_heads, inner_size, dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Left-padded ``items [B, L]`` (L <= max_len) -> states ``[B, L, d]``."""
        length = items.shape[1]
        x = self.dropout(self.norm(self.item_embedding(items) + self.position.weight[-length:]))
        return self.encoder(x, mask=self.causal[:length, :length])


REFERENCES = {"gru4rec": MiniGRU4Rec, "sasrec": MiniSASRec}


def build_reference(backbone: str, backbone_cfg: dict, n_items: int, max_len: int) -> nn.Module | None:
    """The minimal model for ``backbone`` with the suite's sizes, or None if there is none."""
    cls = REFERENCES.get(backbone)
    if cls is None:
        return None
    return cls(n_items=n_items, max_len=max_len, **backbone_cfg)


def time_reference(model: nn.Module, batches: list[dict]) -> tuple[float, int]:
    """Seconds and training targets of one pass of plain training steps over ``batches``
    (each with ``items`` and ``targets [B, L]``, 0 = no target)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n_targets = 0
    start = time.perf_counter()
    for batch in batches:
        targets = batch["targets"]
        has = targets > 0
        states = model(batch["items"])[has]
        loss = F.cross_entropy(states @ model.item_embedding.weight.T, targets[has])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n_targets += int(has.sum())
    return time.perf_counter() - start, n_targets
