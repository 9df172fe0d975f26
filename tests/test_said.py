"""SAID-style target reweighting: weight formula, global mean, alignment with batches, loss."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import pytest
import torch

from benchmark.config import compose
from benchmark.data.build import build_split_data
from benchmark.data.instances import build_train_tensors
from benchmark.data.sequences import Sequences
from benchmark.resources import Resources
from benchmark.run import train_and_test
from denoisers.base import IdentityDenoiser, StepContext
from denoisers.said import (
    SAID,
    SAIDConfig,
    hard_filter_weights,
    profile_texts,
    said_detection,
    said_weights,
    similarity_mean_profile,
    target_positions,
)
from tests.helpers import loo_split


def bow_vectors(texts: list[str], dim: int = 128) -> np.ndarray:
    """Deterministic bag-of-words vectors (hashed words); empty text -> zero vector."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):  # test fixture, a few hundred short texts
        for word in text.lower().replace(",", " ").split():
            out[i, zlib.crc32(word.encode()) % dim] += 1.0
    return out


def fake_resources(split, seed: int = 0) -> Resources:
    res = Resources(split, seed=seed)
    res.__dict__["text_embeddings"] = bow_vectors(split.item_text)
    res.encode_texts = lambda texts, name=None, **cfg: bow_vectors(list(texts))  # type: ignore[method-assign]
    return res


def synthetic_split(n_users: int = 60, **overrides):
    cfg = compose(dataset="synthetic", overrides=[f"dataset.synthetic.n_users={n_users}"] +
                  [f"dataset.{k}={v}" for k, v in overrides.items()])
    from omegaconf import OmegaConf

    return build_split_data(OmegaConf.to_object(cfg.dataset))


def test_weights_are_bounded_by_a_and_one_and_monotone_in_similarity():
    s = np.linspace(-1, 1, 201).astype(np.float32)
    valid = np.ones_like(s, dtype=bool)
    for a in (0.0, 0.4, 0.9):
        w, mu = said_weights(s, valid, a=a, beta=5.0)
        assert np.all(w >= a - 1e-7) and np.all(w <= 1.0 + 1e-7)
        assert np.all(np.diff(w) >= 0)
        assert mu == pytest.approx(float(s.mean()), abs=1e-6)


def test_weight_at_the_global_mean_is_the_midpoint_and_matches_the_worked_numbers():
    s = np.array([0.3, 0.5, 0.7, 0.1, 0.0], dtype=np.float32)
    valid = np.array([True, True, True, False, True])
    w, mu = said_weights(s, valid, a=0.4, beta=5.0, mu=0.5)
    assert w[1] == pytest.approx(0.7)  # (1 + a) / 2
    assert w[2] == pytest.approx(0.4 + 0.6 / (1 + np.exp(-1.0)), abs=1e-6)  # spec §11: 0.839
    assert w[0] == pytest.approx(0.4 + 0.6 / (1 + np.exp(1.0)), abs=1e-6)  # 0.561
    assert w[3] == 1.0  # invalid target -> weight 1
    _, mu_global = said_weights(s, valid, a=0.4, beta=5.0)
    assert mu_global == pytest.approx(float(s[valid].mean()))


def test_mean_profile_similarity_uses_only_the_k_previous_items_of_the_same_row():
    vectors = np.zeros((6, 3), dtype=np.float32)
    vectors[1] = [1, 0, 0]
    vectors[2] = [0, 1, 0]
    vectors[3] = [0, 0, 1]
    vectors[4] = [1, 1, 0]
    # item 5 untitled (zero vector)
    seqs = Sequences.from_lists([[1, 2, 3, 4], [4, 5, 1]])
    s, valid = similarity_mean_profile(seqs, vectors, k=2)
    assert valid.tolist() == [False, True, True, True, False, False, True]
    assert s[1] == pytest.approx(0.0)  # profile {1} vs item 2
    assert s[3] == pytest.approx(0.5)  # profile {2, 3} (k=2) = [0,1,1]/√2 vs item 4 = [1,1,0]/√2
    assert s[6] == pytest.approx(np.cos(np.pi / 4))  # profile {4} (5 untitled) vs item 1


def test_profile_texts_join_the_k_most_recent_titles_oldest_first():
    seqs = Sequences.from_lists([[1, 2, 3, 4], [3, 1]])
    titles = ["", "alpha", "", "gamma", "delta"]
    text = profile_texts(seqs, titles, k=2, separator=", ")
    assert text.tolist() == ["", "alpha", "alpha", "gamma", "", "gamma"]
    text3 = profile_texts(seqs, titles, k=3, separator=" | ")
    assert text3[3] == "alpha | gamma"


@pytest.mark.parametrize("mode", ["all_positions", "prefix", "windows"])
def test_target_positions_point_at_the_target_item_of_every_slot(mode):
    split = synthetic_split(20)
    arrays = build_train_tensors(split.train, 8, mode)
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    flat = target_positions(batch)
    if mode == "windows":  # cloze: the masked slot's own item is the target
        targets = batch["items"]
    else:
        targets = batch["targets"]
    has = targets > 0
    assert torch.equal(torch.from_numpy(split.train.items)[flat[has]], targets[has])


def _said(split, **cfg) -> SAID:
    den = SAID(SAIDConfig(**cfg), fake_resources(split))
    den.attach(None)
    return den


