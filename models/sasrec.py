"""SASRec (Kang & McAuley, ICDM 2018) in RecBole's post-LN form (backbones.md §3).

Input ``LN(E + P)`` and dropout, then ``n_layers`` blocks of causal multi-head attention and a
GELU feed-forward network, each with residual + LayerNorm. Positions are slot indices of the
left-padded input. Attention never reaches padding keys (each slot may always attend to
itself, so padded rows stay finite)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.registry import BACKBONES
from models.base import SequentialRecommender, init_normal
from models.layers import PositionalInput, TransformerStack


@dataclass
class SASRecConfig:
    embedding_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    dropout: float = 0.5
    attn_dropout: float = 0.5
    layer_norm_eps: float = 1e-12
    bidirectional: bool = False  # IADSR reference variant (no causal mask)


@BACKBONES.register("sasrec")
class SASRec(SequentialRecommender):
    Config = SASRecConfig
    default_instances = "all_positions"
    accepts_trimmed_batches = True

    def __init__(self, cfg: SASRecConfig, shape, train_cfg=None, eval_cfg=None, denoiser=None) -> None:
        super().__init__(cfg, shape, train_cfg, eval_cfg, denoiser)
        d = cfg.embedding_size
        self.item_embedding = nn.Embedding(shape.n_items + 1, d, padding_idx=0)
        self.input = PositionalInput(shape.max_len, d, cfg.dropout, cfg.layer_norm_eps)
        self.blocks = TransformerStack(d, cfg.n_layers, cfg.n_heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout, cfg.layer_norm_eps)
        init_normal(self)
        self.causal = not cfg.bidirectional

    def encode(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = self.input(embedded)
        return self.blocks(x, pad_mask, causal=self.causal)

    def encode_last(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        # the last layer needs only the last slot's query
        return self.blocks.forward_last(self.input(embedded), pad_mask, causal=self.causal)
