"""IADSR stage 1: semantic interests of the training sequences, computed once (specs/iadsr.md §2).

For training sequences in CSR layout (``Sequences``) this builds

* ``short [nnz, D]``: the short-term interest of every flat position f — the text of the
  row's items from its start up to and including f (the "prefix" ending at f);
* ``long [n_rows, D]``: the long-term interest of every row — its inputs
  (``long_text: history``, all but the last training item) or all its training items
  (``history+target``, the reference's choice). Held-out items are never part of a row.

A list of items becomes text as its titles in chronological order joined by ``", "``
(untitled items are skipped). ``max_chars > 0`` bounds the text by whole titles:
``truncate: tail`` keeps the most recent titles that fit, ``head`` the oldest (the reference's
LLM2Vec cut; then every longer prefix of a row encodes the same text). At least one title is
always kept; the encoder's own limit still applies after this.

``interest_encoder: text`` encodes those texts (deduplicated; vectors cached on disk by the
text cache, so a second run encodes nothing); ``mean`` averages the item text embeddings over
the same item ranges with cumulative sums (no per-prefix encoder call).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from benchmark.data.sequences import Sequences

TRUNCATE = ("head", "tail")
LONG_TEXT = ("history", "history+target")
SEPARATOR = ", "


@dataclass
class SemanticInterests:
    """``short`` ``[nnz, D]`` per training position, ``long`` ``[n_rows, D]`` per row (float16
    or float32), and ``stats`` (texts, distinct texts, texts sent to the encoder, seconds)."""

    short: np.ndarray
    long: np.ndarray
    stats: dict = field(default_factory=dict)


def interest_ranges(seqs: Sequences, long_text: str) -> tuple[np.ndarray, np.ndarray]:
    """Item ranges ``[start, end)`` (flat indices into ``seqs.items``) of every text.

    Returns ``(start, end)``, int64 ``[nnz + n_rows]``: first the prefix of each flat position
    (row start .. position, inclusive), then the long-term range of each row."""
    if long_text not in LONG_TEXT:
        raise ValueError(f"long_text={long_text!r}; expected one of {', '.join(LONG_TEXT)}")
    row_start = np.repeat(seqs.offsets[:-1], seqs.lengths)
    flat = np.arange(len(seqs.items), dtype=np.int64)
    long_end = seqs.offsets[1:] - (1 if long_text == "history" else 0)
    long_end = np.maximum(long_end, seqs.offsets[:-1])  # a 1-item row has an empty history
    return np.concatenate([row_start, seqs.offsets[:-1]]), np.concatenate([flat + 1, long_end])


def truncate_ranges(start: np.ndarray, end: np.ndarray, widths: np.ndarray, max_chars: int, side: str):
    """Shrink ranges so that their joined text fits ``max_chars`` (whole titles, >= 1 kept).

    ``widths``: int64 ``[nnz]``, characters each position adds (title length + separator, 0
    for untitled items). ``side``: ``tail`` keeps the last titles, ``head`` the first.
    Returns new ``(start, end)``; ``max_chars <= 0`` leaves them unchanged."""
    if side not in TRUNCATE:
        raise ValueError(f"truncate={side!r}; expected head or tail")
    if max_chars <= 0:
        return start, end
    cum = np.concatenate([[0], np.cumsum(widths)])
    budget = max_chars + len(SEPARATOR)  # the last title has no separator after it
    nonempty = end > start
    if side == "tail":
        a = np.searchsorted(cum, cum[end] - budget, side="left")
        a = np.where(nonempty, np.clip(a, start, np.maximum(end - 1, start)), start)
        return a, end
    b = np.searchsorted(cum, cum[start] + budget, side="right") - 1
    b = np.where(nonempty, np.clip(b, np.minimum(start + 1, end), end), end)
    return start, b


def range_texts(items: np.ndarray, start: np.ndarray, end: np.ndarray, titles: list[str]) -> list[str]:
    """The text of every range: titles of ``items[start:end]`` joined by ``", "`` (blank skipped).

    One string per range (preprocessing, not a training step)."""
    seq_titles = [titles[i] for i in items.tolist()]
    return [SEPARATOR.join(t for t in seq_titles[a:b] if t) for a, b in zip(start.tolist(), end.tolist())]


def range_means(items: np.ndarray, start: np.ndarray, end: np.ndarray, item_vectors: np.ndarray,
                titled: np.ndarray, row_offsets: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Mean item vector over every range (titled items only; zero if none), float32 ``[n, D]``.

    Cumulative sums in float64 over chunks of whole rows (ranges never cross a row), so memory
    stays ``O(chunk * D)`` and sums stay exact enough for long rows."""
    nnz, D = len(items), item_vectors.shape[1]
    out = np.zeros((len(start), D), dtype=np.float32)
    counts_cum = np.concatenate([[0], np.cumsum(titled[items])])
    counts = counts_cum[end] - counts_cum[start]
    cuts = row_offsets[np.searchsorted(row_offsets, np.arange(0, nnz, chunk), side="right") - 1]
    bounds = np.unique(np.concatenate([cuts, [nnz]]))
    which = np.searchsorted(bounds, start, side="right") - 1
    for c in range(len(bounds) - 1):  # a handful of chunks
        lo, hi = bounds[c], bounds[c + 1]
        sel = np.flatnonzero(which == c)
        if not len(sel):
            continue
        cs = np.zeros((hi - lo + 1, D), dtype=np.float64)
        np.cumsum(item_vectors[items[lo:hi]], axis=0, dtype=np.float64, out=cs[1:])
        out[sel] = cs[end[sel] - lo] - cs[start[sel] - lo]
    nz = counts > 0
    out[nz] /= counts[nz, None]
    return out


