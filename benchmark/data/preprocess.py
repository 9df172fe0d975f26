"""Preprocessing (protocol.md §2): RawData -> Interactions.

Steps, in this order, all vectorised with NumPy:

1. Chronological order per user: sort by (user, timestamp, source row). Ties on the timestamp
   keep the source's row order (a stable tie-break, as RecBole does); this decides the ML-100K
   validation/test targets, where 75,772 of 100,000 ratings share their user's timestamp.
2. Duplicate policy ``cfg.duplicates`` on the chronological sequences:
   ``keep`` (default, protocol §2.3); ``drop_consecutive`` drops an interaction whose item equals the
   user's previous item; ``drop_all`` keeps only the first (earliest) interaction of each
   (user, item) pair.
3. Iterative k-core ``cfg.k_core`` (0 = off): drop every interaction of a user or item with fewer
   than k interactions, and repeat until nothing changes.
4. Id remapping: users and items are numbered ``1..n`` in order of their first appearance in the
   source row order among the interactions that survive steps 2–3 (RecBole's convention: it
   factorises the filtered ``.inter`` columns in file order); 0 is padding. Two files that hold the
   same data in a different row order (RecBole's ML-100K, which is ``u.data`` order, and the
   per-user sorted copy) therefore give identical sequences under different ids.
5. Item text from ``cfg.text_columns``, in the configured order (title first by convention):
   the non-empty values (leading/trailing whitespace stripped) joined by ``' | '``; an item with
   none of them, or absent from the item file, gets ''.

Sequences are not truncated here (the datamodule keeps the most recent ``max_len`` items).
"""
from __future__ import annotations

import numpy as np
import polars as pl

from benchmark.config import ConfigError
from benchmark.data.raw import Interactions, RawData
from benchmark.data.sequences import Sequences

DUPLICATE_POLICIES = ("keep", "drop_consecutive", "drop_all")
TEXT_SEPARATOR = " | "
ID_ORDER = "first appearance in source row order, after filtering"


