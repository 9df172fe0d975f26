"""Semantic outlier remover: leave-one-out text scores, the global cut, planted-noise detection."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.sequences import Sequences
from benchmark.detection import detection_from_denoised
from denoisers.semantic_outlier import SemanticOutlier, SemanticOutlierConfig, leave_one_out_scores, remove_top_share
from tests.test_said import fake_resources, synthetic_split


def test_scores_equal_the_brute_force_leave_one_out_cosine():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(8, 5)).astype(np.float32)
    vectors[0] = 0
    vectors[7] = 0  # untitled item
    seqs = Sequences.from_lists([[1, 2, 3, 7], [4, 5], [6], [2, 7]])
    got = leave_one_out_scores(seqs, vectors)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    expected = []
    for row in seqs.to_lists():
        for i, item in enumerate(row):
            others = [x for j, x in enumerate(row) if j != i and x != 7]
            if item == 7 or not others:
                expected.append(-np.inf)
                continue
            m = unit[others].sum(0)
            expected.append(1 - unit[item] @ m / np.linalg.norm(m))
    assert np.allclose(got, np.array(expected, dtype=np.float32), atol=1e-5)


def test_removes_the_requested_share_and_never_a_last_item():
    rng = np.random.default_rng(1)
    seqs = Sequences.from_lists([rng.integers(1, 9, size=n).tolist() for n in rng.integers(2, 12, size=40)])
    scores = rng.random(len(seqs.items)).astype(np.float32)
    keep = remove_top_share(seqs, scores, 0.2)
    assert (~keep).sum() == round(0.2 * len(seqs.items))
    assert keep[seqs.offsets[1:] - 1].all()
    removed, kept = scores[~keep], scores[keep & ~np.isin(np.arange(len(keep)), seqs.offsets[1:] - 1)]
    assert removed.min() >= kept.max()  # a global cut, not per row


def test_finds_planted_off_cluster_noise_better_than_random():
    split = synthetic_split(150)
    den = SemanticOutlier(SemanticOutlierConfig(ratio=0.1))
    den.fit(split.train, fake_resources(split))
    decisions = den.denoise(split.train)
    det = detection_from_denoised(split, decisions)
    assert det["flag_rate"] == pytest.approx(0.1, abs=0.002)
    assert det["f1"] > 3 * det["random_f1"]
    assert det["roc_auc"] > 0.85
    cleaned = decisions.apply()
    assert cleaned.n_rows == split.train.n_rows and (cleaned.lengths > 0).all()
