"""IADSR — Interest Alignment for Denoising Sequential Recommendation (Wu et al., CIKM '25).

Spec: specs/iadsr.md. Stage 1 (once, in ``attach``): semantic long- and short-term interests
of the training rows (``denoisers.iadsr_interests``), kept on the model's device as flat
buffers aligned with ``split.train.items``, so ``batch['positions']`` gathers them. Stage 2
(every training step, ``denoisers.iadsr_losses``): bias-free projections to the backbone's
hidden size, InfoNCE alignment (long + short), qualification ``cos(e2, e1) >= theta``, keep
scores ``c1 + c2 + c3``, hard straight-through Gumbel-sigmoid masks, reconstruction of the
input embeddings from the masked states for qualified users. With ``progressive_mask`` the
previous epoch's masks multiply the input embeddings (paper Eq. 19), keyed by absolute
training position.

Backbones through the contract: the short-term states ``h_t`` are the backbone's per-slot
hidden states (GRU4Rec, SASRec: causal; Caser: its per-slot Caser state of the window ending
at the slot). When a backbone trains on inputs that are not the history itself (BERT4Rec's
cloze inputs with mask tokens), one extra unmasked forward over the history gives the states;
BERT4Rec is bidirectional, so there ``h_t`` also sees the later items of the window.

Presets: ``iadsr`` follows the paper's intent; ``iadsr-reference`` (configs/denoisers/
iadsr-reference.yaml) the released code (theta -1, no progressive mask, long text with the
training target, head truncation, in-batch tanh CE, lr 1e-5, batch 32, one instance per row).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict

import numpy as np
import torch
from torch import nn

from benchmark.config import ConfigError
from benchmark.data.sequences import DenoisedSequences, Sequences
from benchmark.registry import DENOISERS
from denoisers.base import Denoiser, StepContext
from denoisers.iadsr_interests import LONG_TEXT, TRUNCATE, compute_interests
from denoisers.iadsr_losses import gumbel_sigmoid, interest_terms, keep_scores, qualified

EXPORT_MODES = ("mode", "sample", "noisefree")
LONG_POOLS = ("max_all", "max_valid", "last")
MODE_THRESHOLD = math.log(math.log(2.0))  # P(keep) > 0.5  <=>  score > ln ln 2 ≈ -0.367


@dataclass
class IADSRConfig:
    theta: float = -0.9  # qualification threshold on cos(e2, e1); reference code: -1.0 (everyone)
    infonce_tau: float = 0.1
    gumbel_tau: float = 1.0
    long_pool: str = "max_all"  # collaborative long-term interest: max_all | max_valid | last (user state)
    long_text: str = "history"  # history (training inputs) | history+target (all training items; reference)
    interest_encoder: str = "text"  # text (encode every window text; the paper) | mean (mean item text embedding)
    text_encoder: str = "minilm"  # registered backend or configs/text preset (minilm, llm2vec, ...)
    text_encoder_cfg: Dict[str, Any] = field(default_factory=dict)  # options passed to the encoder
    max_chars: int = 256  # text budget per interest, whole titles (0 = only the encoder's own limit)
    truncate: str = "tail"  # tail = keep the most recent titles | head = the oldest (reference)
    progressive_mask: bool = True  # paper Eq. 19; the released code never applies it
    recon_target: str = "input"  # input (current, possibly masked, embeddings) | original (unmasked)
    recon_reduce: str = "mean"  # mean (GRU reference) | sum (SASRec/Caser reference) over users
    info_weight: float = 1.0
    rec_weight: float = 1.0
    short_block: int = 1024  # negatives block of the short InfoNCE (0 = all slots of the batch)
    export: str = "mode"  # mode (P(keep) > .5) | sample (one seeded draw) | noisefree (score > 0)
    semantic_dtype: str = "float16"  # storage of the precomputed vectors: float16 | float32
    export_batch_size: int = 512


@dataclass
class IADSRReferenceConfig(IADSRConfig):
    interest_encoder: str = "text"
    theta: float = -1.0
    long_text: str = "history+target"
    max_chars: int = 0
    truncate: str = "head"
    progressive_mask: bool = False


def _check(cfg: IADSRConfig, where: str) -> None:
    choices = {"long_pool": LONG_POOLS, "long_text": LONG_TEXT, "interest_encoder": ("text", "mean"),
               "truncate": TRUNCATE, "recon_target": ("input", "original"), "recon_reduce": ("mean", "sum"),
               "export": EXPORT_MODES, "semantic_dtype": ("float16", "float32")}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"{where}: {key}={getattr(cfg, key)!r}; expected one of {', '.join(allowed)}")
    if cfg.infonce_tau <= 0 or cfg.gumbel_tau <= 0:
        raise ConfigError(f"{where}: infonce_tau and gumbel_tau must be > 0")
    if cfg.export_batch_size < 1:
        raise ConfigError(f"{where}: export_batch_size must be >= 1")


@DENOISERS.register("iadsr")
class IADSR(Denoiser):
    """IADSR (CIKM'25): LLM-text interest alignment + Gumbel masks, trained jointly with any backbone."""

    Config = IADSRConfig
    requires = frozenset({"item_text", "text_embeddings"})
    encoder_fields = ("text_encoder",)
    level = "train"
    accepts_trimmed_batches = True

    def __init__(self, cfg=None, resources=None) -> None:
        super().__init__(cfg, resources)
        _check(self.cfg, f"denoiser '{getattr(type(self), 'registry_name', 'iadsr')}'")
        self._semantic = None
        self._epochs: list[dict] = []
        self._acc = torch.zeros(4)  # kept slots, scored slots, qualified rows, rows (this epoch)

    # ------------------------------------------------------------------ stage 1
    def semantic_interests(self, seqs: Sequences | None = None):
        """``SemanticInterests`` of ``seqs`` (default: the run's training split; computed once)."""
        from benchmark.text.base import resolve_encoder

        res = self.resources
        if res is None:
            raise ValueError("IADSR needs resources (item text, a text encoder); build it with make_denoiser(section, resources)")
        own = seqs is None or seqs is res.split.train
        if own and self._semantic is not None:
            return self._semantic
        res.require_text("IADSR")
        cfg = self.cfg
        backend, options = resolve_encoder(cfg.text_encoder, dict(cfg.text_encoder_cfg))
        if backend == "llm2vec":
            options.setdefault("truncate", cfg.truncate)
        encoder = res.text_encoder(backend, **options)
        before, t0 = encoder.total_encoded, time.perf_counter()
        encode = lambda texts: res.encode_texts(texts, backend, **options)  # noqa: E731
        item_vectors = encode(res.item_text) if cfg.interest_encoder == "mean" else None
        sem = compute_interests(seqs if seqs is not None else res.split.train, res.item_text, encode, item_vectors,
                                interest_encoder=cfg.interest_encoder, long_text=cfg.long_text,
                                max_chars=cfg.max_chars, truncate=cfg.truncate, dtype=cfg.semantic_dtype)
        sem.stats.update(encoder=encoder.encoder_id, encoded=int(encoder.total_encoded - before),
                         seconds=time.perf_counter() - t0)
        if own:
            self._semantic = sem
        return sem

    def attach(self, model) -> None:
        sem = self.semantic_interests()
        train = self.resources.split.train
        h, d, D = model.hidden_size, model.embedding_size, sem.short.shape[1]
        self.short_proj = nn.Linear(D, h, bias=False)  # l1
        self.long_proj = nn.Linear(D, h, bias=False)  # l2
        self.decoder = nn.Linear(h, d)
        nnz = len(train.items)
        self.register_buffer("short_vecs", torch.from_numpy(sem.short), persistent=False)
        self.register_buffer("long_vecs", torch.from_numpy(sem.long), persistent=False)
        self.register_buffer("row_of_pos", torch.from_numpy(train.row_of_position), persistent=False)
        self.register_buffer("mask_prev", torch.ones(nnz, dtype=torch.uint8), persistent=False)
        self.register_buffer("mask_cur", torch.ones(nnz, dtype=torch.uint8), persistent=False)
        self._acc = torch.zeros(4)
        self._epochs = []

    # ------------------------------------------------------------------ stage 2
    def _prev_keep(self, positions: torch.Tensor) -> torch.Tensor:
        """Previous-epoch keep mask ``[B, L]`` (1 at padding and unvisited positions)."""
        k = self.mask_prev[positions.clamp(min=0)]
        return torch.where(positions >= 0, k, torch.ones_like(k))

    def transform_inputs(self, embedded: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if ctx.stage != "train":
            return embedded
        ctx.extras["iadsr_original"] = embedded
        if self.cfg.progressive_mask and ctx.epoch > 0:
            embedded = embedded * self._prev_keep(ctx.batch["positions"]).unsqueeze(-1).to(embedded.dtype)
        return embedded

    def _states(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hidden ``[B, L, h]``, input embeddings, original embeddings) over the history.

        The step's own forward when it ran on the history; otherwise (cloze inputs) one extra
        forward over ``batch['items']`` with the same input mask."""
        model, items = ctx.model, ctx.batch["items"]
        inputs = ctx.extras.get("input_items", items)
        if inputs is items or torch.equal(inputs, items):
            return ctx.hidden, ctx.embedded, ctx.extras.get("iadsr_original", ctx.embedded)
        original = model.embed(items)
        embedded = original
        if self.cfg.progressive_mask and ctx.epoch > 0:
            embedded = original * self._prev_keep(ctx.batch["positions"]).unsqueeze(-1).to(original.dtype)
        return model.encode(embedded, items == 0), embedded, original

    def _long_collab(self, model, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.cfg.long_pool == "max_all":
            return hidden.max(dim=1).values
        if self.cfg.long_pool == "max_valid":
            return hidden.masked_fill(~valid.unsqueeze(-1), float("-inf")).max(dim=1).values
        return model.user_state(hidden)

    def _batch_interests(self, model, hidden, positions, short=None, long=None, row_of_pos=None):
        """Gathered interests of a batch: (valid ``[B, L]``, row ``[M]``, rows ``[B]``, h ``[M, h]``,
        l ``[M, h]``, e1 ``[B, h]``, e2 ``[B, h]``). ``short``/``long``/``row_of_pos`` default to
        the training split's buffers (``export`` passes those of other sequences)."""
        short = self.short_vecs if short is None else short
        long = self.long_vecs if long is None else long
        row_of_pos = self.row_of_pos if row_of_pos is None else row_of_pos
        valid = positions >= 0
        rows = row_of_pos[positions.max(dim=1).values.clamp(min=0)]
        row = valid.nonzero(as_tuple=True)[0]
        pos = positions[valid]
        h = hidden[valid]
        l = self.short_proj(short[pos].float())
        e1 = self.long_proj(long[rows].float())
        e2 = self._long_collab(model, hidden, valid)
        return valid, row, rows, h, l, e1, e2

    def auxiliary_loss(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.stage != "train":
            return {}
        cfg = self.cfg
        positions = ctx.batch["positions"]
        hidden, embedded, original = self._states(ctx)
        valid, row, rows, h, l, e1, e2 = self._batch_interests(ctx.model, hidden, positions)
        target = (embedded if cfg.recon_target == "input" else original)[valid]
        uniform = torch.rand(len(row), device=h.device)
        out = interest_terms(h, l, row, e1, e2, target, self.decoder, uniform, theta=cfg.theta,
                             infonce_tau=cfg.infonce_tau, gumbel_tau=cfg.gumbel_tau, recon_reduce=cfg.recon_reduce,
                             short_block=cfg.short_block, long_exclude=rows.unsqueeze(0) == rows.unsqueeze(1))
        scored = out.qualified[row]
        with torch.no_grad():
            if cfg.progressive_mask:
                self.mask_cur[positions[valid][scored]] = out.hard[scored].to(torch.uint8)
            self._acc = self._acc.to(h.device) + torch.stack([
                out.hard[scored].sum(), scored.sum(), out.qualified.sum(), torch.tensor(len(rows), device=h.device),
            ]).float()
        return {"iadsr_info_long": cfg.info_weight * out.loss_long, "iadsr_info_short": cfg.info_weight * out.loss_short,
                "iadsr_recon": cfg.rec_weight * out.loss_rec}

    def on_train_epoch_end(self, model, epoch: int) -> None:
        kept, scored, qual, n = self._acc.tolist()
        stats = {"epoch": epoch, "keep_rate": kept / scored if scored else 1.0, "qualified_rate": qual / n if n else 0.0}
        self._epochs.append(stats)
        if getattr(model, "_trainer", None) is not None:
            model.log("train/iadsr_keep_rate", stats["keep_rate"])
            model.log("train/iadsr_qualified_rate", stats["qualified_rate"])
        self._acc = torch.zeros(4)
        if self.cfg.progressive_mask:
            self.mask_prev.copy_(self.mask_cur)
            self.mask_cur.fill_(1)

    def resume_state(self) -> dict:
        # mask_prev is a non-persistent buffer (testing the best checkpoint keeps the final mask)
        return {"epochs": [dict(e) for e in self._epochs], "mask_prev": self.mask_prev.clone()}

    def load_resume_state(self, state: dict) -> None:
        self._epochs = [dict(e) for e in state["epochs"]]
        self.mask_prev.copy_(state["mask_prev"])

    def report(self) -> dict:
        sem = self._semantic.stats if self._semantic is not None else {}
        return {"semantic": sem, "epochs": list(self._epochs)}

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def export(self, model, sequences: Sequences) -> DenoisedSequences:
        """Keep decisions for every position of ``sequences`` from one pass of the trained model
        over raw windows (no input mask). ``export``: ``mode`` keeps iff P(keep) > 0.5, i.e.
        score > ln ln 2; ``noisefree`` iff score > 0; ``sample`` one Gumbel draw seeded with the
        run seed. Rows whose window is not qualified keep everything. ``score`` of the result is
        ``-score`` (higher = more likely noise)."""
        from benchmark.data.instances import build_train_tensors

        own = sequences is self.resources.split.train or (
            len(sequences.items) == len(self.resources.split.train.items)
            and np.array_equal(sequences.items, self.resources.split.train.items)
            and np.array_equal(sequences.offsets, self.resources.split.train.offsets))
        short, long = self.short_vecs, self.long_vecs
        row_of_pos = torch.from_numpy(sequences.row_of_position).to(short.device)
        if not own:
            sem = self.semantic_interests(sequences)
            short, long = torch.from_numpy(sem.short).to(short.device), torch.from_numpy(sem.long).to(short.device)
        arrays = build_train_tensors(sequences, model.max_len, "windows")
        nnz = len(sequences.items)
        score = torch.zeros(nnz, device=short.device)
        qual = torch.ones(nnz, dtype=torch.bool, device=short.device)
        was_training = model.training
        model.eval()
        device = short.device
        for lo in range(0, len(arrays["items"]), self.cfg.export_batch_size):  # batches, not users
            batch = {k: torch.from_numpy(v[lo: lo + self.cfg.export_batch_size]).to(device)
                     for k, v in arrays.items() if k in ("items", "positions", "users")}
            ctx = StepContext(model, batch, "export", model.current_epoch)
            ctx.extras["input_items"] = batch["items"]
            hidden = model(batch["items"], ctx)
            positions = batch["positions"]
            valid, row, _, h, l, e1, e2 = self._batch_interests(model, hidden, positions, short, long, row_of_pos)
            pos = positions[valid]
            score[pos] = keep_scores(e1, e2, h, l, row)
            qual[pos] = qualified(e1, e2, self.cfg.theta)[row]
        model.train(was_training)
        if self.cfg.export == "mode":
            keep = score > MODE_THRESHOLD
        elif self.cfg.export == "noisefree":
            keep = score > 0
        else:
            gen = torch.Generator().manual_seed(int(getattr(self.resources, "seed", 0)))
            uniform = torch.rand(nnz, generator=gen).to(device)
            keep = gumbel_sigmoid(score, uniform, self.cfg.gumbel_tau)[1] > 0.5
        keep = keep | ~qual
        return DenoisedSequences(sequences, keep=keep.cpu().numpy(), score=(-score).cpu().numpy().astype(np.float32),
                                 meta={"method": "iadsr", "export": self.cfg.export})


@DENOISERS.register("iadsr-reference")
class IADSRReference(IADSR):
    """IADSR as the released code behaves (theta -1, no progressive mask, head truncation)."""

    Config = IADSRReferenceConfig
