"""Noise injection: replacement (LLM4DSR), STEAM keep/delete/insert, target flips."""
import numpy as np
import pytest

from benchmark.config import ConfigError, NoiseConfig
from benchmark.data.noise import (
    distinct_items,
    flip_targets,
    inject_noise,
    nth_unseen,
    replace_noise,
    steam_noise,
)
from benchmark.data.raw import Interactions
from benchmark.data.sequences import Sequences


def make_inter(rows, n_items=None, noise=None):
    seqs = Sequences.from_lists(rows, noise=noise)
    seqs.timestamps = seqs.position_in_row.astype(np.float64)
    n_items = n_items or int(seqs.items.max())
    return Interactions(seqs, len(rows), n_items, [""] * (n_items + 1),
                        np.arange(n_items + 1).astype(object), np.arange(len(rows) + 1).astype(object))


def random_inter(n_users=400, n_items=300, lo=3, hi=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, n_items + 1, size=rng.integers(lo, hi + 1)).tolist() for _ in range(n_users)]
    return make_inter(rows, n_items)


def from_end(seqs):
    return np.repeat(seqs.lengths, seqs.lengths) - 1 - seqs.position_in_row


# ----------------------------------------------------------------------------- replace
def test_replace_rate_within_tolerance_and_labels_mark_draw_events():
    inter = random_inter(n_users=800)
    out = replace_noise(inter, alpha=0.2, seed=7)
    s, orig = out.sequences, inter.sequences.items
    eligible = from_end(s) >= 1
    rate = s.noise[eligible].mean()
    assert abs(rate - 0.2) < 0.015, rate
    # exact: label 1 <=> this position drew (u < alpha); the item is the draw there, else unchanged
    rng = np.random.default_rng(7)
    u = rng.random(len(orig))
    draws = rng.integers(1, inter.n_items + 1, size=len(orig))
    hit = eligible & (u < 0.2)
    np.testing.assert_array_equal(s.noise, hit.astype(np.int8))
    np.testing.assert_array_equal(s.items, np.where(hit, draws, orig))
    changed = s.items != orig
    assert not (changed & (s.noise == 0)).any()
    np.testing.assert_array_equal(out.meta["pre_noise_items"], orig)


def test_replace_never_touches_test_target_and_protect_valid_spares_valid_item():
    inter = random_inter()
    fe = from_end(inter.sequences)
    plain = replace_noise(inter, alpha=0.5, seed=1).sequences
    assert plain.noise[fe == 0].sum() == 0
    np.testing.assert_array_equal(plain.items[fe == 0], inter.sequences.items[fe == 0])
    assert plain.noise[fe == 1].mean() > 0.3  # validation items are noisy by default (LLM4DSR)
    protected = replace_noise(inter, alpha=0.5, seed=1, protect_valid=True).sequences
    assert protected.noise[fe <= 1].sum() == 0
    np.testing.assert_array_equal(protected.items[fe <= 1], inter.sequences.items[fe <= 1])


def test_replace_window_split_may_touch_every_position():
    inter = random_inter()
    out = replace_noise(inter, alpha=1.0, seed=0, split="window")
    assert out.sequences.noise.all()


def test_replace_noise_sets_are_nested_across_alpha_for_one_seed():
    inter = random_inter()
    low = replace_noise(inter, 0.1, seed=3).sequences.noise.astype(bool)
    high = replace_noise(inter, 0.2, seed=3).sequences.noise.astype(bool)
    assert (low <= high).all() and high.sum() > low.sum()


def test_replace_keeps_existing_labels():
    inter = make_inter([[1, 2, 3, 4]], n_items=10, noise=[[1, 0, 0, 0]])
    out = replace_noise(inter, alpha=0.0, seed=0)
    assert out.sequences.noise.tolist() == [1, 0, 0, 0]
    assert inter.sequences.noise.tolist() == [1, 0, 0, 0]  # input untouched


def test_inject_noise_dispatch_and_errors():
    inter = random_inter(n_users=5)
    assert inject_noise(inter, NoiseConfig(kind="none")) is inter
    assert inject_noise(inter, NoiseConfig(kind="target_flip")) is inter
    with pytest.raises(ConfigError, match="noise.kind"):
        inject_noise(inter, NoiseConfig(kind="shuffle"))
    with pytest.raises(ConfigError, match="split=loo"):
        inject_noise(inter, NoiseConfig(kind="steam"), split="window")
    with pytest.raises(ConfigError, match="alpha"):
        inject_noise(inter, NoiseConfig(kind="replace", alpha=1.5))


