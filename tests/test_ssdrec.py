"""SSDRec (specs/ssdrec.md): sparse graphs, self-augmentation rules, hooks and export."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from benchmark.config import ConfigError
from benchmark.data.sequences import Sequences
from benchmark.resources import Resources
from denoisers.graphs import normalised_graphs, relation_counts
from denoisers.seq_ops import insert_two
from denoisers.ssdrec import SSDRec, SSDRecConfig
from denoisers.ssdrec_dna import GraphEncoder, SelfAugmenter
from models.base import ModelShape
from models.gru4rec import GRU4Rec, GRU4RecConfig
from tests.helpers import loo_split


# ---------------------------------------------------------------------- graphs
def _spec_example(**kw):
    seqs = Sequences.from_lists([[1, 2, 3, 4], [1, 2], [3, 4, 5]])
    args = dict(less_freq=0, cold_item_ratio=0.0, cold_user_ratio=0.0)
    args.update(kw)
    return relation_counts(seqs, n_users=3, n_items=5, **args)


def test_hand_made_example_has_the_edges_its_definition_implies():
    rel = _spec_example()
    base = {(1, 2): 2, (1, 3): 1, (1, 4): 1, (2, 3): 1, (2, 4): 1, (3, 4): 2, (3, 5): 1, (4, 5): 1}
    dense = rel.base.toarray()
    assert rel.base.nnz == len(base)
    for (a, b), v in base.items():
        assert dense[a, b] == v
    pos = rel.pos.toarray()
    expected_pos = {(1, 2): 1.25, (1, 3): 0.5, (1, 4): 0.25, (2, 3): 0.75, (2, 4): 0.5, (3, 4): 3 / 4 + 2 / 3,
                    (3, 5): 1 / 3, (4, 5): 2 / 3}
    assert rel.pos.nnz == len(expected_pos)
    for (a, b), v in expected_pos.items():
        assert pos[a, b] == pytest.approx(v)
    neg = rel.item_neg.toarray()
    assert rel.item_neg.nnz == 4
    assert neg[1, 5] == neg[5, 1] == neg[2, 5] == neg[5, 2] == 4
    sim = rel.user_sim.toarray()
    assert sim[1, 2] == pytest.approx(4 / 6) and sim[1, 3] == pytest.approx(4 / 7) and sim[2, 3] == 0
    assert np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T)
    uneg = rel.user_neg.toarray()
    assert rel.user_neg.nnz == 2 and uneg[2, 3] == uneg[3, 2] == pytest.approx(4 / 6 + 4 / 7)


def test_cold_exclusion_and_pruning_remove_incompatibility_edges():
    assert _spec_example(cold_user_ratio=0.9).user_neg.nnz == 0  # only 1 warm user left
    assert _spec_example(cold_item_ratio=0.8).item_neg.nnz == 0  # only 1 warm item left
    assert _spec_example(less_freq=1).item_neg.nnz == 0  # the shared neighbours' edges have weight 1


def _brute_force(rows, n_users, n_items, less_freq, cold_item, cold_user):
    """Direct loops over pairs, for comparison (test-only, tiny data)."""
    I, U = n_items + 1, n_users + 1
    base, pos, ui = np.zeros((I, I)), np.zeros((I, I)), np.zeros((U, I))
    for u, seq in enumerate(rows, start=1):
        n = len(seq)
        for a in range(n):
            ui[u, seq[a]] += 1
            for b in range(a + 1, n):
                base[seq[a], seq[b]] += 1
                pos[seq[a], seq[b]] += (n - (b - a)) / n
    count = np.bincount([i for r in rows for i in r], minlength=I)
    S = base + base.T
    never = S == 0
    np.fill_diagonal(S, 0)
    S = S * (S > less_freq)
    order = np.argsort(count[1:], kind="stable") + 1
    warm = set(order[int(np.ceil(n_items * cold_item)):].tolist())
    neg = np.zeros((I, I))
    for a, b in itertools.permutations(range(1, I), 2):
        common = (S[a] > 0) & (S[b] > 0)
        if a in warm and b in warm and never[a, b] and common.any():
            neg[a, b] = (S[a] * common).sum() + (S[b] * common).sum()
    sim = np.eye(U)
    for u, v in itertools.permutations(range(1, U), 2):
        su, sv = rows[u - 1], rows[v - 1]
        sim[u, v] = (sum(i in set(sv) for i in su) + sum(j in set(su) for j in sv)) / (len(su) + len(sv))
    ucount = np.array([0] + [len(r) for r in rows])
    uorder = np.argsort(ucount[1:], kind="stable") + 1
    uwarm = set(uorder[int(np.ceil(n_users * cold_user)):].tolist())
    g = sim - np.diag(np.diag(sim))
    uneg = np.zeros((U, U))
    for a, b in itertools.permutations(range(1, U), 2):
        common = (g[a] > 0) & (g[b] > 0)
        if a in uwarm and b in uwarm and sim[a, b] == 0 and common.any():
            uneg[a, b] = (g[a] * common).sum() + (g[b] * common).sum()
    return base, pos, neg, sim, uneg


def test_sparse_construction_equals_direct_loops_on_random_data():
    rng = np.random.default_rng(4)
    groups = [np.arange(1, 5), np.arange(5, 9), np.arange(9, 13)]  # users mix one or two adjacent groups
    mixes = [(0,), (2,), (0, 1), (1, 2), (1,)]
    rows = []
    for _ in range(15):
        pool = np.concatenate([groups[k] for k in mixes[rng.integers(len(mixes))]])
        rows.append(rng.choice(pool, rng.integers(2, 10)).tolist())
    rel = relation_counts(Sequences.from_lists(rows), 15, 12, less_freq=1, cold_item_ratio=0.3, cold_user_ratio=0.4)
    base, pos, neg, sim, uneg = _brute_force(rows, 15, 12, 1, 0.3, 0.4)
    assert np.allclose(rel.base.toarray(), base) and np.allclose(rel.pos.toarray(), pos)
    assert np.allclose(rel.item_neg.toarray(), neg) and np.allclose(rel.user_sim.toarray(), sim)
    assert np.allclose(rel.user_neg.toarray(), uneg)
    assert neg.any() and uneg.any()  # the example exercises both relations


def test_normalised_graphs_are_row_stochastic_where_rows_have_edges():
    g = normalised_graphs(_spec_example(), less_freq=0)
    for name in ("ui", "iu", "item_out", "item_in", "item_neg", "user_pos", "user_neg"):
        dense = getattr(g, name).to_dense().numpy()
        sums = dense.sum(1)
        assert np.allclose(sums[sums > 0], 1.0, atol=1e-6), name


def test_graph_products_match_dense_matmul_in_value_and_gradient():
    g = normalised_graphs(_spec_example(), less_freq=0)
    torch.manual_seed(0)
    for name in ("ui", "iu", "item_out", "item_in", "item_neg", "user_pos", "user_neg"):
        graph = getattr(g, name)
        x = torch.randn(graph.shape[1], 3, requires_grad=True)
        upstream = torch.randn(graph.shape[0], 3)
        got = g.mm(name, x)
        (got_grad,) = torch.autograd.grad((got * upstream).sum(), x)
        want = graph.to_dense() @ x
        (want_grad,) = torch.autograd.grad((want * upstream).sum(), x)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_grad, want_grad)
        assert name in g._transposes  # built once, reused by later backward passes


def test_row_products_equal_the_rows_of_the_full_product_in_value_and_gradient():
    g = normalised_graphs(_spec_example(), less_freq=0)
    torch.manual_seed(1)
    for name in ("ui", "user_pos", "user_neg"):
        graph = getattr(g, name)
        rows = torch.tensor([3, 0, 3, graph.shape[0] - 1])  # a repeat and the padding row (no edges)
        x = torch.randn(graph.shape[1], 4, requires_grad=True)
        upstream = torch.randn(len(rows), 4)
        got = g.mm(name, x, rows)
        (got_grad,) = torch.autograd.grad((got * upstream).sum(), x)
        want = (graph.to_dense() @ x)[rows]
        (want_grad,) = torch.autograd.grad((want * upstream).sum(), x)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.parametrize("layers", [1, 2])
def test_encoder_on_a_batch_of_users_equals_the_full_table_rows(layers):
    g = normalised_graphs(_spec_example(), less_freq=0)
    n_users, n_items = g.ui.shape
    torch.manual_seed(2)
    encoder = GraphEncoder(8, layers, dropout=0.3).eval()
    I, U = torch.randn(n_items, 8), torch.randn(n_users, 8)
    users = torch.tensor([2, 1, 2])
    I_full, U_full = encoder(I, U, g)
    I_rows, U_rows = encoder(I, U, g, user_rows=users)
    torch.testing.assert_close(I_rows, I_full)
    torch.testing.assert_close(U_rows, U_full[users])


def test_graphs_from_training_data_never_contain_validation_or_test_items():
    rows = [[1, 2, 3, 4, 11, 12], [2, 3, 4, 5, 13, 14], [1, 3, 5, 2, 15, 16]]  # valid/test items unique
    split = loo_split(rows, n_items=16)
    rel = relation_counts(split.train, split.n_users, split.n_items, less_freq=0, cold_item_ratio=0, cold_user_ratio=0)
    held_out = [11, 12, 13, 14, 15, 16]
    for m in (rel.user_item, rel.base, rel.pos, rel.item_neg):
        dense = m.toarray()
        assert not dense[..., held_out].any() and (m.shape[0] != 17 or not dense[held_out].any())


# ---------------------------------------------------------------------- augmentation rules
class _FixedSlots(SelfAugmenter):
    """Draws fixed slots (first draw: ``p``; second draw: ``q``) instead of Gumbel samples."""

    def __init__(self, H, p, q):
        super().__init__(H)
        self.draws = [p, q]

    def _draw_slot(self, noise, mask, tau):
        slot = self.draws.pop(0)
        return torch.nn.functional.one_hot(slot, noise.shape[1]).to(noise.dtype)


def _right_padded(rows, L):
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    for r, seq in enumerate(rows):
        ids[r, : len(seq)] = torch.tensor(seq)
    return ids


def test_augmentation_inserts_only_when_the_slot_is_inside_and_there_is_room():
    L, H = 7, 4
    rows = [[1, 2, 3], [1, 2, 3], [1, 2, 3, 4, 5, 6], [4, 5]]  # p inside / p >= n / n > L-2 / p inside
    ids = _right_padded(rows, L)
    p = torch.tensor([1, 3, 2, 0])
    q = torch.tensor([6, 6, 6, 6])  # never inside a window: no deletion
    torch.manual_seed(0)
    aug = _FixedSlots(H, p, q)
    table = torch.randn(10, H)
    z = table[ids]
    out = aug(ids, z, (ids > 0).sum(1), table, tau=0.5)
    assert out.augmented.tolist() == [True, False, False, True]
    assert not out.deleted.any()
    assert torch.equal(out.ids[1], ids[1]) and torch.equal(out.ids[2], ids[2])
    assert out.lengths.tolist() == [5.0, 3.0, 6.0, 4.0]
    for r in (0, 3):
        a, b = out.ids[r, p[r]], out.ids[r, p[r] + 2]
        expected = insert_two(ids[r:r + 1], p[r:r + 1], a.view(1), b.view(1))[0]
        assert torch.equal(out.ids[r], expected)
        emb = insert_two(z[r:r + 1], p[r:r + 1], table[a].view(1, H), table[b].view(1, H))[0]
        assert torch.allclose(out.z[r], emb, atol=1e-6)
    assert torch.equal(out.z[1], z[1]) and torch.equal(out.z[2], z[2])


def test_second_pass_deletes_only_inside_the_inserted_window():
    L, H = 8, 4
    ids = _right_padded([[1, 2, 3], [1, 2, 3]], L)
    p = torch.tensor([1, 1])
    q = torch.tensor([2, 4])  # row 0: slot p+1 (the moved s_p, inside the window); row 1: outside
    torch.manual_seed(0)
    table = torch.randn(10, H)
    aug = _FixedSlots(H, p, q)
    aug.allow_padding_insert = False
    out = aug(ids, table[ids], (ids > 0).sum(1), table, tau=0.5)
    assert out.augmented.tolist() == [True, True] and out.deleted.tolist() == [True, False]
    row0, row1 = out.ids[0].tolist(), out.ids[1].tolist()
    assert row0[0] == 1 and row0[2] == 0 and row0[4] == 3 and min(row0[1], row0[3]) > 0
    assert row1[0] == 1 and row1[2] == 2 and row1[4] == 3 and min(row1[1], row1[3]) > 0
    assert out.lengths.tolist() == [4.0, 5.0]


# ---------------------------------------------------------------------- hooks
def _ssdrec(cfg: SSDRecConfig | None = None, L: int = 8):
    torch.manual_seed(0)
    rows = [[1, 2, 3, 4, 5, 6, 7], [3, 4, 5, 6, 7, 8, 9], [9, 8, 7, 6, 5], [2, 4, 6, 8, 1]]
    split = loo_split(rows, n_items=10)
    den = SSDRec(cfg or SSDRecConfig(less_freq=0, cold_item_ratio=0, cold_user_ratio=0), Resources(split))
    model = GRU4Rec(GRU4RecConfig(embedding_size=8, hidden_size=8), ModelShape(10, 4, L), denoiser=den)
    den.attach(model)
    return split, den, model


def _batch():
    items = torch.tensor([[0, 0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 3, 4, 5], [0, 0, 0, 0, 0, 0, 9, 8]])
    targets = torch.zeros_like(items)
    targets[:, -1] = torch.tensor([6, 6, 7])
    return {"items": items, "targets": targets, "users": torch.tensor([1, 2, 3]), "positions": torch.full_like(items, -1)}


@pytest.mark.parametrize("stale", [False, True])
def test_stale_mask_controls_whether_augmentation_loses_real_items(stale):
    cfg = SSDRecConfig(less_freq=0, cold_item_ratio=0, cold_user_ratio=0, stale_mask=stale, position_sampler="gumbel_valid")
    _, den, model = _ssdrec(cfg)
    batch = _batch()
    torch.manual_seed(1)
    view = den.view(model, batch["items"], model.embed(batch["items"]), batch["users"], True, 0.5)
    original = (batch["items"] > 0).sum(1)
    augmented = (view.lengths - original.float()) >= 1  # +2 (or +1 after a deletion)
    assert augmented.any()
    covered = (view.mask > 0) & (view.ids > 0)
    if stale:
        assert torch.all(covered.sum(1)[augmented] <= original[augmented])
    else:
        assert torch.equal(covered, view.ids > 0)  # every item (original or inserted) stays visible


def test_ssdrec_training_step_trains_the_graph_encoder_and_augmenter():
    _, den, model = _ssdrec()
    loss = model.training_step(_batch(), 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert den.encoder.i_cat.grad is not None and den.augmenter.lstm.weight_ih_l0.grad is not None
    assert den.report()["graphs"]["edges"]["ui"] > 0


def test_ssdrec_export_is_deterministic_and_covers_every_position():
    split, den, model = _ssdrec()
    a, b = den.export(model, split.train), den.export(model, split.train)
    assert np.array_equal(a.keep, b.keep) and np.allclose(a.score, b.score)
    assert len(a.keep) == len(split.train.items) and len(a.insert_items) == 0


def test_reference_preset_turns_on_the_stale_mask():
    assert SSDRec(SSDRecConfig(preset="reference")).stale_mask is True
    assert SSDRec(SSDRecConfig()).stale_mask is False
    assert SSDRec(SSDRecConfig(preset="reference", stale_mask=False)).stale_mask is False


@pytest.mark.parametrize("override", [{"graph_source": "valid"}, {"position_sampler": "uniform"}, {"gnn_layers": 0}])
def test_bad_ssdrec_configuration_is_rejected(override):
    with pytest.raises(ConfigError, match=next(iter(override))):
        SSDRec(SSDRecConfig(**override))


# ---------------------------------------------------------------------- planted noise
def test_ssdrec_masks_beat_the_random_remover_on_planted_noise():
    from tests.test_hsd import train_on_planted_noise

    d = train_on_planted_noise(lambda res: SSDRec(SSDRecConfig(less_freq=2, cold_item_ratio=0.5, cold_user_ratio=0.5), res))
    assert 0.02 < d["flag_rate"] < 0.9
    assert d["f1"] > d["random_expected_f1"] + 0.05 and d["precision"] > d["noise_rate"]
