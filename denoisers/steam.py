"""STEAM — a self-correcting sequential recommender (Lin et al., WWW '23; specs/steam.md).

An item-wise corrector labels every position keep / delete / insert, and an autoregressive
insertion decoder generates the items missing before an "insert" position. Both read the
hidden states of the backbone's (bidirectional) encoder, which STEAM shares with its
BERT4Rec-like recommender: natively the ``bert4rec`` backbone *is* STEAM's encoder and
recommender. Other backbones use the transfer protocol (protocol.md §7): the harness trains
bert4rec + STEAM, exports the corrected training sequences (deletions and insertions) and
retrains the requested backbone on them; the run records ``mode: transfer from bert4rec``.

Training step (spec §4), on top of the backbone's own cloze loss on the (cropped) raw window:

* ``steam_corrector`` — CE of the corrector on a randomly corrupted copy of the window
  (inserted items must be deleted, the item after a deleted run must be labelled insert);
* ``steam_insert`` — teacher-forced CE of the decoder on the deleted runs (most recent first,
  then EOS);
* ``steam_rec_corrected`` — the backbone's own objective on the window as corrected by the
  current model (eval mode, no gradient, deterministic argmax decisions and greedy decoding).

Evaluation (``eval_path: corrected``, STEAM's "denoised" result) corrects every validation /
test history before the recommender scores it; ``raw`` scores the histories unchanged.

Presets (the ``preset`` key labels the run; explicit keys override it):

* ``paper`` (default): training corruption keep / delete / insert = 0.8 / 0.1 / 0.1, the
  distribution of STEAM's own noisy data (spec §7), and the insertion decoder adds position
  embeddings once at inference, as in training (``insert_decode: fixed``).
* ``reference``: the released code — corruption 0.4 / 0.5 / 0.1 (``plist = [0.4, 0.9]``) and
  position embeddings re-added at every decoding step (``insert_decode: reference``, spec §6).

Departures from the reference, all deliberate: the encoder is the backbone's (its depth,
heads, init and masking come from ``backbone.*``; the reference's 1 head / 1 layer / mask
0.5 is ``backbone.n_heads=1 backbone.n_layers=2 backbone.mask_ratio=0.5
backbone.last_mask_prob=0``); corrupted and corrected sequences are limited to the backbone's
``max_len`` slots (the reference pads raw ≤ 50 to 60); the decoder's argmax never picks
padding or the mask token (the reference may, and then drops them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import ConfigError
from benchmark.data.instances import build_train_tensors
from benchmark.data.sequences import DenoisedSequences, Sequences
from benchmark.registry import DENOISERS
from denoisers._steam_ops import apply_corrections, corrupt, insertion_lengths, lengths_of, slice_batch
from denoisers.base import Denoiser, StepContext

PRESETS = {
    "paper": {"keep_prob": 0.8, "delete_prob": 0.1, "insert_prob": 0.1, "insert_decode": "fixed"},
    "reference": {"keep_prob": 0.4, "delete_prob": 0.5, "insert_prob": 0.1, "insert_decode": "reference"},
}
KEEP, DELETE, INSERT = 0, 1, 2


@dataclass
class STEAMConfig:
    preset: str = "paper"  # paper | reference: defaults of the keys left null below
    keep_prob: float | None = None  # training corruption per turn (paper 0.8, reference 0.4)
    delete_prob: float | None = None  # (paper 0.1, reference 0.5)
    insert_prob: float | None = None  # (0.1 in both)
    insert_decode: str | None = None  # fixed | reference (position embeddings re-added every step)
    max_insert: int = 5  # longest deleted run / insertion list (decoder steps)
    corrupted_max_len: int = 0  # slots of corrupted sequences; 0 = the backbone's max_len
    slice_subsequence: bool = True  # train on a random contiguous crop of each window
    slice_max_len: int = 0  # longest crop; 0 = the backbone's max_len
    decoder_heads: int = 1
    decoder_inner: int = 0  # feed-forward width of the decoder layer; 0 = 4 * d
    dropout: float = 0.5  # decoder input and layer dropout
    corrector_weight: float = 1.0
    insert_weight: float = 1.0
    corrected_rec_weight: float = 1.0  # the backbone loss on corrected windows
    eval_path: str = "corrected"  # corrected | raw: histories scored at validation/test
    init: str = "xavier_normal"  # xavier_normal (reference) | normal (N(0, 0.02)) for STEAM's own weights
    export_batch_size: int = 512


def resolve(cfg: STEAMConfig, name: str = "steam") -> dict:
    """The effective corruption probabilities and decode mode after applying the preset;
    raises ``ConfigError`` for invalid values."""
    where = f"denoiser '{name}'"
    if cfg.preset not in PRESETS:
        raise ConfigError(f"{where}: preset={cfg.preset!r}; expected one of {', '.join(PRESETS)}")
    eff = {k: getattr(cfg, k) if getattr(cfg, k) is not None else v for k, v in PRESETS[cfg.preset].items()}
    probs = [eff["keep_prob"], eff["delete_prob"], eff["insert_prob"]]
    if min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6 or probs[0] + probs[1] <= 0:
        raise ConfigError(
            f"{where}: keep_prob/delete_prob/insert_prob = {probs[0]}/{probs[1]}/{probs[2]}; expected "
            "non-negative probabilities summing to 1 with keep_prob + delete_prob > 0"
        )
    if eff["insert_decode"] not in ("fixed", "reference"):
        raise ConfigError(f"{where}: insert_decode={eff['insert_decode']!r}; expected fixed or reference")
    if cfg.eval_path not in ("corrected", "raw"):
        raise ConfigError(f"{where}: eval_path={cfg.eval_path!r}; expected corrected or raw")
    if cfg.init not in ("xavier_normal", "normal"):
        raise ConfigError(f"{where}: init={cfg.init!r}; expected xavier_normal or normal")
    for key in ("max_insert", "decoder_heads", "export_batch_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{where}: {key}={getattr(cfg, key)}; expected >= 1")
    for key in ("corrupted_max_len", "slice_max_len", "decoder_inner"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{where}: {key}={getattr(cfg, key)}; expected >= 0 (0 = default)")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"{where}: dropout={cfg.dropout}; expected a probability in [0, 1)")
    return eff


class InsertionDecoder(nn.Module):
    """One causal transformer layer over ``[Z_t, E[g_1], …]`` + positions (spec §2).

    Vocabulary columns: 0 padding (never predicted), ``1..N`` items, ``N+1`` EOS. Item vectors
    are the backbone's (tied input/output table); EOS has its own vector."""

    def __init__(self, hidden: int, d: int, heads: int, inner: int, dropout: float, max_insert: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, d) if hidden != d else nn.Identity()
        self.position = nn.Parameter(torch.zeros(max_insert, d))
        self.eos = nn.Parameter(torch.zeros(1, d))
        self.dropout = nn.Dropout(dropout)
        self.layer = nn.TransformerEncoderLayer(d, heads, inner, dropout=dropout, activation="gelu", batch_first=True)
        self.max_insert = max_insert

    def tokens(self, ids: torch.Tensor, model) -> torch.Tensor:
        """Embeddings ``[..., d]`` of decoder ids (items via ``model.embed``, EOS, 0 = zeros)."""
        eos_id = model.n_items + 1
        is_eos = (ids == eos_id).unsqueeze(-1)
        emb = model.embed(ids.masked_fill(ids == eos_id, 0))
        return torch.where(is_eos, self.eos.view(*([1] * ids.dim()), -1), emb)

    def _logits(self, h: torch.Tensor, model) -> torch.Tensor:
        table = torch.cat([model.output_table(), self.eos], dim=0)  # [N + 2, d]
        z = h @ table.T
        z[..., 0] = float("-inf")
        return z

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1]
        causal = torch.triu(torch.ones(k, k, dtype=torch.bool, device=x.device), diagonal=1)
        return self.layer(x, src_mask=causal)

    def teacher_forced(self, z: torch.Tensor, previous: torch.Tensor, model) -> torch.Tensor:
        """Logits ``[P, K, N+2]`` for start states ``z [P, h]`` and inputs ``previous [P, K-1]``."""
        x = torch.cat([self.proj(z).unsqueeze(1), self.tokens(previous, model)], dim=1)
        x = self.dropout(x + self.position[: x.shape[1]])
        return self._logits(self._run(x), model)

    def greedy(self, z: torch.Tensor, model, mode: str) -> torch.Tensor:
        """Greedy ids ``[P, K]`` (most recent missing item first; EOS = ``N+1``).

        ``fixed`` adds each token's position embedding once; ``reference`` re-adds the
        embeddings of all present tokens at every step (token j ends with ``K - j`` copies)."""
        toks = self.proj(z).unsqueeze(1)
        out = []
        for step in range(self.max_insert):  # bounded by max_insert
            k = toks.shape[1]
            if mode == "fixed":
                x = toks + self.position[:k]
            else:
                copies = (step + 1 - torch.arange(k, device=z.device)).to(toks.dtype).view(1, k, 1)
                x = toks + copies * self.position[:k]
            nxt = self._logits(self._run(self.dropout(x))[:, -1], model).argmax(-1)
            out.append(nxt)
            toks = torch.cat([toks, self.tokens(nxt, model).unsqueeze(1)], dim=1)
        return torch.stack(out, dim=1)


