"""SSDRec's front stages (specs/ssdrec.md §2–§3): the global relation encoder (one GNN pass
over the multi-relation graphs) and the self-augmentation / first denoising pass ("DNA").

All sequence tensors are right-padded (items in slots ``0..n-1``), as in the reference, so
that "the drawn slot p lies inside the sequence" reads ``p < n``. Shapes: ``B`` batch, ``L``
slots, ``H`` embedding size, ``N+1`` item rows (0 = padding), ``U+1`` user rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from denoisers.graphs import GraphSet
from denoisers.seq_ops import hard_gumbel, insert_two


class TwoTap(nn.Module):
    """``w0 · x0 + w1 · x1 + b`` with scalar weights shared over dimensions: the reference's
    ``Conv2d(1, 1, (1, 2))`` applied to a stacked pair (same initialisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(2))
        self.bias = nn.Parameter(torch.empty(()))
        bound = math.sqrt(6.0 / 4.0)  # xavier_uniform of a [1, 1, 1, 2] kernel
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -1 / math.sqrt(2.0), 1 / math.sqrt(2.0))  # Conv2d default bias

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.weight[0] * x0 + self.weight[1] * x1 + self.bias


def _xavier(*shape: int) -> nn.Parameter:
    p = nn.Parameter(torch.empty(*shape))
    nn.init.xavier_uniform_(p)
    return p


