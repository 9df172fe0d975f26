"""Preprocessing: stable chronological order, duplicate policies, k-core, id remapping, item text."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.config import ConfigError, DatasetConfig
from benchmark.data.preprocess import kcore_mask, preprocess
from benchmark.data.raw import RawData


def raw_from(rows, items=None):
    """rows: (user, item, time) tuples in source order."""
    inter = pl.DataFrame(
        {"user_id": [str(r[0]) for r in rows], "item_id": [str(r[1]) for r in rows], "timestamp": [float(r[2]) for r in rows]},
        schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Float64},
    )
    return RawData(inter=inter, items=items, source="test rows")


def raw_sequences(data):
    """{raw user: [raw items]} of an Interactions."""
    return {data.user_raw_ids[u]: [data.item_raw_ids[i] for i in data.sequences.row(u - 1)] for u in data.sequences.users}


def test_equal_timestamps_keep_source_row_order():
    rows = [("u", "c", 5), ("u", "a", 5), ("u", "z", 1), ("u", "b", 5), ("v", "a", 2), ("u", "d", 9)]
    data = preprocess(raw_from(rows), DatasetConfig())
    assert raw_sequences(data)["u"] == ["z", "c", "a", "b", "d"]
    assert data.sequences.timestamps[:5].tolist() == [1, 5, 5, 5, 9]


def test_equal_timestamps_keep_row_order_whatever_the_file_layout():
    rows = [("u", "x", 3), ("v", "y", 1), ("u", "w", 3), ("v", "x", 1), ("u", "v", 2)]
    grouped = sorted(rows, key=lambda r: r[0])  # same data, rows grouped by user (stable)
    a = preprocess(raw_from(rows), DatasetConfig())
    b = preprocess(raw_from(grouped), DatasetConfig())
    assert raw_sequences(a) == raw_sequences(b) == {"u": ["v", "x", "w"], "v": ["y", "x"]}


@pytest.mark.parametrize(
    "policy, expected",
    [("keep", ["a", "a", "b", "a", "c", "c"]), ("drop_consecutive", ["a", "b", "a", "c"]), ("drop_all", ["a", "b", "c"])],
)
def test_duplicate_policies(policy, expected):
    rows = [("u", item, t) for t, item in enumerate(["a", "a", "b", "a", "c", "c"])] + [("w", "a", 0)]
    data = preprocess(raw_from(rows), DatasetConfig(duplicates=policy))
    assert raw_sequences(data)["u"] == expected
    assert data.meta["removed_duplicates"] == 6 - len(expected)


def test_unknown_duplicate_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="dataset.duplicates: unknown policy 'some'"):
        preprocess(raw_from([("u", "a", 0)]), DatasetConfig(duplicates="some"))


def test_ids_are_contiguous_in_order_of_first_appearance():
    rows = [("u9", "i5", 3), ("u2", "i7", 1), ("u9", "i3", 0), ("u2", "i5", 2), ("u4", "i8", 0)]
    data = preprocess(raw_from(rows), DatasetConfig())
    assert (data.n_users, data.n_items) == (3, 4)
    assert data.user_raw_ids.tolist() == ["", "u9", "u2", "u4"]
    assert data.item_raw_ids.tolist() == ["", "i5", "i7", "i3", "i8"]
    assert data.sequences.users.tolist() == [1, 2, 3]
    assert data.sequences.to_lists() == [[3, 1], [2, 1], [4]]
    assert sorted(set(data.sequences.items.tolist())) == [1, 2, 3, 4]


def test_ids_are_renumbered_after_k_core_filtering():
    rows = [("gone", "x", 0)] + [(u, i, t) for t, (u, i) in enumerate([(u, i) for u in "ab" for i in "pq"])]
    data = preprocess(raw_from(rows), DatasetConfig(k_core=2))
    assert data.user_raw_ids.tolist() == ["", "a", "b"]
    assert data.item_raw_ids.tolist() == ["", "p", "q"]
    assert data.meta["removed_by_k_core"] == 1


def test_item_text_joins_configured_columns_and_blanks_missing():
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "title": ["Alpha ", "", "Gamma"], "categories": ["X > Y", "Z", ""]})
    rows = [("u", "a", 0), ("u", "b", 1), ("u", "c", 2), ("u", "d", 3)]
    data = preprocess(raw_from(rows, items), DatasetConfig(text_columns=["title", "categories"]))
    assert data.item_text == ["", "Alpha | X > Y", "Z", "Gamma", ""]
    assert preprocess(raw_from(rows, items), DatasetConfig()).item_text == ["", "Alpha", "", "Gamma", ""]


def test_unknown_text_column_is_a_config_error():
    items = pl.DataFrame({"item_id": ["a"], "title": ["A"]})
    with pytest.raises(ConfigError, match="dataset.text_columns: plot not in the item data .* available text columns: title"):
        preprocess(raw_from([("u", "a", 0)], items), DatasetConfig(text_columns=["title", "plot"]))


def naive_kcore(pairs, k):
    """Reference k-core: remove low-count rows one pass at a time until nothing changes."""
    rows = list(pairs)
    while True:
        users = {u: sum(1 for r in rows if r[0] == u) for u, _ in rows}
        items = {i: sum(1 for r in rows if r[1] == i) for _, i in rows}
        kept = [r for r in rows if users[r[0]] >= k and items[r[1]] >= k]
        if len(kept) == len(rows):
            return kept
        rows = kept


pairs_strategy = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 9)), min_size=0, max_size=150)


@settings(max_examples=60, deadline=None)
@given(pairs=pairs_strategy, k=st.integers(1, 5))
def test_kcore_leaves_every_user_and_item_with_at_least_k_and_is_stable(pairs, k):
    users = np.array([p[0] for p in pairs], dtype=np.int64)
    items = np.array([p[1] for p in pairs], dtype=np.int64)
    keep = kcore_mask(users, items, k)
    if keep.any():
        assert np.bincount(users[keep])[np.unique(users[keep])].min() >= k
        assert np.bincount(items[keep])[np.unique(items[keep])].min() >= k
    assert kcore_mask(users[keep], items[keep], k).all()  # applying it again changes nothing
    assert [p for p, kept in zip(pairs, keep) if kept] == naive_kcore(pairs, k)


@settings(max_examples=30, deadline=None)
@given(pairs=pairs_strategy, k=st.integers(2, 4))
def test_preprocess_k_core_result_is_a_fixed_point_or_an_error_when_nothing_is_left(pairs, k):
    rows = [(f"u{u}", f"i{i}", t % 7) for t, (u, i) in enumerate(pairs)]
    if not naive_kcore(pairs, k):
        expected = "no interactions to preprocess" if not pairs else f"dataset.k_core={k} removes every interaction"
        with pytest.raises(ValueError, match=expected):
            preprocess(raw_from(rows), DatasetConfig(k_core=k))
        return
    data = preprocess(raw_from(rows), DatasetConfig(k_core=k))
    lengths = data.sequences.lengths
    assert len(lengths) == data.n_users and (lengths >= k).all()
    if data.n_items:
        assert np.bincount(data.sequences.items, minlength=data.n_items + 1)[1:].min() >= k
    # the output, written back as raw rows, preprocesses to itself
    again_rows = [(u, i, t) for u, seq in raw_sequences(data).items() for t, i in enumerate(seq)]
    again = preprocess(raw_from(again_rows), DatasetConfig(k_core=k))
    assert raw_sequences(again) == raw_sequences(data)
