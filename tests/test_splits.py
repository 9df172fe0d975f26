"""Leave-one-out and sliding-window splits, and the build pipeline (noise → split → SplitData)."""
import numpy as np
import pytest

from benchmark.config import ConfigError, DatasetConfig, NoiseConfig, SyntheticConfig
from benchmark.data import build
from benchmark.data.noise import replace_noise
from benchmark.data.raw import Interactions
from benchmark.data.sequences import Sequences
from benchmark.data.splits import (
    leave_one_out,
    leave_one_out_index,
    materialize,
    occurrences,
    sliding_window,
    sliding_window_index,
    subsample,
)
from benchmark.data.synthetic import generate


def make_inter(rows, n_items=None, noise=None, timestamps=None):
    seqs = Sequences.from_lists(rows, noise=noise)
    if timestamps is None:
        seqs.timestamps = seqs.position_in_row.astype(np.float64)
    else:
        seqs.timestamps = np.array([t for r in timestamps for t in r], dtype=np.float64)
    n_items = n_items or int(seqs.items.max(initial=1))
    return Interactions(seqs, len(rows), n_items, [""] + [f"t{i}" for i in range(1, n_items + 1)],
                        np.arange(n_items + 1).astype(object), np.arange(len(rows) + 1).astype(object))


# ----------------------------------------------------------------------------- leave-one-out
def test_leave_one_out_hand_example_with_labels_and_short_users():
    inter = make_inter(
        [[1, 2, 3, 4], [5, 6], [7, 8, 9], []],
        noise=[[1, 0, 0, 0], [0, 1], [0, 1, 0], []],
    )
    train, valid, test = leave_one_out(inter)
    assert train.to_lists() == [[1, 2], [5, 6], [7]]
    assert train.users.tolist() == [1, 2, 3]
    assert train.noise.tolist() == [1, 0, 0, 1, 0]
    assert valid.history.to_lists() == [[1, 2], [7]] and valid.targets.tolist() == [3, 8]
    assert test.history.to_lists() == [[1, 2, 3], [7, 8]] and test.targets.tolist() == [4, 9]
    assert valid.users.tolist() == test.users.tolist() == [1, 3]
    assert test.history.noise.tolist() == [1, 0, 0, 0, 1]
    assert test.history.timestamps.tolist() == [0, 1, 2, 0, 1]


def test_leave_one_out_targets_never_leak_into_train():
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 50, size=rng.integers(0, 20)).tolist() for _ in range(300)]
    inter = make_inter(rows, n_items=50)
    idx = leave_one_out_index(inter.sequences)
    eval_targets = np.concatenate([idx.valid.targets, idx.test.targets])
    assert not np.isin(eval_targets, idx.train.src).any()
    assert not np.isin(idx.test.targets, idx.valid.src).any()
    assert not np.isin(idx.test.targets, idx.test.src).any()
    # validation history = the train row; test history = train row + the validation target
    train, valid, test = leave_one_out(inter)
    by_user = dict(zip(train.users.tolist(), train.to_lists()))
    rows = zip(valid.users.tolist(), valid.history.to_lists(), valid.targets.tolist(), test.history.to_lists())
    for u, h, vt, th in rows:
        assert by_user[u] == h and th == h + [vt]


def test_leave_one_out_with_valid_in_train_trains_on_the_validation_target_only():
    inter = make_inter([[1, 2, 3, 4], [5, 6], [7, 8, 9]], noise=[[1, 0, 0, 0], [0, 1], [0, 1, 0]])
    plain = leave_one_out_index(inter.sequences)
    idx = leave_one_out_index(inter.sequences, valid_in_train=True)
    train, valid, test = materialize(inter, idx)
    assert train.to_lists() == [[1, 2, 3], [5, 6], [7, 8]]
    assert train.noise.tolist() == [1, 0, 0, 0, 1, 0, 1]
    assert np.isin(idx.valid.targets, idx.train.src).all() and not np.isin(idx.test.targets, idx.train.src).any()
    for name in ("valid", "test"):
        a, b = getattr(idx, name), getattr(plain, name)
        assert a.src.tolist() == b.src.tolist() and a.targets.tolist() == b.targets.tolist()
    assert test.targets.tolist() == [4, 9] and valid.targets.tolist() == [3, 8]


