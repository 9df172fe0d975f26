"""Semantic outlier remover: a data-level text baseline.

Every training position gets the score ``1 - cos(e_p, m_p)`` where ``e_p`` is the item's
(L2-normalised) text embedding and ``m_p`` the mean of the OTHER titled items' embeddings in
the same row (leave-one-out, from per-row segment sums: ``m_p ∝ R_row - e_p``). The
``ratio`` share of all training positions with the highest scores (a global cut, not per row)
is removed.

Never removed: the last item of a row (``protect_last``; so no row becomes empty and the most
recent context survives), untitled items, and items whose row has no other titled item (no
reference to compare with). Only training rows are touched: under leave-one-out the
validation/test targets are not part of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.config import ConfigError
from benchmark.data.sequences import DenoisedSequences, Sequences
from benchmark.registry import DENOISERS
from denoisers.base import Denoiser


@dataclass
class SemanticOutlierConfig:
    ratio: float = 0.1  # share of training positions to remove (global cut over scores)
    protect_last: bool = True  # never remove a row's last item
    encoder: str = ""  # text encoder name ('' = the run's encoder, MiniLM by default)


def leave_one_out_scores(seqs: Sequences, item_vectors: np.ndarray) -> np.ndarray:
    """Outlier score ``[nnz]`` float32: ``1 - cos(e_p, mean of the row's other titled items)``.

    ``item_vectors [N+1, D]``: item text embeddings (zero rows = untitled). Positions with an
    untitled item or no other titled item in the row get ``-inf`` (never an outlier)."""
    vec = np.asarray(item_vectors, dtype=np.float32)
    norm = np.linalg.norm(vec, axis=1, keepdims=True)
    unit = np.where(norm > 0, vec / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
    titled = (norm[:, 0] > 0)[seqs.items]
    out = np.full(len(seqs.items), -np.inf, dtype=np.float32)
    if len(seqs.items) == 0:
        return out
    e = unit[seqs.items]  # [nnz, D]
    nonempty = seqs.lengths > 0
    starts = seqs.offsets[:-1][nonempty]
    row_sum = np.zeros((seqs.n_rows, e.shape[1]), dtype=np.float32)
    row_sum[nonempty] = np.add.reduceat(e, starts, axis=0)
    row_cnt = np.zeros(seqs.n_rows, dtype=np.int64)
    row_cnt[nonempty] = np.add.reduceat(titled.astype(np.int64), starts)
    row = seqs.row_of_position
    others = row_sum[row] - e  # untitled items contribute zero vectors
    n_others = row_cnt[row] - titled
    other_norm = np.linalg.norm(others, axis=1)
    ok = titled & (n_others > 0) & (other_norm > 0)
    cos = (e * others).sum(1) / np.maximum(other_norm, 1e-12)
    out[ok] = (1.0 - cos[ok]).astype(np.float32)
    return out


def remove_top_share(seqs: Sequences, scores: np.ndarray, ratio: float, protect_last: bool = True) -> np.ndarray:
    """``keep [nnz]``: remove the ``round(ratio * nnz)`` highest-scoring eligible positions
    (finite score; not a row's last item if ``protect_last``); ties broken by flat order."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    if protect_last:
        last = seqs.offsets[1:][seqs.lengths > 0] - 1
        scores[last] = -np.inf
    eligible = np.isfinite(scores)
    n_remove = min(int(round(ratio * len(scores))), int(eligible.sum()))
    keep = np.ones(len(scores), dtype=bool)
    if n_remove > 0:
        order = np.argsort(-scores, kind="stable")
        keep[order[:n_remove]] = False
    return keep


@DENOISERS.register("semantic-outlier")
class SemanticOutlier(Denoiser):
    """Removes the training items least similar (by text) to the rest of their row."""

    Config = SemanticOutlierConfig
    requires = frozenset({"item_text", "text_embeddings"})
    encoder_fields = ("encoder",)
    level = "data"

    def __init__(self, cfg=None, resources=None) -> None:
        super().__init__(cfg, resources)
        if not 0.0 <= self.cfg.ratio < 1.0:
            raise ConfigError(f"denoiser 'semantic-outlier': ratio={self.cfg.ratio}; expected a share in [0, 1)")
        self._vectors: np.ndarray | None = None

    def fit(self, train: Sequences, resources) -> None:
        resources.require_text("semantic-outlier")
        self.resources = resources
        name = self.cfg.encoder or None
        self._vectors = resources.text_embeddings if name is None else resources.encode_texts(resources.item_text, name=name)

    def denoise(self, sequences: Sequences) -> DenoisedSequences:
        if self._vectors is None:
            raise RuntimeError("SemanticOutlier.denoise called before fit")
        scores = leave_one_out_scores(sequences, self._vectors)
        keep = remove_top_share(sequences, scores, self.cfg.ratio, self.cfg.protect_last)
        finite = np.where(np.isfinite(scores), scores, -1.0).astype(np.float32)  # -1: never an outlier
        return DenoisedSequences(sequences, keep=keep, score=finite)
