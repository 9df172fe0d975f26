"""CL4SRec (Xie et al., "Contrastive Learning for Sequential Recommendation", ICDE 2022;
specs/fmlp_cl4srec.md) as a training-time auxiliary loss on any backbone.

Every training step, each input sequence ``batch['items'] [B, L]`` (left-padded) gets two
augmented views; for each view one augmentation is drawn uniformly from the enabled set,
independently per sequence. With ``n`` = the number of real items of a row:

* ``crop`` (ratio eta): keep a random contiguous run of ``max(1, floor(eta * n))`` items, left-padded;
* ``mask`` (ratio gamma): ``floor(gamma * n)`` random real slots become the mask token;
* ``reorder`` (ratio beta): a random contiguous run of ``floor(beta * n)`` slots is shuffled
  (runs shorter than 2 leave the row unchanged).

``floor`` is exact Python float semantics (``int(ratio * n)``), as in the reference code.
Mask token (``mask_token``): ``learned`` (default) — a dedicated trainable vector of the
backbone's embedding size replaces the masked slots' embeddings, and the slots stay visible to
the encoder (the paper's "mask token"); ``padding`` — the slots become item 0 and the encoder
treats them as padding (the item is hidden, the slot remains).

The two views are encoded with the backbone's own ``eval_inputs -> embed ->
encode_state`` (the denoiser's hooks are not re-applied), and the NT-Xent loss over the 2B
views (positive = the sibling view, negatives = the other 2B - 2 views) is added as
``cl_loss = weight * NT-Xent``. Augmentations are vectorised over the batch (sorting random
keys; no per-row loops).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import ConfigError
from benchmark.registry import DENOISERS
from denoisers.base import Denoiser, StepContext

AUGMENTATIONS = ("crop", "mask", "reorder")
MASKED = -1  # sentinel id of a masked slot until the embedding step


@dataclass
class CL4SRecConfig:
    augmentations: list[str] = field(default_factory=lambda: ["crop", "mask", "reorder"])
    crop_ratio: float = 0.6  # eta
    mask_ratio: float = 0.5  # gamma
    reorder_ratio: float = 0.2  # beta
    mask_token: str = "learned"  # learned | padding
    weight: float = 0.1  # lambda: L = L_rec + weight * L_cl
    temperature: float = 1.0
    similarity: str = "dot"  # dot | cosine

    def __post_init__(self) -> None:
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS]
        if unknown or not self.augmentations:
            raise ConfigError(
                f"denoiser.augmentations={list(self.augmentations)}: expected a non-empty subset of {list(AUGMENTATIONS)}"
            )
        for key in ("crop_ratio", "mask_ratio", "reorder_ratio"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"denoiser.{key}={value}: expected a ratio in [0, 1]")
        if self.mask_token not in ("learned", "padding"):
            raise ConfigError(f"denoiser.mask_token={self.mask_token!r}: expected 'learned' or 'padding'")
        if self.similarity not in ("dot", "cosine"):
            raise ConfigError(f"denoiser.similarity={self.similarity!r}: expected 'dot' or 'cosine'")
        if self.temperature <= 0:
            raise ConfigError(f"denoiser.temperature={self.temperature}: expected > 0")


# ---------------------------------------------------------------------- augmentations
def real_lengths(items: torch.Tensor) -> torch.Tensor:
    """``items [B, L]`` left-padded -> number of real items per row ``[B]`` (int64)."""
    return (items > 0).sum(1)


def ratio_count(ratio: float, n: torch.Tensor) -> torch.Tensor:
    """``floor(ratio * n)`` per row, computed in float64 like Python's ``int(ratio * n)``."""
    return torch.floor(ratio * n.to(torch.float64)).to(torch.int64)


def _uniform(shape, device, generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)


