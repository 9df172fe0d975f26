"""Noise-detection report (protocol.md §6): how well flagged positions match injected noise,
against a random remover at the same flag rate, and how flags spread over item popularity.

All rates with a zero denominator are reported as 0.0; the counts beside them tell the cases
apart. Popularity buckets are "equal-frequency": items sorted by training frequency (hot →
cold, ties by item id), cut so each of the ``n_buckets`` buckets holds about the same number of
training interactions (an item is never split; items never seen in training fall in the
coldest bucket).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from benchmark.data.sequences import DenoisedSequences, SplitData


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _prf(tp: float, n_flagged: float, n_noise: float) -> tuple[float, float, float]:
    p, r = _ratio(tp, n_flagged), _ratio(tp, n_noise)
    return p, r, _ratio(2 * p * r, p + r)


def popularity_buckets(item_train_freq: np.ndarray, n_buckets: int = 5) -> np.ndarray:
    """Bucket of every item id: int64 ``[n_items + 1]``, 0 = hottest; index 0 (padding) is -1.

    ``item_train_freq``: int ``[n_items + 1]`` training occurrences of each item."""
    freq = np.asarray(item_train_freq, dtype=np.int64).copy()
    freq[0] = 0
    order = np.argsort(-freq[1:], kind="stable") + 1  # hot -> cold, ties by id
    total = freq.sum()
    before = np.cumsum(freq[order]) - freq[order]  # interactions of hotter items
    bucket = np.full(len(freq), -1, np.int64)
    if total == 0:
        bucket[1:] = n_buckets - 1
        return bucket
    bucket[order] = np.minimum(before * n_buckets // total, n_buckets - 1)
    return bucket


def _roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Mann–Whitney ROC-AUC (ties count one half); None without both classes."""
    pos = labels.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_report(
    labels: np.ndarray | None,
    flagged: np.ndarray,
    item_ids: np.ndarray,
    item_train_freq: np.ndarray,
    n_buckets: int = 5,
    seed: int = 0,
    scores: np.ndarray | None = None,
) -> dict:
    """Detection metrics over a set of positions (micro-averaged).

    Args:
        labels: int8 ``[nnz]`` injected-noise labels (1 = injected), or None (natural data).
        flagged: bool ``[nnz]``, positions the method flagged (removed/replaced).
        item_ids: int ``[nnz]``, the item at each position.
        item_train_freq: int ``[n_items + 1]``, training frequency per item (for buckets).
        n_buckets: popularity buckets.
        seed: seed of the actual random-remover draw.
        scores: optional float ``[nnz]`` noise scores (higher = more likely noise) for ROC-AUC.

    Returns a flat dict: ``n_positions, n_flagged, flag_rate``; with labels also ``n_noise,
    noise_rate, tp, precision, recall, f1``, ``random_expected_{precision,recall,f1}`` (a
    remover flagging each position with probability = flag rate: P = noise rate, R = flag
    rate), ``random_{precision,recall,f1}`` (one seeded draw of exactly ``n_flagged``
    positions) and ``roc_auc`` (when ``scores`` is given; None without both classes); and
    ``buckets``: per popularity bucket (hot → cold) ``n_items, train_interactions,
    positions, flagged, removal_ratio`` (+ ``noise_share`` with labels).
    """
    flagged = np.asarray(flagged, dtype=bool)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    n = len(flagged)
    if len(item_ids) != n or (labels is not None and len(labels) != n):
        raise ValueError(
            f"detection_report: flagged has {n} positions, item_ids {len(item_ids)}, "
            f"labels {None if labels is None else len(labels)}; all must align"
        )
    n_flag = int(flagged.sum())
    out: dict = {"n_positions": n, "n_flagged": n_flag, "flag_rate": _ratio(n_flag, n)}
    lab = None
    if labels is not None:
        lab = np.asarray(labels).astype(bool)
        n_noise = int(lab.sum())
        tp = int((lab & flagged).sum())
        p, r, f1 = _prf(tp, n_flag, n_noise)
        ep, er, ef1 = _prf(_ratio(n_noise, n) * n_flag, n_flag, n_noise)  # E[tp] = noise_rate * |F|
        rand = np.zeros(n, dtype=bool)
        rand[np.random.default_rng(seed).choice(n, size=n_flag, replace=False)] = True
        rp, rr, rf1 = _prf(int((rand & lab).sum()), n_flag, n_noise)
        out.update(
            n_noise=n_noise, noise_rate=_ratio(n_noise, n), tp=tp, precision=p, recall=r, f1=f1,
            random_expected_precision=ep, random_expected_recall=er, random_expected_f1=ef1,
            random_precision=rp, random_recall=rr, random_f1=rf1,
        )
        if scores is not None:
            out["roc_auc"] = _roc_auc(np.asarray(scores, dtype=np.float64), lab)

    bucket_of_item = popularity_buckets(item_train_freq, n_buckets)
    if item_ids.size and (item_ids.min() < 1 or item_ids.max() >= len(bucket_of_item)):
        raise ValueError(f"detection_report: item ids must lie in 1..{len(bucket_of_item) - 1}")
    freq = np.asarray(item_train_freq, dtype=np.int64)
    b = bucket_of_item[item_ids]
    n_items_b = np.bincount(bucket_of_item[1:], minlength=n_buckets)
    inter_b = np.bincount(bucket_of_item[1:], weights=freq[1:], minlength=n_buckets)
    pos_b = np.bincount(b, minlength=n_buckets)
    flag_b = np.bincount(b, weights=flagged, minlength=n_buckets)
    noise_b = None if lab is None else np.bincount(b, weights=lab, minlength=n_buckets)
    buckets = []
    for k in range(n_buckets):  # a handful of buckets
        row = {
            "bucket": k, "n_items": int(n_items_b[k]), "train_interactions": int(inter_b[k]),
            "positions": int(pos_b[k]), "flagged": int(flag_b[k]), "removal_ratio": _ratio(flag_b[k], pos_b[k]),
        }
        if noise_b is not None:
            row["noise_share"] = _ratio(noise_b[k], pos_b[k])
        buckets.append(row)
    out["buckets"] = buckets
    out["bucketing"] = f"equal-frequency, {n_buckets} buckets by training frequency, hot -> cold"
    return out