def test_batch_weights_come_from_the_global_table_not_from_batch_statistics():
    split = synthetic_split(60)
    den = _said(split)
    arrays = build_train_tensors(split.train, 10, "all_positions")
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    ctx = StepContext(None, batch, "train", 0)
    full = den.sample_weights(ctx)
    # a batch made only of the lowest-weight instances keeps exactly the same weights
    low = full.masked_fill(batch["targets"] == 0, 2.0).min(1).values.argsort()[:16]
    sub = {k: v[low] for k, v in batch.items()}
    w_sub = den.sample_weights(StepContext(None, sub, "train", 0))
    assert torch.equal(w_sub, full[low])
    # shuffled batch order: per-instance weights move with their instances
    perm = torch.randperm(len(low), generator=torch.Generator().manual_seed(0))
    shuffled = {k: v[perm] for k, v in sub.items()}
    assert torch.equal(den.sample_weights(StepContext(None, shuffled, "train", 0)), w_sub[perm])
    assert den.sample_weights(StepContext(None, batch, "valid", 0)) is None
    assert den.summary["mu"] == pytest.approx(den.summary["similarity_mean"])


def test_off_cluster_noise_targets_get_low_weights():
    split = synthetic_split(120)
    den = _said(split)
    w = den.weight_table.numpy()
    det = said_detection(split, w, den.flag_threshold)
    assert det["roc_auc"] > 0.8
    assert det["precision"] > 1.5 * det["noise_rate"] and det["recall"] > 0.85  # flags s < mu: ~half
    assert det["f1"] > det["random_f1"]
    assert den.summary["mean_weight_noise"] < den.summary["mean_weight_clean"]
    report = den.report()
    assert report["detection_targets"]["roc_auc"] == pytest.approx(det["roc_auc"])


def test_export_flags_exactly_the_targets_below_the_threshold():
    split = synthetic_split(30)
    den = _said(split, a=0.4)
    dec = den.export(None, split.train)
    w = den.weight_table.numpy()
    expected = (w < 0.7) & (split.train.position_in_row >= 1)
    assert np.array_equal(dec.flagged, expected)
    assert np.allclose(dec.score, 1 - w)


def test_hard_drop_zeroes_the_lowest_quantile_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    s = rng.normal(size=1000).astype(np.float32)
    valid = np.ones(1000, bool)
    w, cut = hard_filter_weights(s, valid, 0.1)
    assert set(np.unique(w).tolist()) == {0.0, 1.0}
    assert (w == 0).sum() == 100
    assert np.all(s[w == 0] < cut)


def test_text_profile_option_encodes_each_distinct_profile_once():
    split = synthetic_split(20)
    calls: list[int] = []
    res = fake_resources(split)
    base = res.encode_texts

    def counting(texts, name=None, **cfg):
        calls.append(len(texts))
        return base(texts)

    res.encode_texts = counting  # type: ignore[method-assign]
    den = SAID(SAIDConfig(profile="text"), res)
    den.attach(None)
    texts = profile_texts(split.train, split.item_text, 10, ", ")
    assert calls == [len(set(texts.tolist()))]
    assert den.summary["n_targets"] == int((split.train.position_in_row >= 1).sum())


def _train(split, denoiser, tmp_path: Path):
    cfg = compose(backbone="sasrec", overrides=[
        "train.max_epochs=1", "train.patience=5", "logging.wandb=disabled", "logging.progress=false",
        "logging.csv=false", "dataset.max_len=10", "train.batch_size=64"])
    pl.seed_everything(0)
    model, *_ = train_and_test(cfg, split, "sasrec", denoiser, tmp_path, "t")
    return model


def test_a_equal_one_trains_bit_identically_to_the_plain_backbone(tmp_path):
    rows = np.random.default_rng(0).integers(1, 31, size=(24, 10)).tolist()
    split = loo_split(rows, 30)
    plain = _train(split, IdentityDenoiser(), tmp_path / "plain")
    said = _train(split, SAID(SAIDConfig(a=1.0), fake_resources(split)), tmp_path / "said")
    a, b = plain.state_dict(), said.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_count_normalisation_scales_the_loss_by_the_mean_weight():
    split = synthetic_split(20)
    from benchmark.registry import BACKBONES
    from models.base import ModelShape

    arrays = build_train_tensors(split.train, 10, "all_positions")
    batch = {k: torch.from_numpy(v[:32]) for k, v in arrays.items()}
    losses = {}
    for norm in ("count", "weight"):
        den = SAID(SAIDConfig(normalise=norm), fake_resources(split))
        cfg = compose(backbone="sasrec")
        torch.manual_seed(0)
        model = BACKBONES.get("sasrec").from_config(dict(cfg.backbone), ModelShape(split.n_items, 30, 10), None, None, den)
        model.eval()
        model.log_dict = lambda *a, **k: None  # no trainer attached
        losses[norm] = float(model.training_step(batch, 0).detach())
        w = den.sample_weights(StepContext(model, batch, "train", 0))[batch["targets"] > 0]
    assert losses["count"] == pytest.approx(losses["weight"] * float(w.mean()), rel=1e-5)


def test_target_flips_are_judged_by_the_flipped_item_against_the_original_profile():
    vectors = np.eye(4, dtype=np.float32)
    vectors[0] = 0
    seqs = Sequences.from_lists([[1, 1, 1, 1]])
    flips = np.array([0, 0, 3, 0])
    s, valid = similarity_mean_profile(seqs, vectors, k=3, target_items=np.where(flips > 0, flips, seqs.items))
    assert s.tolist() == [0.0, 1.0, 0.0, 1.0] and valid.tolist() == [False, True, True, True]
