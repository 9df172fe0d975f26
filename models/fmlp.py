"""FMLP-Rec (Zhou et al., "Filter-enhanced MLP is All You Need for Sequential Recommendation",
WWW 2022; specs/fmlp_cl4srec.md): SASRec with self-attention replaced by a learnable filter in
the frequency domain.

``x = Dropout(LN(E[items] + P))`` then ``n_layers`` blocks of

* filter: ``X = rfft(x, over the L slots, norm="ortho")`` ``[B, L//2+1, d]`` complex,
  ``X <- X * W`` with a learnable complex ``W [L//2+1, d]``, ``y = irfft(X, n=L, norm="ortho")``,
  ``x <- LN(Dropout(y) + x)``;
* FFN: ``x <- LN(Dropout(W2 GELU(W1 x)) + x)`` with ``W1: d -> inner``, ``W2: inner -> d``.

The user state is the output at the last slot; scores are dot products with the item table.

**Not causal.** The filter is a circular convolution over the whole window of ``L`` slots, so
slot t mixes items after t. Trained with ``prefix`` instances (the default here: one instance
per target, the target never in the input, loss at the last slot only) nothing leaks; with
``all_positions`` every slot's target would be visible to that slot, so ``training_inputs``
refuses targets anywhere but the last slot. (A causal variant would need a causal filter with
zero-padding to 2L — a different model, not FMLP-Rec.)

**Padding.** The reference adds position embeddings to padding slots and lets them enter the
filter. With ``zero_padding: true`` (default) padding rows are set to zero before every filter
and after every sublayer, so the last-slot output does not depend on what sits in padding
rows; ``zero_padding: false`` reproduces the reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.registry import BACKBONES
from models.base import SequentialRecommender, init_normal
from models.layers import FastDropout, PositionalInput


@dataclass
class FMLPConfig:
    embedding_size: int = 64
    n_layers: int = 2
    inner_size: int = 256  # 4 d, as in the reference
    dropout: float = 0.5  # reference hidden_dropout_prob
    layer_norm_eps: float = 1e-12
    filter_init_std: float = 0.02  # W = N(0, 1) * std for real and imaginary parts
    zero_padding: bool = True  # false = reference (padding slots carry position embeddings)


class FrequencyFilter(nn.Module):
    """Learnable global filter over the slot axis: ``[B, L, d] -> [B, L, d]``.

    ``weight`` holds the complex filter ``[L//2+1, d]`` as real pairs ``[L//2+1, d, 2]``;
    with ``weight[..., 0] = 1`` and ``weight[..., 1] = 0`` the filter is the identity because
    the orthonormal rfft/irfft pair are inverses."""

    def __init__(self, length: int, d: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.length = length
        self.weight = nn.Parameter(torch.randn(length // 2 + 1, d, 2) * init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.length:
            raise ValueError(f"FrequencyFilter was built for {self.length} slots, got an input of {x.shape[1]}")
        spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
        spectrum = spectrum * torch.view_as_complex(self.weight)
        return torch.fft.irfft(spectrum, n=self.length, dim=1, norm="ortho")


class FilterBlock(nn.Module):
    """One FMLP block: filter sublayer then FFN sublayer, each ``LN(Dropout(f(x)) + x)``."""

    def __init__(self, length: int, d: int, inner: int, dropout: float, eps: float, init_std: float) -> None:
        super().__init__()
        self.filter = FrequencyFilter(length, d, init_std)
        self.filter_dropout = FastDropout(dropout)
        self.filter_norm = nn.LayerNorm(d, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(d, inner), nn.GELU(), nn.Linear(inner, d))
        self.ffn_dropout = FastDropout(dropout)
        self.ffn_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """``x [B, L, d]``; ``keep [B, L, 1]`` float (0 at padding) or None (no zeroing).

        With ``keep``, the output is ``LN(Dropout(f(x)) + x) * keep`` for each sublayer, computed
        on the real rows only: padding rows come out zero whatever the sublayers do, so only
        the filter (which mixes slots) sees the full window. Prefix instances are mostly
        padding (78% of Beauty's slots), and the FFN is most of the block's work."""
        if keep is None:
            x = self.filter_norm(self.filter_dropout(self.filter(x)) + x)
            return self.ffn_norm(self.ffn_dropout(self.ffn(x)) + x)
        batch, length, d = x.shape
        real = torch.nonzero(keep.reshape(-1) > 0).squeeze(1)  # flat indices of real slots
        filtered = self.filter(x).reshape(-1, d).index_select(0, real)
        rows = x.reshape(-1, d).index_select(0, real)
        rows = self.filter_norm(self.filter_dropout(filtered) + rows)
        rows = self.ffn_norm(self.ffn_dropout(self.ffn(rows)) + rows)
        return x.new_zeros(batch * length, d).index_copy(0, real, rows).reshape(batch, length, d)


@BACKBONES.register("fmlp")
class FMLPRec(SequentialRecommender):
    Config = FMLPConfig
    default_instances = "prefix"
    causal = False
    compared_with = "sasrec"  # SASRec with the learnable filter in place of self-attention

    def __init__(self, cfg: FMLPConfig, shape, train_cfg=None, eval_cfg=None, denoiser=None) -> None:
        super().__init__(cfg, shape, train_cfg, eval_cfg, denoiser)
        d = cfg.embedding_size
        self.item_embedding = nn.Embedding(shape.n_items + 1, d, padding_idx=0)
        self.input = PositionalInput(shape.max_len, d, cfg.dropout, cfg.layer_norm_eps)
        init_normal(self)  # before the blocks: the filters keep their own N(0, 1) * std init
        self.blocks = nn.ModuleList(
            FilterBlock(shape.max_len, d, cfg.inner_size, cfg.dropout, cfg.layer_norm_eps, cfg.filter_init_std)
            for _ in range(cfg.n_layers)
        )
        for block in self.blocks:
            for module in (block.ffn, block.filter_norm, block.ffn_norm):
                init_normal(module)

    def encode(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """``embedded [B, L, d]``, ``pad_mask [B, L]`` (True = padding) -> ``[B, L, d]``."""
        x = self.input(embedded)
        keep = (~pad_mask).unsqueeze(-1).to(x.dtype) if self.cfg.zero_padding else None
        if keep is not None:
            x = x * keep
        for block in self.blocks:
            x = block(x, keep)
        return x

    def training_inputs(self, batch):
        items, targets = batch["items"], batch["targets"]
        if targets.shape[1] > 1 and bool((targets[:, :-1] > 0).any()):
            raise ValueError(
                "fmlp is not causal (its filter mixes every slot of the window), so targets at "
                "slots other than the last would be visible to the model; use "
                "train.train_instances=prefix (default) or last_only"
            )
        return items, targets
