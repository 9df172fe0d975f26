"""Caser (Tang & Wang, WSDM 2018) in RecBole's form (backbones.md §4), computed for every slot.

For the window of the last ``L`` items ending at slot t (zeros before the sequence start):
vertical convolution ``o_v`` (``n_v`` filters of shape L x 1) and horizontal convolutions of
every height h = 1..L (``n_h`` filters each, ReLU, max over the window), then
``z = ReLU(W1 Dropout([o_v || o_h]))`` and ``x = ReLU(W2 [z || user])``. Both convolutions
slide along time, so one pass yields the Caser state of every slot: the state at the last
slot is exactly RecBole's Caser; earlier slots are the states of the shorter prefixes, which
lets Caser train with one forward pass per sequence (``all_positions``) and equal ``prefix``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.registry import BACKBONES
from models.base import SequentialRecommender
from models.layers import FastDropout


@dataclass
class CaserConfig:
    embedding_size: int = 64
    window: int = 5  # L: items per convolution window
    n_v: int = 8
    n_h: int = 16
    dropout: float = 0.4
    reg_weight: float = 1e-4


@BACKBONES.register("caser")
class Caser(SequentialRecommender):
    Config = CaserConfig
    default_instances = "all_positions"
    accepts_trimmed_batches = True  # zeros before the sequence start either way (F.pad), so trimming is exact

    def __init__(self, cfg: CaserConfig, shape, train_cfg=None, eval_cfg=None, denoiser=None) -> None:
        super().__init__(cfg, shape, train_cfg, eval_cfg, denoiser)
        d, L = cfg.embedding_size, cfg.window
        self.item_embedding = nn.Embedding(shape.n_items + 1, d, padding_idx=0)
        self.user_embedding = nn.Embedding(shape.n_users + 1, d, padding_idx=0)
        self.conv_v = nn.Conv1d(1, cfg.n_v, kernel_size=L)
        self.conv_h = nn.ModuleList(nn.Conv1d(d, cfg.n_h, kernel_size=h) for h in range(1, L + 1))
        self.dropout = FastDropout(cfg.dropout)
        self.fc1 = nn.Linear(cfg.n_v * d + cfg.n_h * L, d)
        self.fc2 = nn.Linear(2 * d, d)
        nn.init.normal_(self.item_embedding.weight, 0, 1.0 / d)
        nn.init.normal_(self.user_embedding.weight, 0, 1.0 / d)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
            self.user_embedding.weight[0].zero_()
        for lin in (self.fc1, self.fc2):
            nn.init.xavier_normal_(lin.weight)
            nn.init.zeros_(lin.bias)
        self._users: torch.Tensor | None = None

    def encode(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        B, T, d = embedded.shape
        L = self.cfg.window
        x = embedded.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        x_t = F.pad(x.transpose(1, 2), (L - 1, 0))  # [B, d, T + L - 1], zeros before the start
        # vertical: n_v weighted sums over the window, for every embedding dimension
        o_v = self.conv_v(x_t.reshape(B * d, 1, -1))  # [B*d, n_v, T]
        o_v = o_v.view(B, d, self.cfg.n_v, T).permute(0, 3, 2, 1).reshape(B, T, -1)
        pooled = []
        for h, conv in enumerate(self.conv_h, start=1):
            feat = F.relu(conv(x_t))  # [B, n_h, T + L - h]; position j = window of height h ending at j+h-1
            pooled.append(F.max_pool1d(feat, kernel_size=L - h + 1, stride=1))  # [B, n_h, T]
        o_h = torch.cat(pooled, dim=1).transpose(1, 2)  # [B, T, n_h * L]
        z = F.relu(self.fc1(self.dropout(torch.cat([o_v, o_h], dim=-1))))
        users = self._current_users(B, T, z.device)
        return F.relu(self.fc2(torch.cat([z, users], dim=-1)))

    def encode_last(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        # every convolution window of the last slot lies within the last `window` slots
        L = self.cfg.window
        return self.encode(embedded[:, -L:], pad_mask[:, -L:])[:, -1]

    def _current_users(self, B: int, T: int, device) -> torch.Tensor:
        if self._users is None or self._users.shape[0] != B:
            user_vec = torch.zeros(B, self.cfg.embedding_size, device=device)
        else:
            user_vec = self.user_embedding(self._users)
        return user_vec.unsqueeze(1).expand(B, T, -1)

    def forward(self, items, ctx=None):
        self._users = ctx.batch.get("users") if ctx is not None else self._users
        return super().forward(items, ctx)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        reg = sum(p.norm(2) for p in (self.user_embedding.weight, self.item_embedding.weight, self.conv_v.weight, self.fc1.weight, self.fc2.weight))
        return loss + self.cfg.reg_weight * reg

    @torch.no_grad()
    def predict_scores(self, items: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        self._users = users
        return super().predict_scores(items)