def factorize(values: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Codes ``0..n-1`` in order of first appearance. Returns (int64 codes ``[len]``, uniques ``[n]``)."""
    uniques = values.unique(maintain_order=True)
    codes = values.replace_strict(uniques, pl.int_range(len(uniques), eager=True), return_dtype=pl.Int64)
    return codes.to_numpy().astype(np.int64, copy=False), uniques


def chronological_order(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by (user, timestamp), ties kept in row order (stable). int64 ``[n]``."""
    return np.lexsort((np.arange(len(users)), timestamps, users))


def duplicate_mask(users: np.ndarray, items: np.ndarray, policy: str) -> np.ndarray:
    """bool ``[n]``: rows to keep, for rows already in chronological order per user."""
    n = len(users)
    if policy == "keep" or n == 0:
        return np.ones(n, dtype=bool)
    if policy == "drop_consecutive":
        keep = np.ones(n, dtype=bool)
        keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
        return keep
    if policy == "drop_all":
        pair = users.astype(np.int64) * (int(items.max()) + 1) + items
        _, first = np.unique(pair, return_index=True)  # index of the earliest occurrence of each pair
        keep = np.zeros(n, dtype=bool)
        keep[first] = True
        return keep
    raise ConfigError(f"dataset.duplicates: unknown policy {policy!r}; expected one of {', '.join(DUPLICATE_POLICIES)}")


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """bool ``[n]``: rows kept by the iterative user/item k-core (every kept user and item has ≥ k
    kept rows; the fixed point is unique, so the result does not depend on removal order)."""
    keep = np.ones(len(users), dtype=bool)
    if k <= 1 or len(users) == 0:
        return keep
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    while True:
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        new_keep = keep & (user_count[users] >= k) & (item_count[items] >= k)
        if new_keep.sum() == keep.sum():
            return keep
        keep = new_keep


def _first_appearance_ids(codes: np.ndarray, rows: np.ndarray, n_codes: int) -> np.ndarray:
    """New ids ``1..m`` for the codes present, by their smallest source row. int64 ``[len(codes)]``."""
    first = np.full(n_codes, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, codes, rows)
    present = np.flatnonzero(first < np.iinfo(np.int64).max)
    new_id = np.zeros(n_codes, dtype=np.int64)
    new_id[present[np.argsort(first[present], kind="stable")]] = np.arange(1, len(present) + 1)
    return new_id[codes]


def item_texts(items: pl.DataFrame | None, raw_ids: pl.Series, columns: list[str], source: str = "") -> list[str]:
    """Text of each id in ``raw_ids`` (in that order) from the item frame: see the module doc, step 5."""
    if items is None or not columns or len(raw_ids) == 0:
        return [""] * len(raw_ids)
    missing = [c for c in columns if c not in items.columns]
    if missing:
        available = ", ".join(c for c in items.columns if c != "item_id") or "none"
        raise ConfigError(
            f"dataset.text_columns: {', '.join(missing)} not in the item data of {source or 'this dataset'}; "
            f"available text columns: {available}"
        )
    parts = [pl.col(c).fill_null("").str.strip_chars() for c in columns]
    text = pl.concat_str([pl.when(p != "").then(p) for p in parts], separator=TEXT_SEPARATOR, ignore_nulls=True)
    table = items.select(pl.col("item_id"), text.fill_null("").alias("text")).unique("item_id", keep="first")
    joined = pl.DataFrame({"item_id": raw_ids}).join(table, on="item_id", how="left", maintain_order="left")
    return joined["text"].fill_null("").to_list()


def _check_inter(inter: pl.DataFrame, source: str) -> None:
    expected = {"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Float64}
    for name, dtype in expected.items():
        if name not in inter.columns or inter.schema[name] != dtype:
            raise ValueError(f"{source or 'RawData'}: inter needs column {name} of type {dtype}; found {dict(inter.schema)}")
        if inter[name].null_count():
            raise ValueError(f"{source or 'RawData'}: column {name} has {inter[name].null_count()} missing values")
    if inter.height == 0:
        raise ValueError(f"{source or 'RawData'}: no interactions to preprocess; expected at least one "
                         "(user, item, timestamp) row")


def _emptied_by_k_core(source: str, k: int, users: np.ndarray, items: np.ndarray) -> str:
    """The message for a k-core that removes everything: the counts that bound a workable k."""
    busiest = int(np.bincount(users).max())
    popular = int(np.bincount(items).max())
    return (f"dataset.k_core={k} removes every interaction of {source or 'the data'} ({len(users)} interactions, "
            f"{len(np.unique(users))} users, {len(np.unique(items))} items; the most active user has {busiest} and the "
            f"most popular item {popular}); lower dataset.k_core (0 turns the filter off)")


def preprocess(raw: RawData, cfg) -> Interactions:
    """RawData -> Interactions (see the module doc). ``cfg`` is a DatasetConfig (or a DictConfig with
    its keys ``duplicates``, ``k_core``, ``text_columns``).

    ``Interactions.sequences``: one row per user (users ``1..n_users`` in row order), items oldest
    first, with float64 timestamps. ``meta`` records the counts removed by each step."""
    _check_inter(raw.inter, raw.source)
    policy, k = str(cfg.duplicates), int(cfg.k_core)
    if policy not in DUPLICATE_POLICIES:
        raise ConfigError(f"dataset.duplicates: unknown policy {policy!r}; expected one of {', '.join(DUPLICATE_POLICIES)}")
    if k < 0:
        raise ConfigError(f"dataset.k_core: {k} is negative; expected 0 (off) or a minimum count ≥ 1")
    users, user_uniques = factorize(raw.inter["user_id"])
    items, item_uniques = factorize(raw.inter["item_id"])
    times = raw.inter["timestamp"].to_numpy()
    rows = chronological_order(users, times)  # source row of each chronological position
    users, items, times = users[rows], items[rows], times[rows]

    dedup = duplicate_mask(users, items, policy)
    rows, users, items, times = rows[dedup], users[dedup], items[dedup], times[dedup]
    core = kcore_mask(users, items, k)
    if not core.any():
        raise ConfigError(_emptied_by_k_core(raw.source, k, users, items))
    rows, users, items, times = rows[core], users[core], items[core], times[core]

    new_users = _first_appearance_ids(users, rows, len(user_uniques))
    new_items = _first_appearance_ids(items, rows, len(item_uniques))
    order = np.argsort(new_users, kind="stable")  # already chronological within each user
    n_users = int(new_users.max()) if len(new_users) else 0
    n_items = int(new_items.max()) if len(new_items) else 0
    lengths = np.bincount(new_users, minlength=n_users + 1)[1:]
    sequences = Sequences.from_lengths(
        new_items[order], lengths, np.arange(1, n_users + 1, dtype=np.int64), timestamps=times[order]
    )

    user_raw = np.empty(n_users + 1, dtype=object)
    user_raw[0] = ""
    user_raw[new_users] = user_uniques.to_numpy()[users]
    item_raw = np.empty(n_items + 1, dtype=object)
    item_raw[0] = ""
    item_raw[new_items] = item_uniques.to_numpy()[items]
    columns = list(cfg.text_columns) if cfg.text_columns is not None else []
    text = [""] + item_texts(raw.items, pl.Series(item_raw[1:].tolist(), dtype=pl.Utf8), columns, raw.source)

    meta = {
        "source": raw.source,
        "raw_interactions": raw.inter.height,
        "duplicates": policy,
        "removed_duplicates": int((~dedup).sum()),
        "k_core": k,
        "removed_by_k_core": int((~core).sum()),
        "id_order": ID_ORDER,
        "tie_break": "source row order",
        "text_columns": columns,
    }
    return Interactions(sequences, n_users, n_items, text, item_raw, user_raw, meta)