# ----------------------------------------------------------------------------- sliding window
def test_sliding_window_hand_example():
    # user 1: 5 items at times 10..14; user 2: 2 items at times 0, 20; user 3: one item (dropped)
    inter = make_inter([[1, 2, 3, 4, 5], [6, 7], [8]], timestamps=[[10, 11, 12, 13, 14], [0, 20], [5]])
    idx = sliding_window_index(inter.sequences, window_size=3, ratios=(0.5, 0.25, 0.25))
    train, valid, test = sliding_window(inter, window_size=3, ratios=(0.5, 0.25, 0.25))
    # windows by end time: [1,2,3]@12, [2,3,4]@13, [3,4,5]@14, [6,7]@20 -> 2 / 1 / 1
    assert train.to_lists() == [[1, 2, 3], [2, 3, 4]]
    assert valid.history.to_lists() == [[3, 4]] and valid.targets.tolist() == [5]
    assert test.history.to_lists() == [[6]] and test.targets.tolist() == [7] and test.users.tolist() == [2]
    assert len(idx.train.users) + len(idx.valid.users) + len(idx.test.users) == 4


def test_sliding_window_short_user_gives_one_whole_window():
    inter = make_inter([[1, 2, 3, 4]])
    train, _, _ = sliding_window(inter, window_size=11, ratios=(1.0, 0.0, 0.0))
    assert train.to_lists() == [[1, 2, 3, 4]]


def test_sliding_window_is_temporally_ordered_without_leakage():
    rng = np.random.default_rng(1)
    rows, times = [], []
    for _ in range(200):
        n = int(rng.integers(2, 30))
        rows.append(rng.integers(1, 100, size=n).tolist())
        times.append(np.sort(rng.integers(0, 1000, size=n)).tolist())
    inter = make_inter(rows, n_items=100, timestamps=times)
    idx = sliding_window_index(inter.sequences, window_size=11)
    ts = inter.sequences.timestamps
    train_ends = ts[idx.train.src[np.cumsum(idx.train.lengths) - 1]]
    assert train_ends.max() <= ts[idx.valid.targets].min()
    assert ts[idx.valid.targets].max() <= ts[idx.test.targets].min()
    total = len(idx.train.users) + len(idx.valid.users) + len(idx.test.users)
    assert len(idx.train.users) == int(total * 0.8)
    assert len(idx.train.users) + len(idx.valid.users) == int(total * 0.9)
    assert idx.train.lengths.max() <= 11 and idx.test.lengths.max() <= 10


def test_sliding_window_restores_test_targets_only():
    rng = np.random.default_rng(2)
    rows = [rng.integers(1, 500, size=15).tolist() for _ in range(100)]
    inter = make_inter(rows, n_items=500, timestamps=[list(range(u, u + 15)) for u in range(100)])
    noisy = replace_noise(inter, alpha=1.0, seed=0, split="window")  # every position drawn
    idx = sliding_window_index(noisy.sequences)
    _, valid, test = sliding_window(noisy)
    np.testing.assert_array_equal(test.targets, inter.sequences.items[idx.test.targets])
    assert (valid.targets != inter.sequences.items[idx.valid.targets]).mean() > 0.9
    assert test.history.noise.all()  # histories stay noisy


def test_sliding_window_needs_timestamps_and_valid_ratios():
    seqs = Sequences.from_lists([[1, 2, 3]])
    with pytest.raises(ValueError, match="timestamps"):
        sliding_window_index(seqs)
    seqs.timestamps = np.arange(3.0)
    with pytest.raises(ValueError, match="ratios"):
        sliding_window_index(seqs, ratios=(0.8, 0.3, 0.1))


def test_occurrences_maps_every_appearance():
    src = np.array([5, 6, 7, 6, 7, 8])
    which, flat = occurrences(src, np.array([7, 9, 5]))
    assert sorted(zip(which.tolist(), flat.tolist())) == [(0, 2), (0, 4), (2, 0)]


def test_subsample_is_seeded_and_keeps_order():
    inter = make_inter([[i, i + 1, i + 2] for i in range(1, 40)], n_items=50)
    _, _, test = leave_one_out(inter)
    a, b = subsample(test, n=10, seed=42), subsample(test, n=10, seed=42)
    assert a.targets.tolist() == b.targets.tolist() and len(a.targets) == 10
    assert (np.diff(a.users) > 0).all()
    assert subsample(test, n=1000) is test


# ----------------------------------------------------------------------------- build
@pytest.fixture
def synthetic_loader(monkeypatch):
    calls = []

    def load(cfg):
        calls.append(cfg)
        return generate(cfg.synthetic)

    monkeypatch.setattr(build, "_load_interactions", load)
    build.clear_cache()
    yield calls
    build.clear_cache()


def _cfg(noise_rate=0.1, **kw):
    small = SyntheticConfig(n_users=60, n_items=40, n_clusters=4, min_len=5, max_len=15, seed=1, noise_rate=noise_rate)
    return DatasetConfig(name="synthetic", synthetic=small, **kw)


