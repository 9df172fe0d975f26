"""A content digest of loaded interaction data, recorded with every run.

Run ids name the dataset and its preprocessing, not the bytes of the files: a user who replaces
``NAME.inter`` or adds titles to ``NAME.item`` keeps the same run ids. The digest is what tells
the two data versions apart: ``bench reproduce`` says when a stored row was made on other data,
and ``bench grid`` runs again a not-applicable cell whose data changed since it was recorded.
"""
from __future__ import annotations

import hashlib

import numpy as np

from benchmark.data.raw import Interactions

DIGEST_PREFIX = "sha256:"


def interactions_digest(inter: Interactions) -> str:
    """``sha256:<16 hex>`` over what a run reads from preprocessed data: the user sequences
    (items, row offsets, user ids, timestamps when present) and the item texts."""
    h = hashlib.sha256()
    seqs = inter.sequences
    for arr in (seqs.items, seqs.offsets, seqs.users):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    if seqs.timestamps is None:
        h.update(b"no timestamps")
    else:
        h.update(np.ascontiguousarray(seqs.timestamps, dtype=np.float64).tobytes())
    h.update("\x1f".join(inter.item_text).encode("utf-8"))
    return DIGEST_PREFIX + h.hexdigest()[:16]
