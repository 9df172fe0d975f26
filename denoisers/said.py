"""SAID-style semantic reweighting of next-item targets (specs/said.md §3–§5).

The original SAID (Yang et al.) reweights positive CTR samples by the text similarity between
a user profile and the clicked item. This module is **our sequential adaptation** (label it
so in results): every training target ``s_t`` of a row gets

    s_{u,t} = cos(profile(s_{max(0,t-k)} .. s_{t-1}), text(s_t))
    w_{u,t} = a + (1 - a) * sigmoid(beta * (s_{u,t} - mu))

with ``mu`` the mean of ``s`` over ALL training targets of the dataset (a constant computed
once, never a batch statistic). Weights are precomputed per flat position of
``split.train.items`` (the weight of the target *at* that position) and multiply the
backbone's per-target loss; no gradient flows into them.

Profiles (``profile``): ``mean`` (default, cheap) = the mean of the profile items' text
embeddings (k vectorised gathers, no encoder call); ``text`` = the profile titles joined by
``separator`` and encoded by the text encoder (deduplicated, cached on disk).

Under target-flip noise (``split.meta['target_flip']``) the target at a position is the
flipped item while the profile keeps the original inputs.

Edge cases (spec §3): the first item of a row is no target in the standard setup; if it is
(BERT4Rec cloze) its weight is 1. Untitled targets and profiles without a titled item get 1.

Aligning weights with a batch (``target_positions``): ``positions [B, L]`` holds the flat index
of the INPUT item of each slot. For causal next-item instances (``all_positions``, ``prefix``,
``last_only``) the target at slot s is the item after that input, i.e. flat position
``positions[s] + 1``. For BERT4Rec windows (``batch['targets']`` all zero, the model's cloze
masking creates the targets) the target at a masked slot is the slot's own item, at flat
position ``positions[s]``.

``said-hard`` is the hard-filter ablation: ``a = 0`` (soft hard filter); ``hard_drop = q``
gives the genuine hard filter (weight 0 below the q-quantile of s, 1 elsewhere).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.config import ConfigError
from benchmark.data.sequences import DenoisedSequences, Sequences, SplitData
from benchmark.registry import DENOISERS
from denoisers.base import Denoiser, StepContext

_CHUNK = 1 << 16  # positions per block when summing profile embeddings (bounds memory)


@dataclass
class SAIDConfig:
    a: float = 0.4  # minimum weight (floor); 1 = no reweighting, 0 = soft hard filter
    beta: float = 5.0  # sigmoid sharpness
    k: int = 10  # profile length: the k most recent items before the target
    profile: str = "mean"  # mean (mean of item text embeddings) | text (encode concatenated titles)
    separator: str = ", "  # profile: text — separator between titles
    encoder: str = ""  # text encoder name ('' = the run's encoder, MiniLM by default)
    normalise: str = "count"  # count: sum(w * loss) / #targets | weight: / sum(w)
    hard_drop: float = 0.0  # > 0: hard filter, weight 0 for targets with s below this quantile
    flag_threshold: float | None = None  # detection: flag w < this (default (1 + a) / 2, i.e. s < mu)
    permute: bool = False  # random-weight control: permute weights across targets (same distribution)
    permute_seed: int = 0


def _validate(cfg: SAIDConfig, name: str) -> None:
    where = f"denoiser '{name}'"
    if not 0.0 <= cfg.a <= 1.0:
        raise ConfigError(f"{where}: a={cfg.a}; expected a minimum weight in [0, 1]")
    if cfg.beta < 0:
        raise ConfigError(f"{where}: beta={cfg.beta}; expected >= 0")
    if cfg.k < 1:
        raise ConfigError(f"{where}: k={cfg.k}; expected >= 1 profile items")
    if cfg.profile not in ("mean", "text"):
        raise ConfigError(f"{where}: profile={cfg.profile!r}; expected mean or text")
    if cfg.normalise not in ("count", "weight"):
        raise ConfigError(f"{where}: normalise={cfg.normalise!r}; expected count or weight")
    if not 0.0 <= cfg.hard_drop < 1.0:
        raise ConfigError(f"{where}: hard_drop={cfg.hard_drop}; expected a quantile in [0, 1)")


# ---------------------------------------------------------------------- similarities
def _unit_rows(table: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(table, axis=1, keepdims=True)
    return np.where(norm > 0, table / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def profile_window(seqs: Sequences, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For lag j = 1..k: the flat index of the item j steps before every position and whether
    it lies in the same row. Returns ``(index [k, nnz] int64, inside [k, nnz] bool)``."""
    pos = seqs.position_in_row
    lags = np.arange(1, k + 1)[:, None]
    inside = pos[None, :] >= lags
    index = np.where(inside, np.arange(len(seqs.items))[None, :] - lags, 0)
    return index, inside