def crop(items: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep a random contiguous run of ``c = max(1, floor(ratio * n))`` real items per row.

    ``items [B, L]`` left-padded -> ``[B, L]`` left-padded (the run in the last ``c`` slots)."""
    B, L = items.shape
    n = real_lengths(items)
    c = torch.minimum(ratio_count(ratio, n).clamp(min=1), n)
    start = torch.floor(_uniform(B, items.device, generator) * (n - c + 1)).to(torch.int64)
    slot = torch.arange(L, device=items.device).unsqueeze(0)
    src = slot + (c - n + start).unsqueeze(1)  # slot L-c+j takes real item start+j (slot L-n+start+j)
    kept = slot >= (L - c).unsqueeze(1)
    return torch.where(kept, items.gather(1, src.clamp(0, L - 1)), torch.zeros_like(items))


def mask(items: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mark ``floor(ratio * n)`` distinct random real slots per row.

    Returns ``(items with masked slots set to 0 [B, L], masked [B, L] bool)``."""
    B, L = items.shape
    m = ratio_count(ratio, real_lengths(items))
    keys = _uniform((B, L), items.device, generator).masked_fill(items == 0, 2.0)  # padding sorts last
    rank = keys.argsort(1).argsort(1)
    masked = rank < m.unsqueeze(1)
    return items.masked_fill(masked, 0), masked


def reorder(items: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle a random contiguous run of ``r = floor(ratio * n)`` real slots per row.

    Slots outside the run keep their items; the run receives a permutation of its own items."""
    B, L = items.shape
    n = real_lengths(items)
    r = torch.minimum(ratio_count(ratio, n), n)
    start = torch.floor(_uniform(B, items.device, generator) * (n - r + 1)).to(torch.int64)
    first = (L - n + start).unsqueeze(1)  # slot of the run's first item
    slot = torch.arange(L, device=items.device).unsqueeze(0)
    inside = (slot >= first) & (slot < first + r.unsqueeze(1))
    # keys: outside slots keep their index; inside slots get random keys in [first, first + r - 1],
    # strictly between the neighbouring outside slots' keys, so only the run is permuted
    spread = (r - 1).clamp(min=0).unsqueeze(1).to(torch.float64)
    keys = torch.where(inside, first + _uniform((B, L), items.device, generator) * spread, slot.to(torch.float64))
    return items.gather(1, torch.argsort(keys, dim=1, stable=True))


def augment_views(
    items: torch.Tensor,
    cfg: CL4SRecConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One augmented view per row, the augmentation drawn uniformly from ``cfg.augmentations``.

    Returns ``[B, L]`` item ids with masked slots set to ``MASKED`` (-1)."""
    names = list(cfg.augmentations)
    choice = torch.randint(len(names), (items.shape[0],), generator=generator, device=items.device).unsqueeze(1)
    out = items.clone()
    for index, name in enumerate(names):  # a handful of config entries, each vectorised over the batch
        if name == "crop":
            view = crop(items, cfg.crop_ratio, generator)
        elif name == "reorder":
            view = reorder(items, cfg.reorder_ratio, generator)
        else:
            view, masked = mask(items, cfg.mask_ratio, generator)
            view = view.masked_fill(masked, MASKED)
        out = torch.where(choice == index, view, out)
    return out


# ---------------------------------------------------------------------- loss
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 1.0, similarity: str = "dot") -> torch.Tensor:
    """NT-Xent over ``2B`` views ``z1, z2 [B, h]``: each view's positive is its sibling, the other
    ``2B - 2`` views are negatives; mean over the ``2B`` anchors."""
    z = torch.cat([z1, z2], dim=0)
    if similarity == "cosine":
        z = F.normalize(z, dim=-1)
    logits = (z @ z.T) / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    B = len(z1)
    labels = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(z.device)
    return F.cross_entropy(logits, labels)


@DENOISERS.register("cl4srec")
class CL4SRec(Denoiser):
    """Contrastive auxiliary loss over two augmented views of every training sequence."""

    Config = CL4SRecConfig
    level = "train"
    accepts_trimmed_batches = True

    def attach(self, model) -> None:
        if self.cfg.mask_token == "learned" and "mask" in self.cfg.augmentations:
            self.mask_embedding = nn.Parameter(torch.randn(model.embedding_size) * 0.02)

    def view_states(self, model, view: torch.Tensor) -> torch.Tensor:
        """User states ``[B, h]`` of a view ``[B, L]`` (``MASKED`` marks masked slots)."""
        inputs = model.eval_inputs(view)
        masked = inputs == MASKED
        inputs = inputs.clamp(min=0)
        embedded = model.embed(inputs)
        if masked.any() and self.cfg.mask_token == "learned":
            embedded = torch.where(masked.unsqueeze(-1), self.mask_embedding.to(embedded.dtype), embedded)
        return model.encode_state(embedded, inputs == 0, real_lengths(inputs))

    def auxiliary_loss(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.stage != "train" or self.cfg.weight == 0:
            return {}
        items = ctx.batch["items"]
        z1 = self.view_states(ctx.model, augment_views(items, self.cfg))
        z2 = self.view_states(ctx.model, augment_views(items, self.cfg))
        loss = nt_xent(z1, z2, self.cfg.temperature, self.cfg.similarity)
        return {"cl_loss": self.cfg.weight * loss}
