"""BERT4Rec (Sun et al., CIKM 2019) in RecBole's form (backbones.md §5).

Bidirectional post-LN transformer over left-padded windows; the item table has an extra mask
token ``N+1``. Training (cloze): every real slot is replaced by the mask token with probability
``mask_ratio`` (at least one per sequence; optionally the last slot alone with probability
``last_mask_prob``), CE over all items at masked slots. Inference: the history's last
``L-1`` items followed by the mask token; the state at that slot scores the next item. The
output head is ``LN(GELU(W h))`` dotted with the item table plus a bias, as in RecBole."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.registry import BACKBONES
from models.base import SequentialRecommender, init_normal
from models.layers import PositionalInput, TransformerStack


@dataclass
class BERT4RecConfig:
    embedding_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    dropout: float = 0.2
    attn_dropout: float = 0.2
    layer_norm_eps: float = 1e-12
    mask_ratio: float = 0.2
    last_mask_prob: float = 0.1  # share of sequences trained with only the last item masked


@BACKBONES.register("bert4rec")
class BERT4Rec(SequentialRecommender):
    Config = BERT4RecConfig
    default_loss = "cloze"
    default_instances = "windows"
    accepts_trimmed_batches = True
    causal = False
    supported_losses = ("cloze", "ce")

    def __init__(self, cfg: BERT4RecConfig, shape, train_cfg=None, eval_cfg=None, denoiser=None) -> None:
        super().__init__(cfg, shape, train_cfg, eval_cfg, denoiser)
        d = cfg.embedding_size
        self.mask_token = shape.n_items + 1
        self.item_embedding = nn.Embedding(shape.n_items + 2, d, padding_idx=0)
        self.input = PositionalInput(shape.max_len, d, cfg.dropout, cfg.layer_norm_eps)
        self.blocks = TransformerStack(d, cfg.n_layers, cfg.n_heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout, cfg.layer_norm_eps)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=cfg.layer_norm_eps))
        self.bias = nn.Parameter(torch.zeros(shape.n_items + 1))
        init_normal(self)

    def encode(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = self.input(embedded)
        return self.head(self.blocks(x, pad_mask, causal=False))

    def encode_last(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        # the last (mask-token) slot: the last layer needs only its query
        return self.head(self.blocks.forward_last(self.input(embedded), pad_mask, causal=False))

    def output_bias(self) -> torch.Tensor:
        return self.bias

    def training_inputs(self, batch):
        """Cloze masking of the window ``batch['items'] [B, L]`` (targets = masked originals)."""
        items = batch["items"]
        real = items > 0
        masked = (torch.rand(items.shape, device=items.device) < self.cfg.mask_ratio) & real
        # sequences with no mask get their last item masked; some get only the last item masked
        last_only = torch.rand(items.shape[0], device=items.device) < self.cfg.last_mask_prob
        none = ~masked.any(1)
        last = torch.zeros_like(masked)
        last[:, -1] = True
        masked = torch.where((last_only | none).unsqueeze(1), last & real, masked)
        inputs = torch.where(masked, torch.full_like(items, self.mask_token), items)
        targets = torch.where(masked, items, torch.zeros_like(items))
        return inputs, targets

    def eval_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """Drop the oldest slot and append the mask token: ``[B, L]`` -> ``[B, L]``."""
        mask = torch.full_like(items[:, :1], self.mask_token)
        return torch.cat([items[:, 1:], mask], dim=1)