# ----------------------------------------------------------------------------- unseen items
def test_nth_unseen_enumerates_the_complement_in_order():
    seqs = Sequences.from_lists([[2, 3, 3], [5], [1, 2, 3, 4]])
    seen, off = distinct_items(seqs, 5)
    rows = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    j = np.array([0, 1, 2, 0, 1, 2, 3, 0])
    assert nth_unseen(seen, off, rows, j, 5).tolist() == [1, 4, 5, 1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------- STEAM
class Scripted:
    """Duck-typed generator: ``random`` returns scripted values (one user), ``integers`` is real."""

    def __init__(self, values):
        self.values = list(values)
        self.real = np.random.default_rng(0)

    def random(self, size):
        assert size == 1
        return np.array([self.values.pop(0)])

    def integers(self, low, high=None, size=None):
        return self.real.integers(low, high, size=size)


def test_steam_scripted_walk_matches_the_rules():
    # history 1..6, then valid 7 and test 8; n_items 20
    inter = make_inter([[1, 2, 3, 4, 5, 6, 7, 8]], n_items=20)
    draws = [
        0.10,  # keep 1
        0.95,  # insert X before 2
        0.85,  # delete 2 (run 1)
        0.85,  # delete 3 (run 2)
        0.50,  # run ends: keep 4 unconditionally (missing before 4: [2, 3])
        0.95,  # insert Y before 5
        0.95,  # insert Z before 5 (chained)
        0.30,  # keep 5
        0.85,  # 6 is the last history item: deletion not allowed -> redraw
        0.20,  # keep 6
    ]
    rng = Scripted(draws)
    out = steam_noise(inter, seed=0, rng=rng)
    assert not rng.values  # every scripted draw consumed, no more
    s = out.sequences
    items = s.items.tolist()
    assert len(items) == 9
    assert [items[0], items[2], items[5], items[6], items[7], items[8]] == [1, 4, 5, 6, 7, 8]
    inserted = [items[1], items[3], items[4]]
    assert len(set(inserted)) == 3 and not set(inserted) & set(range(1, 9))
    assert s.noise.tolist() == [0, 1, 0, 1, 1, 0, 0, 0, 0]
    assert s.timestamps.tolist() == [0, 1, 3, 4, 4, 4, 5, 6, 7]  # inserted items take the next item's time
    deleted = out.meta["steam_deleted"]
    assert deleted["items"].tolist() == [2, 3]
    assert deleted["before"].tolist() == [2, 2]  # flat index of item 4 in the corrupted row


def test_steam_deletion_runs_are_capped_and_followed_by_a_kept_item():
    inter = make_inter([list(range(1, 15))], n_items=30)  # history 1..12
    out = steam_noise(inter, seed=0, rng=Scripted([0.85] * 12))
    # run of 5 (1..5), 6 kept; run of 5 (7..11), 12 (last history item) kept
    assert out.sequences.items.tolist() == [6, 12, 13, 14]
    assert out.meta["steam_deleted"]["items"].tolist() == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    assert out.meta["steam_deleted"]["before"].tolist() == [0] * 5 + [1] * 5


def _rebuild(out):
    """Drop inserted items, re-insert deleted runs: must give back the original rows."""
    s = out.sequences
    d = out.meta["steam_deleted"]
    keep = s.noise == 0
    items = np.concatenate([s.items[keep], d["items"]])
    key = np.concatenate([np.nonzero(keep)[0].astype(float), d["before"] - 0.5])
    rows = np.concatenate([s.row_of_position[keep], s.row_of_position[d["before"]]])
    order = np.argsort(key, kind="stable")
    return Sequences.from_lengths(items[order], np.bincount(rows, minlength=s.n_rows), s.users)


def test_steam_invariants_on_random_data():
    inter = random_inter(n_users=600, n_items=400, lo=1, hi=45, seed=4)
    out = steam_noise(inter, seed=11)
    s, src = out.sequences, inter.sequences
    assert _rebuild(out).to_lists() == src.to_lists()
    d = out.meta["steam_deleted"]
    # deleted runs: at most 5 items before any kept position, attached to a kept (label 0) item
    missing = np.bincount(d["before"], minlength=len(s.items))
    assert missing.max() <= 5 and missing.max() >= 2
    assert (s.noise[d["before"]] == 0).all()
    # valid / test items untouched and never preceded by a gap
    fe_new = from_end(s)
    fe_old = from_end(src)
    long_rows = src.lengths >= 3
    for k in (0, 1):
        new_k = (fe_new == k) & long_rows[s.row_of_position]
        old_k = (fe_old == k) & long_rows[src.row_of_position]
        np.testing.assert_array_equal(s.items[new_k], src.items[old_k])
        assert (s.noise[new_k] == 0).all()
    assert not np.isin(d["before"], np.nonzero(fe_new <= 1)[0]).any()
    # the last history item is never deleted: it is the last label-0 item before the valid item
    row_new = s.row_of_position
    for r in np.nonzero(long_rows)[0][:200]:  # spot check of the list view
        hist_old = src.row(r)[:-2]
        hist_new = s.row(r)[:-2][s.noise[s.offsets[r]:s.offsets[r + 1]][:-2] == 0]
        assert hist_new[-1] == hist_old[-1]
        assert len(s.row(r)) - 2 <= max(58, len(hist_old))
    # inserted items: never in the user's (whole) sequence, distinct per user
    ins = np.nonzero(s.noise == 1)[0]
    seen = set(zip(src.row_of_position.tolist(), src.items.tolist()))
    pairs = list(zip(row_new[ins].tolist(), s.items[ins].tolist()))
    assert not seen & set(pairs)
    assert len(set(pairs)) == len(pairs)
    # short users unchanged; rates in the expected range
    for r in np.nonzero(~long_rows)[0]:
        assert s.row(r).tolist() == src.row(r).tolist()
    n_hist = int(np.maximum(src.lengths - 2, 0).sum())
    assert 0.05 < len(ins) / n_hist < 0.2
    assert 0.05 < len(d["items"]) / n_hist < 0.2


def test_steam_length_cap_and_determinism():
    inter = random_inter(n_users=200, n_items=500, lo=50, hi=60, seed=2)
    a = steam_noise(inter, seed=5)
    b = steam_noise(inter, seed=5)
    np.testing.assert_array_equal(a.sequences.items, b.sequences.items)
    hist_new = a.sequences.lengths - 2
    hist_old = inter.sequences.lengths - 2
    assert (hist_new <= np.maximum(58, hist_old)).all()
    assert (hist_new[hist_old <= 58] <= 58).all()
    c = steam_noise(inter, seed=6)
    assert not np.array_equal(a.sequences.items, c.sequences.items) or len(a.sequences.items) != len(c.sequences.items)


def test_steam_rejects_bad_probabilities():
    inter = random_inter(n_users=3)
    with pytest.raises(ConfigError, match="keep/delete/insert"):
        steam_noise(inter, 0, keep=0.5, delete=0.1, insert=0.1)
    with pytest.raises(ConfigError, match="keep > 0"):
        steam_noise(inter, 0, keep=0.0, delete=0.5, insert=0.5)


# ----------------------------------------------------------------------------- target flips
def test_flip_targets_only_on_targets_and_only_to_unseen_items():
    inter = random_inter(n_users=500, n_items=200, lo=5, hi=30, seed=9)
    full = inter.sequences
    train = full.select(from_end(full) >= 2)
    flips = flip_targets(train, full, inter.n_items, rate=0.3, seed=1)
    assert flips.shape == train.items.shape
    assert (flips[train.position_in_row == 0] == 0).all()
    targets = train.position_in_row >= 1
    assert abs((flips[targets] > 0).mean() - 0.3) < 0.02
    hit = np.nonzero(flips)[0]
    seen = set(zip(full.users[full.row_of_position].tolist(), full.items.tolist()))
    assert not seen & set(zip(train.users[train.row_of_position[hit]].tolist(), flips[hit].tolist()))
    np.testing.assert_array_equal(flips, flip_targets(train, full, inter.n_items, rate=0.3, seed=1))
