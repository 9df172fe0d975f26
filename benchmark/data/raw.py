"""Raw interaction data as read from files, before preprocessing."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl


@dataclass
class RawData:
    """What every reader returns.

    Attributes:
        inter: polars frame with columns ``user_id`` (Utf8), ``item_id`` (Utf8) and
            ``timestamp`` (Float64), in the source's row order (the order breaks ties).
        items: optional polars frame with ``item_id`` (Utf8) and text columns (Utf8),
            e.g. ``title``, ``categories``; missing text is ''.
        source: human-readable description of the files read.
    """

    inter: pl.DataFrame
    items: pl.DataFrame | None = None
    source: str = ""


@dataclass
class Interactions:
    """Preprocessed data: one chronological sequence per user, ids remapped to 1..n.

    Attributes:
        sequences: ``Sequences`` with one row per user (users 1..n_users in row order).
        n_users, n_items: counts (ids 1..n).
        item_text: list of length ``n_items + 1``; index 0 is ''.
        item_raw_ids: object array ``[n_items + 1]`` of source item ids (index 0 = '').
        user_raw_ids: object array ``[n_users + 1]`` of source user ids.
    """

    sequences: "Sequences"  # noqa: F821  (benchmark.data.sequences.Sequences)
    n_users: int
    n_items: int
    item_text: list[str]
    item_raw_ids: np.ndarray
    user_raw_ids: np.ndarray
    meta: dict = field(default_factory=dict)