def similarity_mean_profile(seqs: Sequences, item_vectors: np.ndarray, k: int,
                            target_items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine between each target's text vector and the mean vector of its profile items.

    Args:
        seqs: training sequences (``nnz`` positions).
        item_vectors: float ``[N+1, D]`` item text embeddings; all-zero rows = untitled.
        k: profile length.
        target_items: int64 ``[nnz]`` the target item at each position when it differs from
            the input item (target-flip noise); default ``seqs.items``.
    Returns ``(s [nnz] float32, valid [nnz] bool)``; ``valid`` = the position has >= 1 titled
    profile item and a titled target (row starts are never valid)."""
    unit = _unit_rows(np.asarray(item_vectors, dtype=np.float32))
    titled = np.linalg.norm(unit, axis=1) > 0
    items = seqs.items
    targets = items if target_items is None else np.asarray(target_items, dtype=np.int64)
    index, inside = profile_window(seqs, k)
    s = np.zeros(len(items), dtype=np.float32)
    count = (inside & titled[items[index]]).sum(0)
    for start in range(0, len(items), _CHUNK):  # blocks of positions, k gathers each
        stop = min(start + _CHUNK, len(items))
        acc = np.zeros((stop - start, unit.shape[1]), dtype=np.float32)
        for j in range(k):
            acc += unit[items[index[j, start:stop]]] * inside[j, start:stop, None]
        prof = _unit_rows(acc)
        s[start:stop] = (prof * unit[targets[start:stop]]).sum(1)
    valid = (count > 0) & titled[targets]
    return np.where(valid, s, 0.0).astype(np.float32), valid


def profile_texts(seqs: Sequences, item_text: list[str], k: int, separator: str) -> np.ndarray:
    """Profile text of every position: the titles of the (up to) k previous items of its row,
    oldest first, untitled items skipped, joined by ``separator``. ``[nnz]`` str array
    (built with k vectorised string operations, no per-position loop)."""
    titles = np.asarray(item_text, dtype=str)
    items = seqs.items
    index, inside = profile_window(seqs, k)
    text = np.full(len(items), "", dtype=titles.dtype)
    for j in range(k - 1, -1, -1):  # oldest lag first
        piece = np.where(inside[j], titles[items[index[j]]], "")
        sep = np.where((np.char.str_len(text) > 0) & (np.char.str_len(piece) > 0), separator, "")
        text = np.char.add(np.char.add(text, sep), piece)
    return text


def similarity_text_profile(seqs: Sequences, item_text: list[str], item_vectors: np.ndarray, k: int,
                            separator: str, encode, target_items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`similarity_mean_profile` with the profile encoded as one text
    (``encode(list[str]) -> [n, D]``, called once on the distinct profile texts)."""
    unit = _unit_rows(np.asarray(item_vectors, dtype=np.float32))
    titled = np.linalg.norm(unit, axis=1) > 0
    texts = profile_texts(seqs, item_text, k, separator)
    distinct, inverse = np.unique(texts, return_inverse=True)
    prof = _unit_rows(np.asarray(encode(distinct.tolist()), dtype=np.float32))[inverse]
    targets = seqs.items if target_items is None else np.asarray(target_items, dtype=np.int64)
    valid = (np.char.str_len(texts) > 0) & titled[targets]
    s = (prof * unit[targets]).sum(1)
    return np.where(valid, s, 0.0).astype(np.float32), valid


# ---------------------------------------------------------------------- weights
def said_weights(s: np.ndarray, valid: np.ndarray, a: float, beta: float, mu: float | None = None) -> tuple[np.ndarray, float]:
    """``w = a + (1 - a) * sigmoid(beta * (s - mu))`` at valid positions, 1 elsewhere.

    ``mu`` defaults to the mean of ``s`` over the valid positions (the global training mean).
    Returns ``(w [nnz] float32, mu)``."""
    s = np.asarray(s, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if mu is None:
        mu = float(s[valid].mean()) if valid.any() else 0.0
    w = a + (1.0 - a) / (1.0 + np.exp(-beta * (s - mu)))
    return np.where(valid, w, 1.0).astype(np.float32), float(mu)


def hard_filter_weights(s: np.ndarray, valid: np.ndarray, q: float) -> tuple[np.ndarray, float]:
    """Weight 0 for valid targets with ``s`` below the q-quantile of valid ``s``, else 1.
    Returns ``(w [nnz] float32, cut)``."""
    cut = float(np.quantile(s[valid], q)) if valid.any() else float("-inf")
    return np.where(valid & (s < cut), 0.0, 1.0).astype(np.float32), cut


def target_positions(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Flat index into ``split.train.items`` of the target at every slot ``[B, L]`` (see the
    module docstring): ``positions`` for cloze windows (``batch['targets']`` all zero),
    ``positions + 1`` for causal next-item instances; -1 where there is no input item."""
    positions = batch["positions"]
    if bool((batch["targets"] > 0).any()):
        return torch.where(positions >= 0, positions + 1, positions)
    return positions


# ---------------------------------------------------------------------- reports
def said_detection(split: SplitData, weights: np.ndarray, threshold: float, target_mask: np.ndarray | None = None,
                   n_buckets: int = 5) -> dict:
    """Detection view restricted to training TARGETS (row starts are never targets).

    Flagged = ``w < threshold``; ROC-AUC of ``1 - w``. Labels: target flips if the split has
    them, else the injected-noise labels of the target items. Uses
    ``benchmark.detection.detection_report`` on the target positions only."""
    from benchmark.detection import detection_report

    seqs = split.train
    targets = seqs.position_in_row >= 1 if target_mask is None else np.asarray(target_mask, bool)
    flips = split.meta.get("target_flip")
    labels = (np.asarray(flips) > 0).astype(np.int8) if flips is not None else seqs.noise
    freq = np.bincount(seqs.items, minlength=split.n_items + 1)
    out = detection_report(
        None if labels is None else labels[targets], weights[targets] < threshold, seqs.items[targets], freq,
        n_buckets=n_buckets, scores=1.0 - weights[targets],
    )
    out["scope"] = "training targets (positions >= 1 of each row)"
    out["threshold"] = float(threshold)
    return out


def weight_summary(split: SplitData, weights: np.ndarray, valid: np.ndarray, mu: float, n_buckets: int = 5) -> dict:
    """Spec §13 report: mu, 10-bin weight histogram, mean weight of injected vs clean targets and
    mean weight per popularity bucket (hot -> cold), over valid targets."""
    from benchmark.detection import popularity_buckets

    seqs = split.train
    w = weights[valid]
    counts, edges = np.histogram(w, bins=10, range=(0.0, 1.0))
    out = {"mu": mu, "n_targets": int(valid.sum()), "mean_weight": float(w.mean()) if len(w) else 1.0,
           "histogram": {"edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()}}
    if seqs.noise is not None:
        noisy = seqs.noise[valid].astype(bool)
        out["mean_weight_noise"] = float(w[noisy].mean()) if noisy.any() else None
        out["mean_weight_clean"] = float(w[~noisy].mean()) if (~noisy).any() else None
    bucket = popularity_buckets(np.bincount(seqs.items, minlength=split.n_items + 1), n_buckets)[seqs.items[valid]]
    sums = np.bincount(bucket, weights=w, minlength=n_buckets)
    cnt = np.bincount(bucket, minlength=n_buckets)
    out["mean_weight_by_popularity"] = [float(s / c) if c else None for s, c in zip(sums, cnt)]
    return out


# ---------------------------------------------------------------------- the denoiser
@DENOISERS.register("said")
class SAID(Denoiser):
    """Training-time target reweighting; works with every backbone (no transfer needed)."""

    Config = SAIDConfig
    requires = frozenset({"item_text", "text_embeddings"})
    encoder_fields = ("encoder",)
    level = "train"
    accepts_trimmed_batches = True

    def __init__(self, cfg=None, resources=None) -> None:
        super().__init__(cfg, resources)
        _validate(self.cfg, getattr(type(self), "registry_name", "said"))
        self.weight_normalisation = self.cfg.normalise
        self.register_buffer("weight_table", torch.ones(0), persistent=False)
        self.summary: dict = {}
        self._valid: np.ndarray | None = None

    def compute_weights(self, split: SplitData) -> tuple[np.ndarray, np.ndarray]:
        """``(w [nnz] float32, valid [nnz] bool)`` for ``split.train``; also fills ``summary``."""
        res = self.resources
        res.require_text(type(self).registry_name)
        cfg = self.cfg
        name = cfg.encoder or None
        vectors = res.text_embeddings if name is None else res.encode_texts(res.item_text, name=name)
        flips = split.meta.get("target_flip")  # target-flip noise: the target differs from the input
        targets = None if flips is None else np.where(np.asarray(flips) > 0, flips, split.train.items)
        if cfg.profile == "mean":
            s, valid = similarity_mean_profile(split.train, vectors, cfg.k, targets)
        else:
            s, valid = similarity_text_profile(split.train, res.item_text, vectors, cfg.k, cfg.separator,
                                               lambda texts: res.encode_texts(texts, name=name), targets)
        if cfg.hard_drop > 0:
            w, cut = hard_filter_weights(s, valid, cfg.hard_drop)
            mu = float(s[valid].mean()) if valid.any() else 0.0
        else:
            w, mu = said_weights(s, valid, cfg.a, cfg.beta)
            cut = None
        if cfg.permute:
            rng = np.random.default_rng(cfg.permute_seed)
            idx = np.flatnonzero(valid)
            w[idx] = w[rng.permutation(idx)]
        self.summary = weight_summary(split, w, valid, mu)
        self.summary.update(similarity_mean=float(s[valid].mean()) if valid.any() else None, hard_drop_cut=cut,
                            profile=cfg.profile, adaptation="sequential (ours, specs/said.md §3-§4)")
        return w, valid

    @property
    def flag_threshold(self) -> float:
        if self.cfg.flag_threshold is not None:
            return float(self.cfg.flag_threshold)
        return 0.5 if self.cfg.hard_drop > 0 else (1.0 + self.cfg.a) / 2.0

    def _load_weights(self, split: SplitData) -> None:
        w, self._valid = self.compute_weights(split)
        self.weight_table = torch.from_numpy(w)

    def attach(self, model) -> None:
        self._load_weights(self.resources.split)

    def decisions_without_training(self, split: SplitData) -> DenoisedSequences:
        """The weights depend only on text embeddings and the training split: the detection view
        of :meth:`export` without a trained model."""
        self._load_weights(split)
        return self.export(None, split.train)

    def sample_weights(self, ctx: StepContext) -> torch.Tensor | None:
        if ctx.stage != "train":
            return None
        targets = ctx.extras.get("targets", ctx.batch["targets"])
        flat = target_positions(ctx.batch)
        table = self.weight_table.to(targets.device)
        if len(table) == 0:
            raise RuntimeError("SAID.sample_weights called before attach(model)")
        w = table[flat.clamp(min=0, max=len(table) - 1)]
        return torch.where((targets > 0) & (flat >= 0), w, torch.ones_like(w))

    def export(self, model, sequences: Sequences) -> DenoisedSequences:
        """The hard-filter VIEW of the weights for the detection report: targets with
        ``w < flag_threshold`` marked removed, score = 1 - w. SAID itself removes nothing; using
        this export as training data is a hard-filter transfer experiment, not SAID."""
        w = self.weight_table.cpu().numpy()
        if len(w) != len(sequences.items):
            raise ValueError("SAID.export: weights were computed for different training sequences")
        flagged = (w < self.flag_threshold) & (sequences.position_in_row >= 1)
        return DenoisedSequences(sequences, keep=~flagged, score=(1.0 - w).astype(np.float32),
                                 meta={"view": "said weights below threshold", "threshold": self.flag_threshold})

    def report(self) -> dict:
        split = self.resources.split
        out = dict(self.summary)
        if self._valid is not None and split.has_noise_labels:
            det = said_detection(split, self.weight_table.cpu().numpy(), self.flag_threshold)
            out["detection_targets"] = {k: v for k, v in det.items() if k != "buckets"}
        return out


@dataclass
class SAIDHardConfig(SAIDConfig):
    a: float = 0.0


@DENOISERS.register("said-hard")
class SAIDHard(SAID):
    """Hard-filter ablation: ``a = 0`` by default; ``hard_drop = q`` for the 0/1 filter."""

    Config = SAIDHardConfig
