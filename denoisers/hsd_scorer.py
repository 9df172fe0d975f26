"""HSD's two inconsistency scorers and its auxiliary losses (specs/hsd.md §2–§5).

All tensors are in the reference's **right-padded** slot layout (items in slots ``0..n-1``),
because the slot-indexed modules (``conv`` over slots, ``BatchNorm1d(L)``) learn one set of
weights per slot and must see the same layout at training and inference time.

Shapes: ``B`` batch, ``L`` slots (fixed: the slots are conv channels), ``H`` = the backbone's
embedding size (HSD shares the backbone's item table).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from denoisers.seq_ops import hard_gumbel, zero_largest


DECISION_LOGITS = ("sigmoid", "raw")
DECISIONS = ("sample", "argmax", "most_likely")  # how "noisy" votes are drawn (HSDScorer.noisy_votes)


@dataclass
class HSDScores:
    """``seq`` and ``item``: 2-way decision logits ``[B, L, 2]`` (index 1 = "noisy"; sigmoid
    outputs in (0, 1) as in the reference, or the raw linear outputs, see ``HSDScorer``);
    ``rec``: per-sequence reconstruction loss ``[B]`` (None at inference)."""

    seq: torch.Tensor
    item: torch.Tensor
    rec: torch.Tensor | None

    def noise_probability(self) -> torch.Tensor:
        """``[B, L]``: probability that both hard samples say "noisy"
        (``softmax(S_item)[..., 1] * softmax(S_seq)[..., 1]``)."""
        return F.softmax(self.item, -1)[..., 1] * F.softmax(self.seq, -1)[..., 1]

    def argmax_votes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``([B, L], [B, L])`` float: each scorer's likelier vote is "noisy" (item, sequence)."""
        return ((self.item[..., 1] > self.item[..., 0]).to(self.item.dtype),
                (self.seq[..., 1] > self.seq[..., 0]).to(self.seq.dtype))