def dedupe(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """``(unique texts in first-seen order, inverse int64 [n])``."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    return list(index), inverse


def compute_interests(seqs: Sequences, titles: list[str], encode, item_vectors=None, *, interest_encoder: str,
                      long_text: str, max_chars: int, truncate: str, dtype: str = "float16") -> SemanticInterests:
    """Semantic interests of ``seqs`` (see module docstring).

    ``encode(texts) -> float32 [n, D]`` encodes texts (blank → zero rows) — used by ``text``;
    ``item_vectors`` ``[N+1, D]`` (item text embeddings) — used by ``mean``.
    ``stats['encoded']`` is filled by the caller from its cached encoder."""
    t0 = time.perf_counter()
    start, end = interest_ranges(seqs, long_text)
    blank = np.fromiter((not t.strip() for t in titles), dtype=bool, count=len(titles))
    widths = np.where(blank, 0, np.fromiter((len(t) for t in titles), np.int64, len(titles)) + len(SEPARATOR))[seqs.items]
    start, end = truncate_ranges(start, end, widths, max_chars, truncate)
    nnz = len(seqs.items)
    stats: dict = {"interest_encoder": interest_encoder, "texts": int(len(start)), "max_chars": max_chars,
                   "truncate": truncate, "long_text": long_text}
    if interest_encoder == "text":
        texts = range_texts(seqs.items, start, end, titles)
        unique, inverse = dedupe(texts)
        stats["distinct_texts"] = len(unique)
        stats["mean_chars"] = float(np.mean([len(t) for t in unique])) if unique else 0.0
        vectors = np.asarray(encode(unique), dtype=np.float32)[inverse]
    elif interest_encoder == "mean":
        if item_vectors is None:
            raise ValueError("interest_encoder=mean needs the item text embeddings")
        vectors = range_means(seqs.items, start, end, item_vectors, ~blank, seqs.offsets)
    else:
        raise ValueError(f"interest_encoder={interest_encoder!r}; expected text or mean")
    vectors = vectors.astype(dtype, copy=False)
    stats["dim"] = int(vectors.shape[1])
    stats["seconds"] = time.perf_counter() - t0
    return SemanticInterests(short=vectors[:nnz], long=vectors[nnz:], stats=stats)
