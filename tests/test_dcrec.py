from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from benchmark.config import compose
from benchmark.data.instances import build_train_tensors
from benchmark.data.sequences import Sequences
from benchmark.registry import BACKBONES
from benchmark.run import train_and_test
from denoisers.base import IdentityDenoiser
from models.base import ModelShape
from models.dcrec import conformity_weights, info_nce, sorted_kl
from models.dcrec_graph import gcn, neighbour_readout, similarity_graph, transition_graph
from tests.helpers import loo_split, transition_split


def two_users() -> Sequences:
    return Sequences.from_lists([[1, 2, 3], [2, 3, 4]], users=[1, 2])


def test_transition_graph_of_a_hand_example():
    g = transition_graph(Sequences.from_lists([[1, 2, 3]]), n_items=3)
    counts = torch.tensor([[1, 0, 0, 0], [0, 1, 2, 0], [0, 2, 1, 2], [0, 0, 2, 1]], dtype=torch.float32)
    d = counts.sum(1).rsqrt()
    expected = d.unsqueeze(1) * counts * d.unsqueeze(0)
    assert torch.allclose(g.dense(), expected)
    assert torch.allclose(g.dense(), g.dense().T)
    assert np.isclose(float(g.dense()[1, 2]), 2 / np.sqrt(3 * 5))


def test_similarity_graph_rows_sum_to_one_with_at_most_k_plus_one_neighbours():
    split = transition_split(n_users=60, n_items=20, length=8)
    g = similarity_graph(split.train, split.n_items, k=4)
    dense = g.dense()
    used = dense[1:].sum(1) > 0
    assert torch.allclose(dense[1:][used].sum(1), torch.ones(int(used.sum())), atol=1e-5)
    assert int((dense > 0).sum(1).max()) <= 5
    assert torch.all(torch.diagonal(dense)[1:][used] > 0), "every item is its own most similar item"


def test_batch_augmentation_removes_exactly_the_batch_users_edges_and_keeps_self_loops():
    g = transition_graph(two_users(), n_items=4, users=True)
    removed = g.removed_by_users(torch.tensor([1, 1]))
    pairs = {(int(s), int(d)) for s, d, r in zip(g.src, g.dst, removed) if r}
    assert pairs == {(1, 2), (2, 1), (2, 3), (3, 2)}, "user 1's edges, even (2,3) shared with user 2"
    kept = {(int(s), int(d)) for s, d, r in zip(g.src, g.dst, removed) if not r}
    assert {(3, 4), (4, 3)} <= kept
    assert {(i, i) for i in range(5)} <= kept


def test_gcn_matches_a_dense_reference_with_and_without_degree_norm():
    torch.manual_seed(0)
    g = transition_graph(two_users(), n_items=4, users=True)
    x = torch.randn(5, 3)
    removed = g.removed_by_users(torch.tensor([2]))
    for norm in (False, True):
        exists = torch.zeros(5, 5)
        exists[g.src[~removed], g.dst[~removed]] = 1.0
        w = g.dense() * exists + torch.eye(5)  # [src, dst], with the added self-loops
        if norm:
            out_deg, in_deg = exists.sum(1) + 1, exists.sum(0) + 1
            w = out_deg.rsqrt().unsqueeze(1) * w * in_deg.rsqrt().unsqueeze(0)
        m = w.T  # out[dst] = sum_src w[src, dst] x[src]
        expected = torch.stack([x, m @ x, m @ m @ x]).mean(0)
        assert torch.allclose(gcn(g, x, 2, 0.0, removed, norm), expected, atol=1e-5)


def test_neighbour_readout_means_match_brute_force_sets():
    g = transition_graph(two_users(), n_items=4, users=True)
    removed = g.removed_by_users(torch.tensor([1]))
    features = torch.arange(15, dtype=torch.float32).view(5, 3)
    nodes = torch.tensor([2, 3, 1])
    civil, foreign = neighbour_readout(g, nodes, removed, features, samples=10)
    for b, i in enumerate(nodes.tolist()):
        into = (g.dst == i).nonzero().flatten()
        fset = [int(g.src[e]) for e in into if not removed[e]]
        cset = [int(g.src[e]) for e in into if removed[e]]
        assert i in fset, "the self-loop keeps every node foreign to itself"
        assert torch.allclose(foreign[b], features[fset].mean(0))
        expected_civil = features[cset].mean(0) if cset else torch.zeros(3)
        assert torch.allclose(civil[b], expected_civil)


def test_neighbour_sampling_takes_at_most_the_requested_count():
    g = transition_graph(Sequences.from_lists([[1, 2, 1, 3, 1, 4, 1, 5]], users=[1]), n_items=5, users=True)
    removed = torch.zeros(g.n_edges, dtype=torch.bool)
    features = torch.eye(6)
    _, foreign = neighbour_readout(g, torch.tensor([1]), removed, features, samples=2)
    assert int((foreign[0] > 0).sum()) == 2 and torch.isclose(foreign[0].sum(), torch.tensor(1.0))