def test_build_records_protocol_and_caches_per_config(synthetic_loader):
    cfg = _cfg(noise=NoiseConfig(kind="replace", alpha=0.2, seed=3))
    a = build.build_split_data(cfg)
    b = build.build_split_data(_cfg(noise=NoiseConfig(kind="replace", alpha=0.2, seed=3)))
    assert a is b and len(synthetic_loader) == 1
    synthetic = {"n_users": 60, "n_items": 40, "n_clusters": 4, "min_len": 5, "max_len": 15, "seed": 1}
    c = build.build_split_data(
        {"name": "synthetic", "synthetic": synthetic, "noise": {"kind": "replace", "alpha": 0.3, "seed": 3}}
    )
    assert c is not a and len(synthetic_loader) == 2
    p = a.protocol
    recorded = (p["dataset"], p["split"], p["noise"], p["noise_alpha"], p["noise_seed"])
    assert recorded == ("synthetic", "loo", "replace", 0.2, 3)
    assert p["n_users"] == a.n_users == 60 and p["n_items"] == a.n_items == 40
    assert {"k_core", "max_len", "duplicates"} <= set(p)
    assert len(a.item_text) == 41 and a.item_text[0] == ""
    assert a.meta["valid_target_noise"].shape == a.valid.targets.shape
    assert a.train.noise is not None and a.test.history.noise is not None


def test_build_with_valid_in_train_keeps_noise_and_evaluation_of_plain_leave_one_out(synthetic_loader):
    noise = NoiseConfig(kind="replace", alpha=0.2, seed=3)
    plain = build.build_split_data(_cfg(noise=noise))
    inside = build.build_split_data(_cfg(noise=noise, split="loo_valid_in_train"))
    assert inside.protocol["split"] == "loo_valid_in_train" and "valid_in_train" in inside.protocol
    assert inside.protocol["noise_alpha"] == 0.2 and inside.protocol["noise_protect_valid"] is False
    assert inside.test.targets.tolist() == plain.test.targets.tolist()
    assert inside.valid.history.to_lists() == plain.valid.history.to_lists()
    grown = [p + [t] for p, t in zip(plain.valid.history.to_lists(), plain.valid.targets.tolist())]
    by_user = dict(zip(inside.train.users.tolist(), inside.train.to_lists()))
    assert [by_user[u] for u in plain.valid.users.tolist()] == grown


def test_build_rejects_unknown_split_and_steam_windows(synthetic_loader):
    with pytest.raises(ConfigError, match="dataset.split"):
        build.build_split_data(_cfg(split="random"))
    with pytest.raises(ConfigError, match="steam"):
        build.build_split_data(_cfg(split="window", noise=NoiseConfig(kind="steam")))


def test_build_steam_maps_deleted_runs_to_train_positions(synthetic_loader):
    clean = build.build_split_data(_cfg(noise_rate=0.0))
    data = build.build_split_data(_cfg(noise_rate=0.0, noise=NoiseConfig(kind="steam", seed=4)))
    d = data.meta["steam_deleted"]
    assert len(d["items"]) > 0 and data.train.noise.sum() > 0
    assert (data.train.noise[d["before"]] == 0).all()  # gaps precede kept (original) items
    # dropping inserted items and re-inserting the runs gives back the clean train rows
    keep = data.train.noise == 0
    items = np.concatenate([data.train.items[keep], d["items"]])
    key = np.concatenate([np.nonzero(keep)[0].astype(float), d["before"] - 0.5])
    rows = np.concatenate([data.train.row_of_position[keep], data.train.row_of_position[d["before"]]])
    order = np.argsort(key, kind="stable")
    rebuilt = Sequences.from_lengths(items[order], np.bincount(rows, minlength=data.train.n_rows), data.train.users)
    assert rebuilt.to_lists() == clean.train.to_lists()
    np.testing.assert_array_equal(data.test.targets, clean.test.targets)
    np.testing.assert_array_equal(data.valid.targets, clean.valid.targets)


def test_build_target_flip_stores_flips_for_training_targets(synthetic_loader):
    data = build.build_split_data(_cfg(noise=NoiseConfig(kind="target_flip", alpha=0.3, seed=2)))
    flips = data.meta["target_flip"]
    assert flips.shape == data.train.items.shape
    assert (flips[data.train.position_in_row == 0] == 0).all()
    assert data.protocol["noise_flipped"] == int((flips > 0).sum()) > 0


def test_build_window_split_on_synthetic(synthetic_loader):
    data = build.build_split_data(_cfg(split="window", window_size=5))
    assert data.train.lengths.max() <= 5
    assert data.protocol["window_size"] == 5 and data.protocol["split"] == "window"


def test_build_through_the_catalog_for_synthetic_data():
    from omegaconf import OmegaConf

    build.clear_cache()
    node = OmegaConf.structured(_cfg(noise=NoiseConfig(kind="replace", alpha=0.1)))
    data = build.build_split_data(node)
    assert data.name == "synthetic" and data.n_users == 60 and data.test.targets.shape == (60,)
    assert data.protocol["synthetic"]["n_users"] == 60
    assert data.meta["item_cluster"].shape == (41,)
    build.clear_cache()