def insertion_recall(
    deleted_items: np.ndarray, deleted_before: np.ndarray, insert_items: np.ndarray, insert_before: np.ndarray
) -> dict:
    """STEAM insertion quality (protocol.md §6): a deleted item counts as recovered when the
    method inserted the same id in the same gap (before the same flat position), with
    multiplicity. Returns ``n_deleted, n_inserted, matched, recall, precision``."""
    d_items, i_items = np.asarray(deleted_items, np.int64), np.asarray(insert_items, np.int64)
    stride = int(max(d_items.max(initial=0), i_items.max(initial=0))) + 1
    d_keys = np.asarray(deleted_before, np.int64) * stride + d_items
    i_keys = np.asarray(insert_before, np.int64) * stride + i_items
    du, dc = np.unique(d_keys, return_counts=True)
    iu, ic = np.unique(i_keys, return_counts=True)
    _, a, b = np.intersect1d(du, iu, assume_unique=True, return_indices=True)
    matched = int(np.minimum(dc[a], ic[b]).sum())
    return {
        "n_deleted": len(d_keys), "n_inserted": len(i_keys), "matched": matched,
        "recall": _ratio(matched, len(d_keys)), "precision": _ratio(matched, len(i_keys)),
    }


def detection_from_denoised(split: SplitData, denoised: DenoisedSequences, seed: int = 0, n_buckets: int = 5) -> dict:
    """:func:`detection_report` for a data-level denoiser's decisions on ``split.train``.

    Labels: ``split.meta['target_flip'] > 0`` when the data has target flips (flags then refer to
    training targets), else the sources' ``noise`` labels (None for natural data). Adds
    :func:`insertion_recall` when the split records STEAM deletions and the denoiser inserts."""
    src = denoised.source
    if len(src.items) != len(split.train.items):
        raise ValueError(
            f"detection_from_denoised: the denoised source has {len(src.items)} positions, the train "
            f"split {len(split.train.items)}; detection is defined on the training split"
        )
    flips = split.meta.get("target_flip")
    labels = (np.asarray(flips) > 0).astype(np.int8) if flips is not None else src.noise
    freq = np.bincount(split.train.items, minlength=split.n_items + 1)
    out = detection_report(
        labels, denoised.flagged, src.items, freq, n_buckets=n_buckets, seed=seed, scores=denoised.score
    )
    out["labels"] = "target_flip" if flips is not None else ("injected" if labels is not None else "none")
    deleted = split.meta.get("steam_deleted")
    if deleted is not None and len(denoised.insert_items):
        out["insertion"] = insertion_recall(
            deleted["items"], deleted["before"], denoised.insert_items, denoised.insert_before
        )
    return out