@DENOISERS.register("steam")
class STEAM(Denoiser):
    """STEAM's corrector + insertion decoder on the backbone's encoder (see module docstring)."""

    Config = STEAMConfig
    level = "train"
    native_backbones = ("bert4rec",)
    default_native = "bert4rec"

    def __init__(self, cfg: STEAMConfig | None = None, resources=None) -> None:
        super().__init__(cfg, resources)
        eff = resolve(self.cfg, getattr(type(self), "registry_name", "steam"))
        self.probs = (float(eff["keep_prob"]), float(eff["delete_prob"]), float(eff["insert_prob"]))
        self.decode_mode = eff["insert_decode"]
        self.register_buffer("op_counts", torch.zeros(3, dtype=torch.long), persistent=False)
        self.export_stats: dict = {}

    # ------------------------------------------------------------------ setup
    def attach(self, model) -> None:
        if model.causal:
            raise ConfigError(
                f"denoiser 'steam' shares a bidirectional encoder, but backbone '{getattr(model, 'registry_name', model)}' "
                "is causal; use bert4rec (native) or let the harness transfer STEAM's corrected data"
            )
        cfg = self.cfg
        self.max_len = int(model.max_len)
        self.corrupted_len = cfg.corrupted_max_len or self.max_len
        if self.corrupted_len > self.max_len:
            raise ConfigError(
                f"denoiser 'steam': corrupted_max_len={cfg.corrupted_max_len} exceeds the backbone's "
                f"max_len={self.max_len} (its position table); lower it or raise dataset.max_len"
            )
        self.slice_len = cfg.slice_max_len or self.max_len
        d, h = model.embedding_size, model.hidden_size
        self.eos_id = model.n_items + 1
        self.corrector = nn.Linear(h, 3)
        self.decoder = InsertionDecoder(h, d, cfg.decoder_heads, cfg.decoder_inner or 4 * d, cfg.dropout, cfg.max_insert)
        for name, p in list(self.corrector.named_parameters()) + list(self.decoder.named_parameters()):
            if p.dim() >= 2:
                nn.init.xavier_normal_(p) if cfg.init == "xavier_normal" else nn.init.normal_(p, 0.0, 0.02)
            elif "bias" in name:
                nn.init.zeros_(p)

    # ------------------------------------------------------------------ corrector inference
    def decide(self, model, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Deterministic decisions for left-padded ``items [B, L]``.

        Returns ``decisions [B, L]`` (0 keep / 1 delete / 2 insert, 0 at padding),
        ``p_delete [B, L]`` (softmax probability of delete) and ``generated [B, L, K]`` (greedy
        insertion lists at insert slots, most recent first; 0 elsewhere)."""
        z = model.encode(model.embed(items), items == 0)
        probs = self.corrector(z).softmax(-1)
        decisions = probs.argmax(-1).masked_fill(items == 0, KEEP)
        generated = torch.zeros(*items.shape, self.cfg.max_insert, dtype=torch.long, device=items.device)
        ins = decisions == INSERT
        if ins.any():
            generated[ins] = self.decoder.greedy(z[ins], model, self.decode_mode)
        return decisions, probs[..., DELETE], generated

    def correct(self, model, items: torch.Tensor, out_len: int, carry: torch.Tensor | None = None):
        """Corrected ``items`` (``[B, out_len]``, most recent kept) with the model in eval mode and
        no gradient; ``carry`` (e.g. positions) follows kept items, inserted ones get -1."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                decisions, _, generated = self.decide(model, items)
                return apply_corrections(items, decisions, generated, self.eos_id, out_len, carry)
        finally:
            model.train(was_training)

    @property
    def denoises_eval_inputs(self) -> bool:
        return self.cfg.eval_path == "corrected"

    # ------------------------------------------------------------------ hooks
    def prepare_batch(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        batch = ctx.batch
        if ctx.stage == "train":
            return slice_batch(batch, self.slice_len) if self.cfg.slice_subsequence else batch
        if self.cfg.eval_path == "raw":
            return batch
        corrected, positions = self.correct(ctx.model, batch["items"], batch["items"].shape[1], batch.get("positions"))
        out = dict(batch, items=corrected)
        if positions is not None:
            out["positions"] = positions
        if "lengths" in batch:
            out["lengths"] = lengths_of(corrected)
        return out

    def auxiliary_loss(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.stage != "train":
            return {}
        model, raw = ctx.model, ctx.batch["items"][:, -self.corrupted_len :]
        keep, delete, insert = self.probs
        c = corrupt(raw, model.n_items, keep, delete, insert, self.corrupted_len, self.cfg.max_insert, self.eos_id)
        self.op_counts += torch.bincount(c.ops[c.items > 0], minlength=3)[:3]
        z = model.encode(model.embed(c.items), c.items == 0)
        real = c.items > 0
        l_ops = F.cross_entropy(self.corrector(z[real]), c.ops[real]) if real.any() else z.sum() * 0
        ins = c.ops == INSERT
        targets = c.targets[ins]
        if ins.any() and (targets > 0).any():
            logits = self.decoder.teacher_forced(z[ins], targets[:, :-1], model)
            has = targets > 0
            l_ins = F.cross_entropy(logits[has], targets[has])
        else:
            l_ins = z.sum() * 0
        corrected, _ = self.correct(model, raw, self.corrupted_len)
        l_rec = self._backbone_loss(model, corrected)
        return {
            "steam_corrector": self.cfg.corrector_weight * l_ops,
            "steam_insert": self.cfg.insert_weight * l_ins,
            "steam_rec_corrected": self.cfg.corrected_rec_weight * l_rec,
        }

    @staticmethod
    def _backbone_loss(model, items: torch.Tensor) -> torch.Tensor:
        """The backbone's own training objective (e.g. BERT4Rec's cloze) on ``items [B, L]``."""
        inputs, targets = model.training_inputs({"items": items, "targets": torch.zeros_like(items)})
        hidden = model.encode(model.embed(inputs), inputs == 0)
        has = targets > 0
        if not has.any():
            return hidden.sum() * 0
        rows = has.nonzero(as_tuple=True)[0]
        return model.next_item_loss(model.target_states(hidden, targets), targets[has], inputs[rows]).mean()

    # ------------------------------------------------------------------ export
    def export(self, model, sequences: Sequences) -> DenoisedSequences:
        """Corrected ``sequences``: delete decisions → keep 0 (score = p(delete)); insertion
        lists → ``insert_items`` before their position, in chronological order.

        Rows are cut from their end into windows of the backbone's ``max_len`` (each position
        is decided once, with its window as context)."""
        arrays = build_train_tensors(sequences, self.max_len, "windows")
        device = next(model.parameters()).device
        nnz = len(sequences.items)
        keep = np.ones(nnz, dtype=bool)
        score = np.zeros(nnz, dtype=np.float32)
        ins_items, ins_before = [], []
        counts = np.zeros(3, dtype=np.int64)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(arrays["items"]), self.cfg.export_batch_size):  # batches
                    sl = slice(start, start + self.cfg.export_batch_size)
                    items = torch.from_numpy(arrays["items"][sl]).to(device)
                    pos = torch.from_numpy(arrays["positions"][sl]).to(device)
                    decisions, p_delete, generated = self.decide(model, items)
                    real = items > 0
                    flat = pos[real].cpu().numpy()
                    keep[flat] = (decisions[real] != DELETE).cpu().numpy()
                    score[flat] = p_delete[real].float().cpu().numpy()
                    counts += torch.bincount(decisions[real], minlength=3)[:3].cpu().numpy()
                    items_i, anchors = _chronological_insertions(decisions, generated, pos, self.eos_id)
                    ins_items.append(items_i.cpu().numpy())
                    ins_before.append(anchors.cpu().numpy())
        finally:
            model.train(was_training)
        insert_items = np.concatenate(ins_items) if ins_items else np.zeros(0, np.int64)
        insert_before = np.concatenate(ins_before) if ins_before else np.zeros(0, np.int64)
        out = DenoisedSequences(
            sequences, keep, score=score, insert_items=insert_items.astype(np.int64),
            insert_before=insert_before.astype(np.int64), meta={"method": "steam", "preset": self.cfg.preset},
        )
        changed_rows = np.zeros(sequences.n_rows, dtype=bool)
        changed_rows[sequences.row_of_position[~keep]] = True
        changed_rows[sequences.row_of_position[insert_before]] = True
        total = max(int(counts.sum()), 1)
        self.export_stats = {
            "positions": int(counts.sum()),
            "keep_share": float(counts[KEEP] / total), "delete_share": float(counts[DELETE] / total),
            "insert_share": float(counts[INSERT] / total), "inserted_items": int(len(insert_items)),
            "unchanged_rows_share": float(1.0 - changed_rows.mean()) if sequences.n_rows else 1.0,
        }
        return out

    def resume_state(self) -> dict:
        return {"op_counts": self.op_counts.clone()}  # a non-persistent buffer: counts of the whole training

    def load_resume_state(self, state: dict) -> None:
        self.op_counts.copy_(state["op_counts"])

    def report(self) -> dict:
        ops = self.op_counts.cpu().numpy().astype(np.float64)
        keep, delete, insert = self.probs
        return {
            "preset": self.cfg.preset,
            "train_corruption": {"keep": keep, "delete": delete, "insert": insert},
            "insert_decode": self.decode_mode,
            "eval_path": self.cfg.eval_path,
            "corrupted_ops_share": (ops / max(ops.sum(), 1.0)).round(4).tolist(),  # keep / delete / insert labels
            "export": self.export_stats,
        }


def _chronological_insertions(decisions: torch.Tensor, generated: torch.Tensor, positions: torch.Tensor, eos: int):
    """Flat ``(items [n], anchors [n])`` of all insertion lists of a batch, each list reversed
    to chronological order and anchored at the flat position of its slot."""
    ins = (decisions == INSERT) & (positions >= 0)
    lists = generated[ins]
    lens = insertion_lengths(lists, eos)
    anchors = positions[ins]
    total = int(lens.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    which = torch.repeat_interleave(torch.arange(len(lens), device=lens.device), lens)
    within = torch.arange(total, device=lens.device) - (torch.cumsum(lens, 0) - lens)[which]
    return lists[which, lens[which] - 1 - within], anchors[which]