class HSDScorer(nn.Module):
    """Sequence-level (BiLSTM autoencoder + conv over slots) and item-level (attention against
    a query) inconsistency scores, plus the user table used as inference query.

    Args:
        hidden: H, the backbone's embedding size.
        max_len: L, slots per sequence.
        n_users: user ids are ``1..n_users`` (row 0 = padding).
        ae_dropout / att_dropout: the reference's ``our_ae_drop_out`` / ``our_att_drop_out``.
        decision_logits: ``sigmoid`` (reference: the two-way scores pass through a sigmoid and
            are then used as Gumbel-softmax logits, so a hard sample is "noisy" with probability
            between σ(-1) = 0.27 and σ(1) = 0.73 whatever the model learns) or ``raw`` (the linear
            outputs are the logits: decisions can become confident). Argmax decisions agree.
    """

    def __init__(self, hidden: int, max_len: int, n_users: int, ae_dropout: float, att_dropout: float,
                 decision_logits: str = "sigmoid") -> None:
        super().__init__()
        if decision_logits not in DECISION_LOGITS:
            raise ValueError(f"HSD: decision_logits={decision_logits!r}; expected {' or '.join(DECISION_LOGITS)}")
        self.squash = decision_logits == "sigmoid"
        H, L = hidden, max_len
        self.hidden, self.max_len = H, L
        self.user_embedding = nn.Embedding(n_users + 1, H, padding_idx=0)
        self.rnn = nn.LSTM(H, H, bidirectional=True, batch_first=True)
        self.conv = nn.Conv2d(L, L, (1, 2))  # channels = slots: every slot mixes all slots' (dec, x)
        self.seq_mlp = nn.Linear(H, 2, bias=False)
        self.ae_dropout = nn.Dropout(ae_dropout)
        self.slot_norm = nn.BatchNorm1d(L)  # normalises each slot over batch x H
        self.att_dropout = nn.Dropout(att_dropout)
        self.fc_u = nn.Linear(H, H, bias=False)
        self.fc_v = nn.Linear(H, H, bias=True)
        self.fc_e = nn.Linear(H, 2, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """Reference init: xavier_normal for Linear/Embedding weights, zero biases, xavier_uniform
        for the LSTM's forward-direction weights; conv, BatchNorm and reverse LSTM weights keep
        PyTorch defaults."""
        for m in (self.user_embedding, self.seq_mlp, self.fc_u, self.fc_v, self.fc_e):
            nn.init.xavier_normal_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.rnn.weight_ih_l0)
        nn.init.xavier_uniform_(self.rnn.weight_hh_l0)

    # ------------------------------------------------------------------ scores
    def forward(
        self,
        x_seq: torch.Tensor,
        x_item: torch.Tensor,
        mask: torch.Tensor,
        lengths: torch.Tensor,
        query: torch.Tensor,
        reconstruct: bool,
    ) -> HSDScores:
        """Scores for one batch.

        Args:
            x_seq: ``[B, L, H]`` raw item embeddings (autoencoder input and target).
            x_item: ``[B, L, H]`` features of the item-level scorer (``x_seq`` in HSD, the
                graph-enhanced embeddings in SSDRec).
            mask: ``[B, L]`` float, 1 at real slots.
            lengths: ``[B]`` lengths dividing the reconstruction loss.
            query: ``[B, 1, H]`` (target item embedding in training, user embedding otherwise).
            reconstruct: compute the reconstruction loss.
        """
        if x_seq.shape[1] != self.max_len:
            raise ValueError(f"HSD: batches must have exactly L={self.max_len} slots (conv over slots), got {x_seq.shape[1]}")
        m = mask.unsqueeze(-1)
        H = self.hidden
        # sequence level: the same BiLSTM encodes and decodes; directions are summed
        out, _ = self.rnn(self.ae_dropout(x_seq) * m)
        enc = (out[..., :H] + out[..., H:]) * m
        out2, _ = self.rnn(enc)
        dec = out2[..., :H] + out2[..., H:]
        rec = None
        if reconstruct:
            rec = ((dec * m - x_seq * m) ** 2).sum(dim=(1, 2)) / lengths.clamp(min=1).to(dec.dtype)
        mixed = self.conv(torch.stack((dec, x_seq), dim=-1)).squeeze(-1)  # [B, L, H]
        mixed = F.relu(self.ae_dropout(mixed))
        s_seq = self.seq_mlp(mixed)
        s_seq = (torch.sigmoid(s_seq) if self.squash else s_seq) * m
        # item level: attention of every slot against the query
        f = self.att_dropout(self.slot_norm(x_item) * m) * m
        e = self.fc_e(torch.tanh(self.fc_u(f) * m + self.fc_v(query))) * m
        s_item = torch.sigmoid(e) if self.squash else e
        return HSDScores(s_seq, s_item, rec)

    # ------------------------------------------------------------------ decisions
    @staticmethod
    def noisy_votes(
        scores: HSDScores, decision: str, tau: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[B, L]`` float "noisy" votes (1 = drop), before masking. ``decision`` (one of
        :data:`DECISIONS`):

        - ``sample``: product of the two hard Gumbel samples' class-1 entries (straight-through
          gradient; training, and the reference's evaluation). A slot is dropped with probability
          ``P = softmax(item)[1] · softmax(seq)[1]`` (:meth:`HSDScores.noise_probability`).
        - ``argmax``: product of the two per-scorer argmax decisions. Not the likelier outcome of
          the sampled decision: two scorers at 0.6 each drop every such slot, while a sample
          drops it with probability 0.36.
        - ``most_likely``: drop iff ``P > 0.5``, the likelier outcome of the sampled decision the
          backbone was trained with (a subset of ``argmax``'s drops)."""
        if decision == "sample":
            g_item = hard_gumbel(scores.item, tau, generator)[..., 1]
            g_seq = hard_gumbel(scores.seq, tau, generator)[..., 1]
            return g_item * g_seq
        if decision == "most_likely":
            return (scores.noise_probability() > 0.5).to(scores.item.dtype)
        if decision != "argmax":
            raise ValueError(f"HSD: decision={decision!r}; expected one of {', '.join(DECISIONS)}")
        item, seq = scores.argmax_votes()
        return item * seq

    # ------------------------------------------------------------------ loss filter
    def loss_filter(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        lengths: torch.Tensor,
        users: torch.Tensor,
        negative: torch.Tensor,
        rate: float,
        zero_row_when_k0: bool,
    ) -> torch.Tensor:
        """Truncated BPR between the user embedding and the sequence items (hsd.md §3 step 4).

        ``ℓ_t = -log(1e-10 + σ(<x_t, u> - <x_neg, u>)) * mask_t``; the ``⌊rate · len⌋`` largest
        per row are zeroed; with ``zero_row_when_k0`` (the reference's "-0 slice") a row whose
        k is 0 while ``rate > 0`` is zeroed entirely. Returns ``mean_b Σ_t ℓ_t`` (scalar).

        Args: ``x [B, L, H]`` raw item embeddings, ``mask [B, L]``, ``lengths [B]``,
        ``users [B]``, ``negative [B, H]`` one negative item embedding per row."""
        u = self.user_embedding(users)  # [B, H]
        pos = (x * mask.unsqueeze(-1) * u.unsqueeze(1)).sum(-1)  # [B, L]
        neg = (negative * u).sum(-1, keepdim=True)  # [B, 1]
        loss = -torch.log(1e-10 + torch.sigmoid(pos - neg)) * mask
        if rate > 0:
            k = torch.floor(rate * lengths.to(torch.float64) + 1e-9).to(torch.long)
            drop = zero_largest(loss, mask > 0, k)
            if zero_row_when_k0:
                drop = drop | (k == 0).unsqueeze(1)
            loss = loss.masked_fill(drop, 0.0)
        return loss.sum(1).mean()


# ---------------------------------------------------------------------- schedules
def curriculum_drop(epoch: int, start: float, epochs: int) -> float:
    """``d_e = linspace(start, 0, epochs)[e]`` for ``e < epochs``, else 0 (hsd.md §5)."""
    if epochs <= 0 or epoch >= epochs:
        return 0.0
    return float(np.linspace(start, 0.0, epochs)[epoch])


def gumbel_temperature(step: int, start: float, every: int, rate: float, floor: float, anneal: bool) -> float:
    """Temperature of the ``step``-th training batch (1-based): every ``every`` batches
    ``τ ← max(floor, τ · exp(-rate · step_count))``, i.e. after k annealings
    ``τ = max(floor, start · exp(-rate · every · k(k+1)/2))`` (hsd.md §5)."""
    if not anneal or every <= 0:
        return start
    k = step // every
    return max(floor, start * float(np.exp(-rate * every * k * (k + 1) / 2.0)))


def curriculum_keep(rec: torch.Tensor, drop_rate: float) -> torch.Tensor:
    """Bool ``[B]``: the ``⌊(1 - d) · B⌋`` instances with the lowest reconstruction loss."""
    B = rec.shape[0]
    n_keep = int((1.0 - drop_rate) * B)
    keep = torch.zeros(B, dtype=torch.bool, device=rec.device)
    keep[torch.argsort(rec.detach(), stable=True)[:n_keep]] = True
    return keep
