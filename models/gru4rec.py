"""GRU4Rec (Hidasi et al., ICLR 2016) in RecBole's form (backbones.md §2).

``E -> Dropout -> GRU(d -> h, no bias) -> Linear(h -> d)``; logits tied to the item table.
With left padding, the bias-free GRU keeps padding slots at state 0, so padding never
influences later states."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.registry import BACKBONES
from models.base import SequentialRecommender
from models.layers import FastDropout


@dataclass
class GRU4RecConfig:
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.3


@BACKBONES.register("gru4rec")
class GRU4Rec(SequentialRecommender):
    Config = GRU4RecConfig
    default_instances = "all_positions"
    accepts_trimmed_batches = True

    def __init__(self, cfg: GRU4RecConfig, shape, train_cfg=None, eval_cfg=None, denoiser=None) -> None:
        super().__init__(cfg, shape, train_cfg, eval_cfg, denoiser)
        self.item_embedding = nn.Embedding(shape.n_items + 1, cfg.embedding_size, padding_idx=0)
        self.dropout = FastDropout(cfg.dropout)
        self.gru = nn.GRU(cfg.embedding_size, cfg.hidden_size, num_layers=cfg.num_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for name, param in self.gru.named_parameters():
            if "weight" in name:
                nn.init.xavier_uniform_(param)

    def encode(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        # zero padding rows explicitly: a denoiser may have transformed them
        x = self.dropout(embedded.masked_fill(pad_mask.unsqueeze(-1), 0.0))
        out, _ = self.gru(x)
        return self.dense(out)
