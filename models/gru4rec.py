"""GRU4Rec (Hidasi et al., ICLR 2016) in RecBole's form (backbones.md §2).

``E -> Dropout -> GRU(d -> h, no bias) -> Linear(h -> d)``; logits tied to the item table.
With left padding, the bias-free GRU keeps padding slots at state 0, so padding never
influences later states.

Four switches turn it into the GRU of the IADSR authors' code (specs/iadsr.md §3):
``tied_output=false`` (scores are ``Linear(h -> N+1)`` of the GRU outputs, with a bias),
``gru_bias=true``, ``learned_padding=true`` (padding slots hold a trainable id-0 row that the
GRU reads, so padding does shape the state) and ``xavier_init=false`` (PyTorch's default
initialisation); with ``dropout=0``. ``configs/grids/iadsr-paper-beauty-reference-gru.yaml``
sets them together."""
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
    tied_output: bool = True  # false: untied Linear(hidden -> N+1) with bias scores the GRU outputs
    gru_bias: bool = False
    learned_padding: bool = False  # true: the GRU reads a trainable id-0 row at padding slots
    xavier_init: bool = True  # false: PyTorch's default initialisation of every layer


@BACKBONES.register("gru4rec")
class GRU4Rec(SequentialRecommender):
    Config = GRU4RecConfig
    default_instances = "all_positions"
    accepts_trimmed_batches = True  # learned padding restores the trimmed slots in encode

    def __init__(self, cfg: GRU4RecConfig, shape, train_cfg=None, eval_cfg=None, denoiser=None) -> None:
        super().__init__(cfg, shape, train_cfg, eval_cfg, denoiser)
        padding_idx = None if cfg.learned_padding else 0
        self.item_embedding = nn.Embedding(shape.n_items + 1, cfg.embedding_size, padding_idx=padding_idx)
        self.dropout = FastDropout(cfg.dropout)
        self.gru = nn.GRU(cfg.embedding_size, cfg.hidden_size, num_layers=cfg.num_layers, bias=cfg.gru_bias,
                          batch_first=True)
        if cfg.tied_output:
            self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        else:
            self.output = nn.Linear(cfg.hidden_size, shape.n_items + 1)
        if cfg.xavier_init:
            nn.init.xavier_normal_(self.item_embedding.weight)
            for name, param in self.gru.named_parameters():
                if "weight" in name:
                    nn.init.xavier_uniform_(param)
        if not cfg.learned_padding:
            with torch.no_grad():
                self.item_embedding.weight[0].zero_()

    def encode(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """``embedded [B, L, d]``, ``pad_mask [B, L]`` -> ``[B, L, d]`` (tied) or ``[B, L, h]``."""
        # reset padding rows explicitly: a denoiser may have transformed them
        if self.cfg.learned_padding:
            x = torch.where(pad_mask.unsqueeze(-1), self.item_embedding.weight[0], embedded)
            trimmed = self.max_len - x.shape[1]
            if trimmed > 0:  # the GRU state depends on every padding slot: give back the trimmed ones
                lead = self.item_embedding.weight[0].expand(x.shape[0], trimmed, -1)
                return self._recur(torch.cat([lead, x], 1))[:, trimmed:]
        else:
            x = embedded.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        return self._recur(x)

    def _recur(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.dropout(x))
        return self.dense(out) if self.cfg.tied_output else out

    def output_table(self) -> torch.Tensor:
        if self.cfg.tied_output:
            return super().output_table()
        return self.output.weight

    def output_bias(self) -> torch.Tensor | None:
        return None if self.cfg.tied_output else self.output.bias
