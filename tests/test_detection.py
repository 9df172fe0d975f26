"""Noise-detection report: P/R/F1, random baseline, popularity buckets, insertion recall."""
import numpy as np
import pytest

from benchmark.data.sequences import DenoisedSequences, EvalSet, Sequences, SplitData
from benchmark.detection import (
    detection_from_denoised,
    detection_report,
    insertion_recall,
    popularity_buckets,
)


def test_precision_recall_f1_and_expected_random_baseline_by_hand():
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], np.int8)
    flagged = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    items = np.arange(1, 11)
    rep = detection_report(labels, flagged, items, np.ones(11, np.int64))
    assert (rep["n_positions"], rep["n_flagged"], rep["n_noise"], rep["tp"]) == (10, 2, 2, 1)
    assert rep["flag_rate"] == pytest.approx(0.2) and rep["noise_rate"] == pytest.approx(0.2)
    assert (rep["precision"], rep["recall"], rep["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    # a remover flagging 20% at random: P = noise rate 0.2, R = flag rate 0.2, F1 = 0.2
    expected = (rep["random_expected_precision"], rep["random_expected_recall"], rep["random_expected_f1"])
    assert expected == pytest.approx((0.2, 0.2, 0.2))


def test_unequal_rates_baseline_f1():
    labels = np.zeros(100, np.int8)
    labels[:10] = 1
    flagged = np.zeros(100, bool)
    flagged[5:35] = True  # 30 flags, 5 of them noise
    rep = detection_report(labels, flagged, np.ones(100, np.int64), np.array([0, 100]))
    assert (rep["precision"], rep["recall"]) == pytest.approx((5 / 30, 0.5))
    assert rep["f1"] == pytest.approx(2 * (5 / 30) * 0.5 / (5 / 30 + 0.5))
    p, r = 0.1, 0.3
    assert rep["random_expected_f1"] == pytest.approx(2 * p * r / (p + r))


def test_random_draw_flags_the_same_count_and_matches_expectation_at_scale():
    rng = np.random.default_rng(0)
    n = 50_000
    labels = (rng.random(n) < 0.2).astype(np.int8)
    flagged = rng.random(n) < 0.3
    freq = np.ones(11, np.int64)
    items = rng.integers(1, 11, size=n)
    a = detection_report(labels, flagged, items, freq, seed=5)
    b = detection_report(labels, flagged, items, freq, seed=5)
    assert a["random_precision"] == b["random_precision"]
    assert a["random_precision"] == pytest.approx(a["random_expected_precision"], abs=0.01)
    assert a["random_recall"] == pytest.approx(a["random_expected_recall"], abs=0.01)
    # an independent flagger is itself a random remover
    assert a["f1"] == pytest.approx(a["random_expected_f1"], abs=0.01)


def test_nothing_flagged_reports_zero_without_dividing_by_zero():
    rep = detection_report(np.array([1, 0], np.int8), np.zeros(2, bool), np.array([1, 2]), np.array([0, 1, 1]))
    assert rep["precision"] == rep["recall"] == rep["f1"] == rep["random_precision"] == 0.0


def test_popularity_buckets_equal_frequency_hot_to_cold():
    freq = np.array([0, 10, 5, 3, 1, 1, 0])  # item 6 never trained on -> coldest
    assert popularity_buckets(freq, 2).tolist() == [-1, 0, 1, 1, 1, 1, 1]
    # 5 buckets over 20 interactions (4 each): 10 -> b0; 5 starts at 10 -> b2; 3 at 15 -> b3; 1s at 18, 19 -> b4
    assert popularity_buckets(freq, 5).tolist() == [-1, 0, 2, 3, 4, 4, 4]
    # ties broken by item id
    assert popularity_buckets(np.array([0, 2, 2]), 2).tolist() == [-1, 0, 1]


def test_removal_ratio_per_bucket_by_hand_and_without_labels():
    freq = np.array([0, 10, 5, 3, 1, 1, 0])
    items = np.array([1, 1, 1, 1, 2, 3, 4, 5, 6, 6])
    flagged = np.array([1, 0, 0, 0, 1, 1, 0, 1, 1, 1], bool)
    rep = detection_report(None, flagged, items, freq, n_buckets=2)
    assert "precision" not in rep and rep["flag_rate"] == pytest.approx(0.6)
    b0, b1 = rep["buckets"]
    assert (b0["n_items"], b0["train_interactions"], b0["positions"], b0["flagged"]) == (1, 10, 4, 1)
    assert b0["removal_ratio"] == pytest.approx(0.25)
    assert (b1["n_items"], b1["train_interactions"], b1["positions"], b1["flagged"]) == (5, 10, 6, 5)
    assert b1["removal_ratio"] == pytest.approx(5 / 6)
    assert "noise_share" not in b0


def test_roc_auc_from_scores():
    labels = np.array([1, 1, 0, 0], np.int8)
    flagged = np.zeros(4, bool)
    freq = np.array([0, 4])
    items = np.ones(4, np.int64)
    assert detection_report(labels, flagged, items, freq, scores=np.array([0.9, 0.8, 0.1, 0.2]))["roc_auc"] == 1.0
    assert detection_report(labels, flagged, items, freq, scores=np.zeros(4))["roc_auc"] == 0.5
    assert detection_report(labels, flagged, items, freq, scores=np.array([0.9, 0.1, 0.5, 0.05]))["roc_auc"] == 0.75


def test_misaligned_inputs_raise():
    with pytest.raises(ValueError, match="align"):
        detection_report(np.zeros(3, np.int8), np.zeros(2, bool), np.ones(2), np.array([0, 1]))


def test_insertion_recall_counts_exact_item_in_the_right_gap():
    # deleted: 7 and 8 before position 3, 9 before position 10
    rep = insertion_recall(np.array([7, 8, 9]), np.array([3, 3, 10]), np.array([8, 9, 7, 7]), np.array([3, 11, 3, 3]))
    assert rep["matched"] == 2  # 8@3, 7@3 (once); 9 went to the wrong gap
    assert rep["recall"] == pytest.approx(2 / 3) and rep["precision"] == pytest.approx(2 / 4)


def _split(train):
    ev = EvalSet(Sequences.from_lists([[1]]), np.array([2]))
    return SplitData("toy", train, ev, ev, n_users=2, n_items=4, item_text=[""] * 5)


def test_detection_from_denoised_uses_train_labels_and_frequencies():
    train = Sequences.from_lists([[1, 2, 3], [1, 4]], noise=[[0, 1, 0], [0, 1]])
    denoised = DenoisedSequences(train, keep=np.array([1, 0, 1, 0, 1], bool))
    rep = detection_from_denoised(_split(train), denoised)
    assert rep["labels"] == "injected"
    assert (rep["tp"], rep["precision"], rep["recall"]) == (1, 0.5, 0.5)
    assert sum(b["train_interactions"] for b in rep["buckets"]) == 5


def test_detection_from_denoised_with_target_flips_and_steam_insertions():
    train = Sequences.from_lists([[1, 2, 3], [1, 4]])
    split = _split(train)
    split.meta["target_flip"] = np.array([0, 3, 0, 0, 0])
    split.meta["steam_deleted"] = {"items": np.array([4]), "before": np.array([2])}
    denoised = DenoisedSequences(train, keep=np.array([1, 0, 1, 1, 1], bool),
                                 insert_items=np.array([4]), insert_before=np.array([2]))
    rep = detection_from_denoised(split, denoised)
    assert rep["labels"] == "target_flip" and rep["tp"] == 1 and rep["precision"] == 1.0
    assert rep["insertion"]["recall"] == 1.0


def test_detection_from_denoised_rejects_other_sequences():
    train = Sequences.from_lists([[1, 2, 3]])
    other = Sequences.from_lists([[1, 2]])
    with pytest.raises(ValueError, match="training split"):
        detection_from_denoised(_split(train), DenoisedSequences(other, keep=np.ones(2, bool)))
