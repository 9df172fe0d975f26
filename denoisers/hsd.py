"""HSD — Hierarchical item inconsistency Signal learning for sequence Denoising
(Zhang et al., CIKM '22; specs/hsd.md), as a training-time denoiser.

Per training instance (one target in the last slot: ``prefix`` instances, as RecBole's
sequence augmentation), the scorer (``denoisers.hsd_scorer``) gives every input item a
sequence-level and an item-level 2-way score; an item is dropped when both hard Gumbel
samples say "noisy". Kept items are compacted to the right end (left padding) and the
backbone encodes them; its next-item loss is restricted to the curriculum subset (lowest
reconstruction loss) through ``sample_weights``; the reconstruction and loss-filter terms
are auxiliary losses. Valid/test inputs are denoised the same way with the user embedding as
query. ``export`` runs the trained model over the training histories and returns the final
keep masks (transfer protocol).

Native backbones: SASRec, GRU4Rec, Caser (they take the compacted embeddings through
``encode``). BERT4Rec is trained by transfer: in this suite it is trained by cloze masking
and scored through an appended mask token, while the reference's BERT4Rec sub-model is a
bidirectional encoder trained with CE on the last real item — a different model.

Presets (``preset``): ``benchmark`` (default) — deterministic argmax decisions at
evaluation/export, no "-0 slice" row zeroing in the loss filter; ``reference`` — the
released code's behaviour: hard Gumbel samples at evaluation, rows with ``⌊r·len⌋ = 0``
zeroed. Keys left at ``null`` follow the preset; explicit values win.

``eval_decision: most_likely`` is a deterministic alternative to ``argmax``: training drops a
slot when both scorers' sampled votes say "noisy", with probability ``P`` = the product of the
two scorers' noisy probabilities; ``most_likely`` drops it iff ``P > 0.5``. ``argmax`` takes
each scorer's likelier vote separately, which drops every slot whose two probabilities both
exceed one half, so scorers that drift to 0.6 on most slots make it drop most of the input
(Beauty, and ML-100K under STEAM's noise), while training dropped about a third.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from benchmark.config import ConfigError
from benchmark.data.instances import build_train_tensors
from benchmark.data.sequences import DenoisedSequences, Sequences
from benchmark.registry import DENOISERS
from denoisers.base import Denoiser, StepContext
from denoisers.hsd_scorer import (DECISION_LOGITS, DECISIONS, HSDScorer, HSDScores, curriculum_drop,
                                  curriculum_keep, gumbel_temperature)
from denoisers.seq_ops import compact_right, left_to_right

if TYPE_CHECKING:  # pragma: no cover
    from models.base import SequentialRecommender

# shares of the exported (training-history) slots, recorded in the run's denoiser report: what
# each scorer's argmax calls noisy, what argmax / most_likely drop, what a sample drops on average
DECISION_RATES = ("item_noisy", "seq_noisy", "argmax_drops", "most_likely_drops", "sample_drops_expected")

PRESETS = {
    "benchmark": {"eval_decision": "argmax", "filter_zero_k": "none"},
    "reference": {"eval_decision": "sample", "filter_zero_k": "reference"},
}


@dataclass
class HSDConfig:
    preset: str = "benchmark"  # benchmark | reference (fills the keys left at null)
    eval_decision: str | None = None  # argmax | most_likely (drop iff P(both sampled votes noisy) > 0.5) | sample (reference)
    filter_zero_k: str | None = None  # none | reference (zero a row whose ⌊r·len⌋ = 0 while r > 0)
    decision_logits: str = "sigmoid"  # sigmoid (reference: near-fair-coin samples) | raw (see HSDScorer)
    ae_dropout: float = 0.3  # our_ae_drop_out
    att_dropout: float = 0.2  # our_att_drop_out
    gumbel_temperature: float = 0.5
    anneal_temperature: bool = True
    anneal_every: int = 40  # training steps between annealings
    anneal_rate: float = 1e-3  # τ ← τ · exp(-rate · step_count)
    min_temperature: float = 1e-3
    curriculum_drop: float = 0.2  # d_0: share of the batch (highest reconstruction loss) left out
    curriculum_epochs: int = 10  # d_e decays linearly to 0 over these epochs
    filter_rate: float = 0.2  # loss-filter rate r_e = filter_rate - d_e
    rec_weight: float = 1.0
    filter_weight: float = 1.0
    export_batch_size: int = 1024
    export_seed: int | None = None  # seed of sampled export decisions (null = the run's seed)


def resolve_preset(cfg, name: str, presets: dict[str, dict]) -> dict:
    """Effective values of the preset-governed keys (explicit non-null values win)."""
    if cfg.preset not in presets:
        raise ConfigError(f"denoiser '{name}': preset={cfg.preset!r}; expected one of {', '.join(presets)}")
    return {k: (getattr(cfg, k) if getattr(cfg, k) is not None else v) for k, v in presets[cfg.preset].items()}


@dataclass
class HSDView:
    """What the scorer sees for one batch, in right-padded layout.

    ``ids [B, L]`` item ids HSD decides on; ``x_seq [B, L, H]`` their raw embeddings
    (sequence-level scorer, loss filter, backbone input); ``x_item [B, L, H]`` item-level
    scorer features; ``mask [B, L]`` float (1 = a slot HSD may keep); ``lengths [B]``
    (reconstruction/filter normalisation)."""

    ids: torch.Tensor
    x_seq: torch.Tensor
    x_item: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor


@DENOISERS.register("hsd")
class HSD(Denoiser):
    """HSD front-end trained jointly with its backbone (see module docstring)."""

    Config = HSDConfig
    registry_name = "hsd"
    level = "train"
    native_backbones = ("sasrec", "gru4rec", "caser")
    default_native = "sasrec"
    train_instances = "prefix"
    presets = PRESETS
    denoises_eval_inputs = True  # evaluation histories pass through the same front-end

    def __init__(self, cfg: HSDConfig | None = None, resources=None) -> None:
        super().__init__(cfg, resources)
        resolved = resolve_preset(self.cfg, self.registry_name, self.presets)
        self.eval_decision = resolved["eval_decision"]
        self.filter_zero_k = resolved["filter_zero_k"]
        self._validate()
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self.scorer: HSDScorer | None = None
        self.n_items = 0
        self.max_len = 0
        self._stats = {"removed": 0.0, "slots": 0.0}
        self.epoch_removed: list[float] = []  # share of real input slots dropped, per training epoch
        self.export_decision_rates: dict[str, float] | None = None  # first export (training histories)

    def _validate(self) -> None:
        c, where = self.cfg, f"denoiser '{self.registry_name}'"
        if self.eval_decision not in DECISIONS:
            raise ConfigError(f"{where}: eval_decision={self.eval_decision!r}; expected one of {', '.join(DECISIONS)}")
        if c.decision_logits not in DECISION_LOGITS:
            raise ConfigError(f"{where}: decision_logits={c.decision_logits!r}; "
                              f"expected {' or '.join(DECISION_LOGITS)}")
        if self.filter_zero_k not in ("none", "reference"):
            raise ConfigError(f"{where}: filter_zero_k={self.filter_zero_k!r}; expected none or reference")
        for key in ("ae_dropout", "att_dropout", "curriculum_drop", "filter_rate"):
            if not 0.0 <= getattr(c, key) < 1.0:
                raise ConfigError(f"{where}: {key}={getattr(c, key)}; expected a value in [0, 1)")
        if c.gumbel_temperature <= 0 or c.min_temperature <= 0:
            raise ConfigError(f"{where}: gumbel_temperature and min_temperature must be > 0")
        if c.export_batch_size < 1:
            raise ConfigError(f"{where}: export_batch_size={c.export_batch_size}; expected >= 1")

    # ------------------------------------------------------------------ setup
    def attach(self, model: "SequentialRecommender") -> None:
        self.n_items = model.n_items
        self.max_len = model.max_len
        self.scorer = HSDScorer(model.embedding_size, model.max_len, model.shape.n_users, self.cfg.ae_dropout,
                                self.cfg.att_dropout, self.cfg.decision_logits)

    @property
    def temperature(self) -> float:
        """τ for the next training batch (the reference anneals before the batch's forward,
        counting batches from 1)."""
        c = self.cfg
        return gumbel_temperature(int(self.train_steps) + 1, c.gumbel_temperature, c.anneal_every, c.anneal_rate,
                                  c.min_temperature, c.anneal_temperature)

    # ------------------------------------------------------------------ the view HSD scores
    def view(self, model, items: torch.Tensor, embedded: torch.Tensor, users: torch.Tensor, train: bool,
             tau: float, cache: dict | None = None) -> HSDView:
        """Right-padded view of a left-padded batch ``items [B, L]`` with backbone embeddings
        ``embedded [B, L, H]``. SSDRec overrides this with its graph/augmentation stages."""
        lengths = (items > 0).sum(1)
        ids = left_to_right(items, lengths)
        x = left_to_right(embedded, lengths)
        return HSDView(ids, x, x, (ids > 0).to(x.dtype), lengths)

    def _check_prefix(self, targets: torch.Tensor) -> None:
        if bool((targets[:, :-1] > 0).any()) or not bool((targets[:, -1] > 0).all()):
            raise ValueError(
                f"denoiser '{self.registry_name}' needs one target in the last slot per instance "
                "(train.train_instances=prefix or auto); got targets in other slots"
            )

    # ------------------------------------------------------------------ training-time hooks
    def transform_inputs(self, embedded: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Drop the items both scorers flag and compact the rest to the right end.

        Returns the backbone input ``[B, L, H]`` (kept embeddings times the straight-through
        keep value) and sets ``ctx.pad_mask`` to the new padding."""
        model = ctx.model
        items = ctx.extras.get("input_items", ctx.batch["items"])
        users = ctx.batch["users"]
        train = ctx.stage == "train"
        tau = self.temperature
        if train:
            targets = ctx.extras["targets"]
            self._check_prefix(targets)
            query = model.embed(targets[:, -1:])  # [B, 1, H]: the instance's own target
        else:
            query = self.scorer.user_embedding(users).unsqueeze(1)
        view = self.view(model, items, embedded, users, train, tau)
        scores = self.scorer(view.x_seq, view.x_item, view.mask, view.lengths, query, reconstruct=train)
        decision = "sample" if train else self.eval_decision
        keep = (1.0 - self.scorer.noisy_votes(scores, decision, tau) * view.mask) * view.mask
        kept = (keep.detach() > 0.5) & (view.ids > 0)  # SSDRec: a deleted item leaves a hole (id 0)
        out_emb, out_ids = compact_right(kept, view.x_seq * keep.unsqueeze(-1), view.ids * kept)
        ctx.pad_mask = out_ids == 0
        ctx.extras["denoised_items"] = out_ids
        if train:
            self._training_terms(ctx, view, scores, users)
            self.train_steps += 1
            removed = float((view.mask.sum() - kept.sum()).item())
            self._stats["removed"] += removed
            self._stats["slots"] += float(view.mask.sum().item())
            self._log(model, {"train/hsd_removed": removed / max(float(view.mask.sum()), 1.0),
                              "train/hsd_tau": tau}, items.shape[0])
        return out_emb

    def _training_terms(self, ctx: StepContext, view: HSDView, scores: HSDScores, users: torch.Tensor) -> None:
        c = self.cfg
        d = curriculum_drop(ctx.epoch, c.curriculum_drop, c.curriculum_epochs)
        rate = max(0.0, c.filter_rate - d)
        B = view.ids.shape[0]
        negatives = torch.randint(1, self.n_items + 1, (B,), device=view.ids.device)
        neg_emb = ctx.model.embed(negatives.unsqueeze(1)).squeeze(1)
        filt = self.scorer.loss_filter(view.x_seq, view.mask, view.lengths, users, neg_emb, rate,
                                       zero_row_when_k0=self.filter_zero_k == "reference")
        keep_rows = curriculum_keep(scores.rec, d)
        ctx.extras["hsd_rows"] = keep_rows
        ctx.extras["hsd_losses"] = {
            "hsd_rec": c.rec_weight * scores.rec[keep_rows].mean(),
            "hsd_filter": c.filter_weight * filt,
        }

    def sample_weights(self, ctx: StepContext) -> torch.Tensor | None:
        """Curriculum: weight 1 for the instances with the lowest reconstruction loss, else 0
        (``[B, L]``; only the last slot carries a target)."""
        rows = ctx.extras.get("hsd_rows")
        if rows is None:
            return None
        targets = ctx.extras["targets"]
        return rows.to(torch.float32).unsqueeze(1).expand_as(targets)

    def auxiliary_loss(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        return ctx.extras.get("hsd_losses", {})

    def on_train_epoch_end(self, model, epoch: int) -> None:
        self.epoch_removed.append(self._stats["removed"] / max(self._stats["slots"], 1.0))
        self._stats = {"removed": 0.0, "slots": 0.0}

    def resume_state(self) -> dict:
        return {"epoch_removed": list(self.epoch_removed)}

    def load_resume_state(self, state: dict) -> None:
        self.epoch_removed = list(state["epoch_removed"])

    @staticmethod
    def _log(model, values: dict[str, float], batch_size: int) -> None:
        if getattr(model, "_trainer", None) is not None:
            model.log_dict(values, on_step=False, on_epoch=True, batch_size=batch_size)

    def report(self) -> dict:
        return {"preset": self.cfg.preset, "eval_decision": self.eval_decision, "filter_zero_k": self.filter_zero_k,
                "decision_logits": self.cfg.decision_logits,
                "final_temperature": self.temperature, "train_steps": int(self.train_steps),
                "train_removed_per_epoch": [round(x, 5) for x in self.epoch_removed],
                "export_decision_rates": self.export_decision_rates}

    # ------------------------------------------------------------------ export
    @staticmethod
    def _decision_counts(scores: HSDScores, mask: torch.Tensor) -> torch.Tensor:
        """Counts over the real slots of one batch (float64 ``[len(DECISION_RATES) + 1]``, the
        last entry = slots): how many each scorer's argmax calls noisy, how many each
        deterministic rule drops, and the expected number a sampled decision drops."""
        votes = lambda rule: HSDScorer.noisy_votes(scores, rule, 1.0)  # noqa: E731  deterministic rules
        counts = [*scores.argmax_votes(), votes("argmax"), votes("most_likely"), scores.noise_probability(),
                  torch.ones_like(mask)]
        return torch.stack([(c * mask).sum().double() for c in counts]).cpu()

    def export_cache(self, model) -> dict:
        """Per-export precomputation (SSDRec: the graph-enhanced item table)."""
        return {}

    @torch.no_grad()
    def export(self, model: "SequentialRecommender", sequences: Sequences) -> DenoisedSequences:
        """Keep decisions for every position of ``sequences`` with the inference query.

        Rows are cut from their end into windows of L items (the model's input length), each
        denoised like an evaluation history; ``score`` = probability that both samples say
        noisy. ``eval_decision: sample`` draws from a generator seeded with ``export_seed``
        (default: the run's seed)."""
        was_training = model.training
        model.eval()
        device = model.device
        L = self.max_len
        arrays = build_train_tensors(sequences, L, "windows")
        keep = np.ones(len(sequences.items), dtype=bool)
        score = np.zeros(len(sequences.items), dtype=np.float32)
        seed = self.cfg.export_seed if self.cfg.export_seed is not None else getattr(self.resources, "seed", 0)
        gen = torch.Generator(device=device).manual_seed(int(seed))
        cache = self.export_cache(model)
        rates = torch.zeros(len(DECISION_RATES) + 1, dtype=torch.float64)  # DECISION_RATES counts, slots
        n = len(arrays["items"])
        bs = self.cfg.export_batch_size
        for start in range(0, n, bs):  # loop over batches, not rows
            items = torch.as_tensor(arrays["items"][start:start + bs], device=device)
            users = torch.as_tensor(arrays["users"][start:start + bs], device=device)
            positions = torch.as_tensor(arrays["positions"][start:start + bs], device=device)
            view = self.view(model, items, model.embed(items), users, False, self.temperature, cache)
            query = self.scorer.user_embedding(users).unsqueeze(1)
            scores = self.scorer(view.x_seq, view.x_item, view.mask, view.lengths, query, reconstruct=False)
            noisy = self.scorer.noisy_votes(scores, self.eval_decision, self.temperature, gen) * view.mask
            rates += self._decision_counts(scores, view.mask)
            pos = left_to_right(positions, view.lengths)
            real = pos >= 0
            flat = pos[real].cpu().numpy()
            keep[flat] = (noisy[real] < 0.5).cpu().numpy()
            score[flat] = scores.noise_probability()[real].float().cpu().numpy()
        model.train(was_training)
        if self.export_decision_rates is None:
            total = max(float(rates[-1]), 1.0)
            self.export_decision_rates = {k: round(float(c) / total, 5) for k, c in zip(DECISION_RATES, rates)}
        return DenoisedSequences(sequences, keep, score=score, meta={"method": self.registry_name,
                                                                      "eval_decision": self.eval_decision})