def test_conformity_weights_have_the_target_mean_and_bounded_range():
    torch.manual_seed(0)
    views = [torch.randn(32, 8) for _ in range(4)]
    a = conformity_weights(*views, weight_mean=0.4)
    assert torch.isclose(a.mean(), torch.tensor(0.4), atol=1e-5)
    assert float(a.min()) == pytest.approx(0.0, abs=1e-6)
    # upper bound: weight_mean / mean(min-max normalised a); the maximum normalised value is 1
    normalised = (a - a.min()) / (a.max() - a.min())
    assert float(a.max()) == pytest.approx(0.4 / float(normalised.mean()), rel=1e-5)
    same = conformity_weights(*(4 * [torch.ones(3, 8)]), weight_mean=0.5)
    assert torch.allclose(same, torch.full((3,), 0.5))


def test_info_nce_and_kl_are_finite_and_info_nce_prefers_aligned_pairs():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    assert float(info_nce(z, z, 1.0).mean()) < float(info_nce(z, torch.randn(16, 8), 1.0).mean())
    assert torch.isfinite(sorted_kl(torch.rand(16), 0.5))


def make_dcrec(split, max_len=10, **overrides):
    cfg = compose(backbone="dcrec", overrides=[f"backbone.{k}={v}" for k, v in overrides.items()])
    model = BACKBONES.get("dcrec").from_config(dict(cfg.backbone), ModelShape(split.n_items, split.n_users, max_len),
                                               None, None, IdentityDenoiser())
    model.prepare_split(split)
    return model


def prefix_batch(split, L=10):
    arrays = build_train_tensors(split.train, L, "prefix")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def test_without_graph_terms_dcrec_is_a_bidirectional_transformer_with_ce():
    split = transition_split(n_users=20, n_items=15, length=8)
    torch.manual_seed(0)
    model = make_dcrec(split, graphcl_coefficient=0.0, kl_weight=0.0, graph_view_fusion=False,
                       hidden_dropout=0.0, attn_dropout=0.0)
    cfg = compose(backbone="sasrec", overrides=["backbone.bidirectional=true", "backbone.dropout=0.0",
                                                "backbone.attn_dropout=0.0"])
    sasrec = BACKBONES.get("sasrec").from_config(dict(cfg.backbone), ModelShape(split.n_items, split.n_users, 10),
                                                 None, None, IdentityDenoiser())
    missing = sasrec.load_state_dict(model.state_dict(), strict=False)
    assert not missing.missing_keys
    batch = prefix_batch(split)
    model.log_dict = sasrec.log_dict = lambda *a, **k: None
    assert torch.allclose(model.training_step(batch, 0), sasrec.training_step(batch, 0), atol=1e-5)


def test_training_step_adds_weighted_contrastive_and_kl_terms():
    split = transition_split(n_users=20, n_items=15, length=8)
    torch.manual_seed(0)
    model = make_dcrec(split, graphcl_coefficient=0.1)
    logged = {}
    model.log_dict = lambda values, **k: logged.update(values)
    loss = model.training_step(prefix_batch(split), 0)
    assert torch.isfinite(loss)
    assert float(logged["train/cl_loss"]) > 0 and "train/kl_loss" in logged
    loss.backward()
    assert model.fusion_weight.grad is not None and model.item_embedding.weight.grad.abs().sum() > 0


def test_all_positions_targets_are_refused():
    split = transition_split(n_users=10, n_items=15, length=8)
    model = make_dcrec(split)
    arrays = build_train_tensors(split.train, 10, "all_positions")
    with pytest.raises(ValueError, match="prefix"):
        model.training_inputs({k: torch.from_numpy(v) for k, v in arrays.items()})


def test_test_graphs_come_from_the_test_histories():
    split = loo_split([[1, 2, 3, 4], [2, 3, 4, 5]], n_items=5)
    model = make_dcrec(split)
    train_edges = set(zip(model.graphs("train").adj.src.tolist(), model.graphs("train").adj.dst.tolist()))
    test_edges = set(zip(model.graphs("test").adj.src.tolist(), model.graphs("test").adj.dst.tolist()))
    assert (3, 4) not in train_edges and (3, 4) in test_edges  # the validation item joins the test history
    assert (4, 5) not in test_edges  # test targets never enter a graph


def test_dcrec_learns_a_planted_transition(tmp_path: Path):
    split = transition_split(n_users=150, n_items=50)
    cfg = compose(backbone="dcrec", overrides=[
        "train.max_epochs=4", "train.patience=20", "logging.wandb=disabled", "logging.progress=false",
        "logging.csv=false", "dataset.max_len=10", "train.batch_size=128", "train.lr=0.01",
        "backbone.graphcl_coefficient=0.1"])
    pl.seed_everything(0)
    _, _, test, _, _, _ = train_and_test(cfg, split, "dcrec", IdentityDenoiser(), tmp_path, "t")
    assert test["hr@10"] > max(0.5, 2.5 * 10 / split.n_items)  # random predictor: 10 / N