class GraphLayer(nn.Module):
    """One relation-aware GNN layer (``DNA.agg_layer`` body, ssdrec.md §2)."""

    def __init__(self, H: int, dropout: float) -> None:
        super().__init__()
        self.H = H
        self.W1, self.W2 = _xavier(H, H), _xavier(H, H)
        self.ii_w, self.uu_w = _xavier(2 * H, H), _xavier(2 * H, H)
        self.i_w, self.u_w = _xavier(H, H), _xavier(H, H)
        self.item_tap, self.user_tap = TwoTap(), TwoTap()
        self.drop = nn.Dropout(dropout)

    def user_gnn(self, U: torch.Tensor, g: GraphSet, graph: str, rows: torch.Tensor | None) -> torch.Tensor:
        return self.drop(self.user_tap(g.mm(graph, U, rows), U if rows is None else U[rows]))

    def item_gnn(self, I: torch.Tensor, g: GraphSet, graph_in: str, graph_out: str) -> torch.Tensor:
        n_in = g.mm(graph_in, I)
        n_out = n_in if graph_out == graph_in else g.mm(graph_out, I)
        s_in = F.leaky_relu((I * n_in) @ self.W1, 0.2).sum(1) / math.sqrt(self.H)
        s_out = F.leaky_relu((I * n_out) @ self.W2, 0.2).sum(1) / math.sqrt(self.H)
        w = F.softmax(torch.stack((s_in, s_out), dim=1), dim=1)
        neighbour = n_in * w[:, :1] + n_out * w[:, 1:]
        return self.drop(self.item_tap(I, neighbour))

    def forward(self, I: torch.Tensor, U: torch.Tensor, g: GraphSet,
                user_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(I' [N+1, H], U' [U+1, H])``, or ``U'`` of ``user_rows`` only (``[R, H]``): each
        output row reads only its own graph rows, so the rows a batch needs cost a fraction."""
        u_pos, u_neg = self.user_gnn(U, g, "user_pos", user_rows), self.user_gnn(U, g, "user_neg", user_rows)
        i_pos, i_neg = self.item_gnn(I, g, "item_in", "item_out"), self.item_gnn(I, g, "item_neg", "item_neg")
        u_ui, i_iu = g.mm("ui", I, user_rows), g.mm("iu", U)
        u = 0.5 * (torch.cat((u_ui, u_pos), -1) @ self.uu_w + torch.cat((u_ui, u_neg), -1) @ self.uu_w)
        i = 0.5 * (torch.cat((i_iu, i_pos), -1) @ self.ii_w + torch.cat((i_iu, i_neg), -1) @ self.ii_w)
        return torch.sigmoid(i @ self.i_w), torch.sigmoid(u @ self.u_w)


class GraphEncoder(nn.Module):
    """Stage 1: ``(I [N+1, H], U [U+1, H]) -> (I', U')``.

    ``layers`` GNN layers, each reading the previous layer's output; their outputs are
    concatenated and projected (``W_icat``, ``W_ucat``). With one layer (the reference's only
    working setting) this is exactly ``DNA.agg_layer``."""

    def __init__(self, H: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GraphLayer(H, dropout) for _ in range(layers))
        self.i_cat, self.u_cat = _xavier(layers * H, H), _xavier(layers * H, H)

    def forward(self, I: torch.Tensor, U: torch.Tensor, g: GraphSet,
                user_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``user_rows [R]``: return ``U'`` of these users only (``[R, H]``); earlier layers
        still run on every user, the last one only on these rows."""
        items, users = [], []
        for k, layer in enumerate(self.layers):  # a handful of layers
            last = k == len(self.layers) - 1
            I, U_next = layer(I, U, g, user_rows if last else None)
            items.append(I)
            users.append(U_next if last or user_rows is None else U_next[user_rows])
            U = U_next
        return torch.cat(items, -1) @ self.i_cat, torch.cat(users, -1) @ self.u_cat


@dataclass
class Augmented:
    """Stage 2/3a output: ``ids [B, L]`` (inserted items, possibly one hole = 0),
    ``z [B, L, H]`` embeddings of the augmented sequence (not zeroed at the hole),
    ``lengths [B]`` float, ``augmented [B]`` / ``deleted [B]`` bool."""

    ids: torch.Tensor
    z: torch.Tensor
    lengths: torch.Tensor
    augmented: torch.Tensor
    deleted: torch.Tensor


class SelfAugmenter(nn.Module):
    """Stages 2 and 3a: pick a slot, insert two catalogue items around it, maybe delete one
    item of the inserted window (ssdrec.md §3).

    Args:
        H: embedding size.
        position_sampler: ``gumbel`` (reference: hard Gumbel over all L slots, padding
            included) or ``gumbel_valid`` (padding slots excluded from the draw).
        allow_padding_insert: if False, item 0 cannot be drawn as an inserted item.
    """

    def __init__(self, H: int, position_sampler: str = "gumbel", allow_padding_insert: bool = True) -> None:
        super().__init__()
        self.H = H
        self.position_sampler = position_sampler
        self.allow_padding_insert = allow_padding_insert
        self.start_end = nn.Embedding(2, H)
        self.lstm = nn.LSTM(H, H, num_layers=1, bias=False, batch_first=True, bidirectional=True)
        nn.init.xavier_uniform_(self.lstm.weight_ih_l0)
        nn.init.xavier_uniform_(self.lstm.weight_hh_l0)

    def noise_scores(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``1 - P_ctx · P_sim`` ``[B, L]`` (1 at padding).

        ``P_ctx``: softmax over slots of ``Σ_dims z_t ⊙ f_{t-1} ⊙ b_{t+1}`` (BiLSTM over
        ``[start, z, end]``); ``P_sim``: softmax of ``Σ_{j≠t valid} <clamp(z_t), clamp(z_j)>``."""
        B, L, H = z.shape
        se = self.start_end.weight
        cat = torch.cat([se[0].expand(B, 1, H), z, se[1].expand(B, 1, H)], dim=1)
        h, _ = self.lstm(cat)
        f, b = h[:, :-2, :H], h[:, 2:, H:]
        block = (mask - 1.0) * 2e32
        p_ctx = F.softmax((z * f * b).sum(-1) + block, dim=1)
        c = z.clamp(-1.0, 1.0)
        total = (c * mask.unsqueeze(-1)).sum(1, keepdim=True)
        sim = (c * total).sum(-1) * mask - (c * c).sum(-1)
        p_sim = F.softmax(sim + block, dim=1)
        return 1.0 - p_ctx * p_sim

    def _draw_slot(self, noise: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
        if self.position_sampler == "gumbel_valid":
            noise = noise.masked_fill(mask <= 0, -1e9)
        return hard_gumbel(noise, tau, dim=1)

    def forward(self, ids: torch.Tensor, z: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor, tau: float) -> Augmented:
        """``ids [B, L]`` right-padded, ``z [B, L, H]``, ``lengths [B]`` (int), ``table [N+1, H]``
        the graph-enhanced item table ``I'``."""
        B, L, H = z.shape
        mask = (ids > 0).to(z.dtype)
        n = lengths.to(torch.long)
        # stage 2: slot p, then two items from the BiLSTM queries around it
        p1 = self._draw_slot(self.noise_scores(z, mask), mask, tau)  # [B, L] one-hot (ST)
        p = p1.argmax(1)
        inside = (p < n).to(z.dtype)  # the reference's de_flag
        aug = inside * (n <= L - 2).to(z.dtype)
        h, _ = self.lstm(z)
        q_fw = (h[..., :H] * torch.roll(p1, -1, 1).unsqueeze(-1)).sum(1)  # forward state at p-1
        q_bw = (h[..., H:] * torch.roll(p1, 1, 1).unsqueeze(-1)).sum(1)  # backward state at p+1
        s_fw, s_bw = q_fw @ table.T, q_bw @ table.T
        if not self.allow_padding_insert:
            s_fw, s_bw = s_fw.clone(), s_bw.clone()
            s_fw[:, 0] = float("-inf")
            s_bw[:, 0] = float("-inf")
        oh_a, oh_b = hard_gumbel(s_fw, tau), hard_gumbel(s_bw, tau)
        a_emb, b_emb = oh_a @ table, oh_b @ table
        # embeddings: [z_<p, a, z_p, b, z_p+1..] built with the reference's masked sums (the
        # straight-through position value carries the gradient)
        t = torch.arange(L, device=z.device).unsqueeze(0)
        pp = p.unsqueeze(1)
        pv = p1.gather(1, pp)
        left = torch.where(t < pp, p1 + pv, torch.zeros_like(p1))
        right = torch.where((t > pp) & (t <= L - 3), p1 + pv, torch.zeros_like(p1))
        shifted = (z * left.unsqueeze(-1) + torch.roll(z * p1.unsqueeze(-1), 1, 1)
                   + torch.roll(z * right.unsqueeze(-1), 2, 1))
        new_z = shifted + a_emb.unsqueeze(1) * p1.unsqueeze(-1) + b_emb.unsqueeze(1) * torch.roll(p1, 2, 1).unsqueeze(-1)
        g = aug.view(B, 1, 1)
        aug_z = new_z * g + z * (1.0 - g)
        aug_len = n.to(z.dtype) + 2.0 * aug
        new_ids = insert_two(ids, p.clamp(max=L - 3), oh_a.argmax(1), oh_b.argmax(1))
        aug_ids = torch.where(aug.view(B, 1) > 0, new_ids, ids)
        # stage 3a: second draw on the augmented sequence; delete only inside the window p..p+2
        mask2 = (aug_ids > 0).to(z.dtype)
        q1 = self._draw_slot(self.noise_scores(aug_z, mask2), mask2, tau)
        window = p1 + torch.roll(p1, 1, 1) + torch.roll(p1, 2, 1)
        delete = window * q1 * inside.unsqueeze(1)
        out_len = aug_len - delete.sum(1)
        out_ids = aug_ids.masked_fill(delete > 0.5, 0)
        return Augmented(out_ids, aug_z, out_len, aug > 0, delete.detach().sum(1) > 0.5)
