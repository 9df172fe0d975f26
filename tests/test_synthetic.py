"""Synthetic generator: determinism, planted-noise labels, cluster structure, titles."""
import numpy as np
import pytest

from benchmark.config import ConfigError, SyntheticConfig
from benchmark.data.synthetic import generate


def _prefers(inter):
    """bool [nnz]: the item's cluster is one of the user's preferred clusters."""
    s = inter.sequences
    uc = inter.meta["user_clusters"][s.users[s.row_of_position]]
    c = inter.meta["item_cluster"][s.items]
    return (c == uc[:, 0]) | (c == uc[:, 1])


def test_same_seed_same_data_other_seed_other_data():
    cfg = SyntheticConfig(n_users=100, seed=3)
    a, b = generate(cfg), generate(SyntheticConfig(n_users=100, seed=3))
    np.testing.assert_array_equal(a.sequences.items, b.sequences.items)
    np.testing.assert_array_equal(a.sequences.noise, b.sequences.noise)
    assert a.item_text == b.item_text
    c = generate(SyntheticConfig(n_users=100, seed=4))
    assert len(c.sequences.items) != len(a.sequences.items) or not np.array_equal(c.sequences.items, a.sequences.items)


@pytest.mark.parametrize("transition", ["cluster", "deterministic"])
def test_noise_labels_are_exactly_the_off_cluster_items(transition):
    inter = generate(SyntheticConfig(n_users=400, noise_rate=0.2, transition=transition, seed=1))
    s = inter.sequences
    np.testing.assert_array_equal(s.noise.astype(bool), ~_prefers(inter))
    from_end = np.repeat(s.lengths, s.lengths) - 1 - s.position_in_row
    assert s.noise[from_end <= 1].sum() == 0  # validation and test targets are clean
    assert abs(s.noise[from_end >= 2].mean() - 0.2) < 0.02


def test_shapes_lengths_timestamps_and_meta():
    cfg = SyntheticConfig(n_users=50, n_items=30, n_clusters=3, min_len=4, max_len=9)
    inter = generate(cfg)
    s = inter.sequences
    assert inter.n_users == 50 and inter.n_items == 30 and s.users.tolist() == list(range(1, 51))
    assert s.lengths.min() >= 4 and s.lengths.max() <= 9
    np.testing.assert_array_equal(s.timestamps, s.position_in_row)
    assert s.items.min() >= 1 and s.items.max() <= 30
    ic = inter.meta["item_cluster"]
    assert ic[0] == -1 and np.bincount(ic[1:]).tolist() == [10, 10, 10]
    uc = inter.meta["user_clusters"]
    assert uc.shape == (51, 2) and (uc[0] == -1).all() and (uc[1:, 0] != uc[1:, 1]).all()
    assert len(inter.item_text) == 31 and len(inter.item_raw_ids) == 31 and len(inter.user_raw_ids) == 51


def test_deterministic_transition_walks_each_cluster_in_order():
    inter = generate(SyntheticConfig(n_users=200, noise_rate=0.15, transition="deterministic", seed=2))
    ic = inter.meta["item_cluster"]
    succ = np.zeros(len(ic), np.int64)  # successor of each item inside its cluster (cyclic, by id)
    for c in range(inter.meta["n_clusters"]):  # a handful of clusters
        members = np.nonzero(ic == c)[0]
        succ[members] = np.roll(members, -1)
    clean = inter.sequences.select(inter.sequences.noise == 0)
    n_pref = (inter.meta["user_clusters"][clean.users] >= 0).sum(1)
    lag = np.repeat(n_pref, clean.lengths)  # next clean item follows the clean item `lag` steps back
    pos = clean.position_in_row
    ok = pos >= lag
    idx = np.nonzero(ok)[0]
    np.testing.assert_array_equal(clean.items[idx], succ[clean.items[idx - lag[idx]]])
    assert ok.sum() > 1000


def test_titles_are_unique_and_carry_cluster_vocabulary():
    inter = generate(SyntheticConfig(n_items=120, n_clusters=6))
    titles = inter.item_text[1:]
    assert len(set(titles)) == len(titles)
    ic = inter.meta["item_cluster"][1:]
    words = [set(t.split()[:2]) for t in titles]
    vocab = [set().union(*[w for w, c in zip(words, ic) if c == k]) for k in range(6)]
    for a in range(6):
        for b in range(a + 1, 6):
            assert not vocab[a] & vocab[b]


def test_many_clusters_beyond_the_themes():
    inter = generate(SyntheticConfig(n_users=30, n_items=200, n_clusters=25, noise_rate=0.1))
    assert len(set(inter.item_text[1:])) == 200
    np.testing.assert_array_equal(inter.sequences.noise.astype(bool), ~_prefers(inter))


def test_two_clusters_means_one_preferred_cluster_each():
    inter = generate(SyntheticConfig(n_users=40, n_items=20, n_clusters=2, noise_rate=0.3))
    assert (inter.meta["user_clusters"][1:, 1] == -1).all()
    np.testing.assert_array_equal(inter.sequences.noise.astype(bool), ~_prefers(inter))


@pytest.mark.parametrize(
    "kw,key",
    [
        ({"min_len": 2}, "min_len"),
        ({"min_len": 10, "max_len": 5}, "min_len"),
        ({"n_clusters": 1, "noise_rate": 0.1}, "noise_rate"),
        ({"n_items": 3, "n_clusters": 6}, "n_clusters"),
        ({"transition": "markov"}, "transition"),
        ({"noise_rate": 1.0}, "noise_rate"),
    ],
)
def test_invalid_config_names_the_key(kw, key):
    with pytest.raises(ConfigError, match=f"dataset.synthetic.{key}"):
        generate(SyntheticConfig(**kw))
