"""HSD (specs/hsd.md): slot operations, schedules, loss filter, hooks, export and transfer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.config import ConfigError
from benchmark.resources import Resources
from denoisers.base import StepContext
from denoisers.hsd import HSD, HSDConfig
from denoisers.hsd_scorer import HSDScorer, HSDScores, curriculum_drop, curriculum_keep, gumbel_temperature
from denoisers.seq_ops import compact_right, hard_gumbel, insert_two, left_to_right, zero_largest
from models.base import ModelShape
from models.sasrec import SASRec, SASRecConfig
from tests.helpers import loo_split


# ---------------------------------------------------------------------- slot operations
def test_left_to_right_moves_real_items_to_the_front_in_order():
    left = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 9]])
    right = left_to_right(left, (left > 0).sum(1))
    assert right.tolist() == [[3, 4, 5, 0, 0], [1, 2, 3, 4, 5], [9, 0, 0, 0, 0]]


def test_compaction_puts_kept_items_at_the_right_end_preserving_order():
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [1, 2, 3, 0, 0, 0]])
    keep = torch.tensor([[True, False, True, True, False, False], [False, False, False, False, False, False]])
    emb = ids.unsqueeze(-1).float().expand(2, 6, 3)
    out_ids, out_emb = compact_right(keep, ids * keep, emb * keep.unsqueeze(-1))
    assert out_ids.tolist() == [[0, 0, 0, 5, 7, 8], [0, 0, 0, 0, 0, 0]]
    assert torch.equal(out_emb[..., 0], out_ids.float())


def test_compaction_passes_gradients_to_kept_slots_only():
    x = torch.randn(1, 4, 2, requires_grad=True)
    keep = torch.tensor([[True, False, True, False]])
    (out,) = compact_right(keep, x * keep.unsqueeze(-1))
    out[:, -2:].sum().backward()
    assert x.grad[0, :, 0].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_zero_largest_selects_the_k_largest_valid_entries_per_row():
    v = torch.tensor([[0.1, 0.9, 0.5, 0.7], [3.0, 2.0, 1.0, 9.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    out = zero_largest(v, valid, torch.tensor([2, 1]))
    assert out.tolist() == [[False, True, False, True], [True, False, False, False]]


def test_hard_gumbel_is_one_hot_and_reproducible_with_a_generator():
    logits = torch.randn(5, 7)
    a = hard_gumbel(logits, 0.5, torch.Generator().manual_seed(3))
    b = hard_gumbel(logits, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(a.sum(-1), torch.ones(5)) and set(a.unique().tolist()) <= {0.0, 1.0}


def test_hard_gumbel_samples_follow_softmax_of_the_logits():
    logits = torch.tensor([0.2, 0.9]).expand(20000, 2)
    share = hard_gumbel(logits, 0.01, torch.Generator().manual_seed(0))[:, 1].mean().item()
    assert abs(share - torch.softmax(torch.tensor([0.2, 0.9]), 0)[1].item()) < 0.02


def test_insert_two_equals_the_reference_list_construction():
    rng = np.random.default_rng(0)
    L, B = 9, 40
    n = rng.integers(1, L - 1, B)
    ids = np.zeros((B, L), dtype=np.int64)
    for r in range(B):  # fixture construction, not the code under test
        ids[r, : n[r]] = rng.integers(1, 50, n[r])
    p = np.array([rng.integers(0, n[r]) for r in range(B)])
    a, b = rng.integers(1, 50, B), rng.integers(1, 50, B)
    out = insert_two(torch.as_tensor(ids), torch.as_tensor(p), torch.as_tensor(a), torch.as_tensor(b))
    for r in range(B):
        seq, q = ids[r].tolist(), int(p[r])
        expected = (seq[:q] + [int(a[r]), seq[q], int(b[r])] + seq[q + 1:])[:L]
        assert out[r].tolist() == expected


# ---------------------------------------------------------------------- schedules
def test_curriculum_drop_decays_linearly_to_zero_over_ten_epochs():
    values = [curriculum_drop(e, 0.2, 10) for e in range(12)]
    assert values[0] == pytest.approx(0.2) and values[9] == 0.0 and values[11] == 0.0
    assert values[1] == pytest.approx(0.2 - 0.2 / 9)


def test_gumbel_temperature_matches_the_trainers_iterative_annealing():
    tau, expected = 0.5, {}
    for step in range(1, 2001):  # the reference trainer's loop, for comparison
        if step % 40 == 0:
            tau = max(1e-3, tau * math.exp(-1e-3 * step))
        expected[step] = tau
    for step in (39, 40, 400, 800, 2000):
        assert gumbel_temperature(step, 0.5, 40, 1e-3, 1e-3, True) == pytest.approx(expected[step], rel=1e-9)
    assert gumbel_temperature(5000, 0.5, 40, 1e-3, 1e-3, False) == 0.5


def test_curriculum_keeps_the_lowest_reconstruction_losses():
    keep = curriculum_keep(torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0]), 0.2)
    assert keep.tolist() == [False, True, True, True, True]


def _confident_scores(decision_logits: str):
    """Scores of a scorer whose two-way heads say "noisy" by a wide margin on every slot."""
    torch.manual_seed(0)
    scorer = HSDScorer(4, 6, n_users=3, ae_dropout=0.0, att_dropout=0.0, decision_logits=decision_logits).eval()
    with torch.no_grad():
        for head in (scorer.seq_mlp, scorer.fc_e):
            head.weight.zero_()
        scorer.fc_v.bias.fill_(1.0)  # tanh(...) > 0 on every slot
        scorer.fc_e.weight[1].fill_(5.0)  # item-level noisy logit - clean logit = 5 * sum(tanh) > 0
        scorer.conv.weight.zero_()
        scorer.conv.bias.fill_(1.0)  # mixed = relu(1) = 1 everywhere
        scorer.seq_mlp.weight[1].fill_(5.0)  # sequence-level margin 5 * H = 20
        x, mask = torch.randn(2, 6, 4), torch.ones(2, 6)
        return scorer(x, x, mask, mask.sum(1), torch.randn(2, 1, 4), reconstruct=False)


def test_reference_sigmoid_logits_keep_sampled_decisions_near_a_fair_coin_and_raw_logits_do_not():
    gen = torch.Generator().manual_seed(0)
    rates = {}
    for kind in ("sigmoid", "raw"):
        scores = _confident_scores(kind)
        votes = torch.stack([HSDScorer.noisy_votes(scores, "sample", 0.5, gen) for _ in range(400)])
        rates[kind] = votes.mean().item()
        assert HSDScorer.noisy_votes(scores, "argmax", 0.5).eq(1).all()  # argmax: every slot noisy either way
    # sigmoid scores in (0, 1) as logits: each vote is noisy with probability <= σ(1) = 0.731,
    # both votes <= 0.534; raw margins of 20 make both votes noisy almost surely
    assert rates["sigmoid"] < 0.6
    assert rates["raw"] > 0.99


def test_most_likely_drops_a_slot_iff_the_sampled_decision_drops_it_more_often_than_not():
    # item-level noisy probabilities 0.6 / 0.9 / 0.9 / 0.3, sequence-level 0.6 / 0.9 / 0.5 / 0.9:
    # P(both sampled votes noisy) = 0.36 / 0.81 / 0.45 / 0.27
    p_item, p_seq = torch.tensor([[0.6, 0.9, 0.9, 0.3]]), torch.tensor([[0.6, 0.9, 0.5, 0.9]])
    logits = lambda p: torch.stack([torch.log1p(-p), torch.log(p)], -1)  # noqa: E731  softmax(.)[1] = p
    scores = HSDScores(seq=logits(p_seq), item=logits(p_item), rec=None)
    assert torch.allclose(scores.noise_probability(), p_item * p_seq)
    assert HSDScorer.noisy_votes(scores, "most_likely", 0.5).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert HSDScorer.noisy_votes(scores, "argmax", 0.5).tolist() == [[1.0, 1.0, 0.0, 0.0]]  # 0.6 x 0.6 dropped
    gen = torch.Generator().manual_seed(0)
    sampled = torch.stack([HSDScorer.noisy_votes(scores, "sample", 0.5, gen) for _ in range(4000)]).mean(0)
    assert torch.allclose(sampled, p_item * p_seq, atol=0.03)
    with pytest.raises(ValueError, match="most_likely"):
        HSDScorer.noisy_votes(scores, "mode", 0.5)


# ---------------------------------------------------------------------- loss filter
def _filter_inputs():
    torch.manual_seed(0)
    scorer = HSDScorer(4, 6, n_users=3, ae_dropout=0.0, att_dropout=0.0)
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.float)
    return scorer, x * mask.unsqueeze(-1), mask, mask.sum(1), torch.tensor([1, 2]), torch.randn(2, 4)


def test_loss_filter_reference_mode_zeroes_rows_whose_k_is_zero():
    scorer, x, mask, lengths, users, neg = _filter_inputs()
    with torch.no_grad():
        u = scorer.user_embedding(users)
        per = -torch.log(1e-10 + torch.sigmoid((x * u[:, None]).sum(-1) - (neg * u).sum(-1, keepdim=True))) * mask
    # rate 0.2: row 0 (6 items) drops its largest term; row 1 (3 items) has k = 0
    top = per[0].max()
    ref = scorer.loss_filter(x, mask, lengths, users, neg, 0.2, zero_row_when_k0=True)
    assert ref.item() == pytest.approx(((per[0].sum() - top) / 2).item(), rel=1e-5)
    none = scorer.loss_filter(x, mask, lengths, users, neg, 0.2, zero_row_when_k0=False)
    assert none.item() == pytest.approx(((per[0].sum() - top + per[1].sum()) / 2).item(), rel=1e-5)
    off = scorer.loss_filter(x, mask, lengths, users, neg, 0.0, zero_row_when_k0=True)
    assert off.item() == pytest.approx((per.sum() / 2).item(), rel=1e-5)


# ---------------------------------------------------------------------- hooks on a tiny model
def _model(cfg: HSDConfig | None = None, L: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    split = loo_split([[1, 2, 3, 4, 5, 6, 7], [3, 4, 5, 6, 7, 8, 9], [9, 8, 7, 6, 5]], n_items=10)
    den = HSD(cfg or HSDConfig(), Resources(split, seed=0))
    model = SASRec(SASRecConfig(embedding_size=8, inner_size=16), ModelShape(10, 3, L), denoiser=den)
    den.attach(model)
    return split, den, model


def _prefix_batch(L=8):
    items = torch.tensor([[0, 0, 0, 1, 2, 3, 4, 5], [0, 0, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 9, 8]])
    targets = torch.zeros_like(items)
    targets[:, -1] = torch.tensor([6, 9, 7])
    return {"items": items, "targets": targets, "users": torch.tensor([1, 2, 3]),
            "positions": torch.full_like(items, -1)}


def test_training_step_runs_and_adds_reconstruction_and_filter_terms():
    _, den, model = _model()
    batch = _prefix_batch()
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert den.scorer.rnn.weight_ih_l0.grad is not None and den.scorer.fc_e.weight.grad is not None
    assert int(den.train_steps) == 1


def test_backbone_sees_compacted_inputs_and_matching_padding_mask():
    _, den, model = _model()
    batch = _prefix_batch()
    ctx = StepContext(model, batch, "train", 0)
    ctx.extras.update(input_items=batch["items"], targets=batch["targets"])
    model(batch["items"], ctx)
    out = ctx.extras["denoised_items"]
    assert torch.equal(ctx.pad_mask, out == 0)
    for r in range(3):
        row = out[r].tolist()
        kept = [i for i in row if i > 0]
        assert row == [0] * (8 - len(kept)) + kept  # left padding, no holes
        original = [i for i in batch["items"][r].tolist() if i > 0]
        it = iter(original)
        assert all(any(k == o for o in it) for k in kept)  # a subsequence in original order
    assert torch.all(ctx.embedded[ctx.pad_mask] == 0)


def test_all_positions_targets_raise_a_clear_error():
    _, den, model = _model()
    batch = _prefix_batch()
    batch["targets"] = torch.where(batch["items"] > 0, batch["items"], 0)
    with pytest.raises(ValueError, match="train_instances=prefix"):
        model.training_step(batch, 0)


@pytest.mark.parametrize("decision", ["argmax", "most_likely", "sample"])
def test_exported_decisions_are_deterministic(decision):
    split, den, model = _model(HSDConfig(eval_decision=decision))
    a = den.export(model, split.train)
    b = den.export(model, split.train)
    assert np.array_equal(a.keep, b.keep) and np.allclose(a.score, b.score)
    assert a.keep.shape == split.train.items.shape


@pytest.mark.parametrize("decision", ["argmax", "most_likely"])
def test_the_report_records_what_each_decision_rule_drops_at_export(decision):
    split, den, model = _model(HSDConfig(eval_decision=decision))
    with torch.no_grad():  # push both scorers towards "noisy" so that the rules disagree
        den.scorer.seq_mlp.weight[1].add_(0.5)
        den.scorer.fc_e.weight[1].add_(0.5)
    out = den.export(model, split.train)
    rates = den.report()["export_decision_rates"]
    dropped = 1.0 - out.keep.mean()
    assert rates[f"{decision}_drops"] == pytest.approx(dropped, abs=1e-5)  # the rule the run used
    assert rates["most_likely_drops"] <= rates["argmax_drops"] <= min(rates["item_noisy"], rates["seq_noisy"])
    assert 0.0 < rates["sample_drops_expected"] < 1.0
    assert rates["most_likely_drops"] < rates["argmax_drops"]  # the fixture makes the rules disagree
    den.export(model, split.train)
    assert den.report()["export_decision_rates"] is rates  # the first export (training histories) is kept


def test_argmax_evaluation_is_deterministic_and_sampling_follows_the_rng():
    _, den, model = _model()
    model.eval()
    batch = {k: v for k, v in _prefix_batch().items() if k != "targets"}
    batch["targets"] = torch.tensor([6, 9, 7])
    s1, s2 = model._eval_scores(batch, "test"), model._eval_scores(batch, "test")
    assert torch.equal(s1, s2)
    den.eval_decision = "sample"
    torch.manual_seed(1)
    r1 = model._eval_scores(batch, "test")
    torch.manual_seed(1)
    assert torch.equal(r1, model._eval_scores(batch, "test"))


def test_export_maps_every_window_of_long_rows():
    rows = [list(range(1, 21)), [3, 4, 5, 6]]
    split = loo_split(rows, n_items=25)
    torch.manual_seed(0)
    den = HSD(HSDConfig(), Resources(split))
    model = SASRec(SASRecConfig(embedding_size=8, inner_size=16), ModelShape(25, 2, 6), denoiser=den)
    den.attach(model)
    out = den.export(model, split.train)
    assert len(out.keep) == len(split.train.items) == 18 + 2
    assert np.all((out.score > 0) & (out.score < 1))  # every position was scored


# ---------------------------------------------------------------------- configuration
def test_reference_preset_switches_to_sampled_decisions_and_row_zeroing():
    den = HSD(HSDConfig(preset="reference"))
    assert (den.eval_decision, den.filter_zero_k) == ("sample", "reference")
    den = HSD(HSDConfig(preset="reference", eval_decision="argmax"))
    assert den.eval_decision == "argmax"
    assert HSD(HSDConfig()).eval_decision == "argmax"


@pytest.mark.parametrize("override", [{"preset": "paper"}, {"eval_decision": "mode"}, {"ae_dropout": 1.5},
                                      {"decision_logits": "softmax"}])
def test_bad_configuration_is_rejected_with_the_key(override):
    with pytest.raises(ConfigError, match=next(iter(override))):
        HSD(HSDConfig(**override))


def test_native_backbones_and_transfer_default():
    assert HSD.supports_backbone("sasrec") and HSD.supports_backbone("gru4rec") and HSD.supports_backbone("caser")
    assert not HSD.supports_backbone("bert4rec") and HSD.default_native == "sasrec"
    assert HSD.train_instances == "prefix"


# ---------------------------------------------------------------------- planted noise
def train_on_planted_noise(make_denoiser, epochs: int = 20, seed: int = 0):
    """Train ``make_denoiser(resources)`` jointly with a small GRU4Rec on synthetic data with
    20% planted off-cluster items (150 users, 60 items, 4 clusters, L = 20), Adam lr 1e-2,
    batch 128 prefix instances; return the detection report of its exported masks.

    (The signal needs ~15-20 epochs to emerge at this size: HSD/SSDRec learn which items to
    drop only through the straight-through gradient of the next-item loss.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread avoids OpenMP oversubscription on a shared machine
    try:
        return _train_planted(make_denoiser, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train_planted(make_denoiser, epochs: int, seed: int):
    from benchmark.config import DatasetConfig, SyntheticConfig
    from benchmark.data.build import build_split_data
    from benchmark.data.instances import build_train_tensors
    from benchmark.detection import detection_from_denoised
    from models.gru4rec import GRU4Rec, GRU4RecConfig

    L = 20
    split = build_split_data(DatasetConfig(name="synthetic", max_len=L, synthetic=SyntheticConfig(
        n_users=150, n_items=60, n_clusters=4, min_len=10, max_len=L, noise_rate=0.2, transition="cluster", seed=0)))
    torch.manual_seed(seed)
    den = make_denoiser(Resources(split, seed=seed))
    model = GRU4Rec(GRU4RecConfig(embedding_size=16, hidden_size=16), ModelShape(split.n_items, split.n_users, L), denoiser=den)
    den.attach(model)
    data = {k: torch.as_tensor(v) for k, v in build_train_tensors(split.train, L, "prefix").items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    n = len(data["items"])
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n)
        for start in range(0, n, 128):
            batch = {k: v[order[start:start + 128]] for k, v in data.items()}
            loss = model.training_step(batch, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        den.on_train_epoch_end(model, epoch)
    return detection_from_denoised(split, den.export(model, split.train))


def test_hsd_masks_beat_the_random_remover_on_planted_noise():
    d = train_on_planted_noise(lambda res: HSD(HSDConfig(), res))
    assert 0.02 < d["flag_rate"] < 0.9
    assert d["f1"] > d["random_expected_f1"] + 0.05 and d["precision"] > d["noise_rate"]


# ---------------------------------------------------------------------- export -> reload -> train
def test_exported_masks_reload_and_train_another_backbone(tmp_path):
    from benchmark.config import compose
    from benchmark.export import load_denoised_split
    from benchmark.run import execute

    small = ["dataset.synthetic.n_users=60", "dataset.synthetic.max_len=14", "dataset.max_len=14", "train.max_epochs=1"]
    first = execute(compose(backbone="sasrec", denoiser="hsd", dataset="synthetic", profile="smoke", overrides=small), runs_dir=tmp_path)
    assert first.mode == "joint" and first.protocol["train_instances"] == "prefix"
    assert first.detection is not None and 0 <= first.detection["flag_rate"] <= 1
    out_dir = tmp_path / first.run_id / "denoised"
    assert (out_dir / "decisions.npz").exists() and (out_dir / "synthetic.inter").exists()
    second = execute(compose(backbone="gru4rec", denoiser="none", dataset="synthetic", profile="smoke",
                             overrides=small + [f"data_source=denoised:{first.run_id}"]), runs_dir=tmp_path)
    assert second.protocol["data_source"].endswith("denoised") and second.test
    from benchmark.data.build import build_split_data
    from benchmark.export import load_decisions
    from omegaconf import OmegaConf

    split = build_split_data(OmegaConf.to_object(compose(dataset="synthetic", overrides=small).dataset))
    reloaded = load_denoised_split(out_dir, split)
    kept = load_decisions(out_dir).keep
    assert len(reloaded.train.items) == int(kept.sum())
    assert np.array_equal(reloaded.train.items, split.train.items[kept])


def test_bert4rec_runs_by_transfer_from_the_native_backbone(tmp_path):
    from benchmark.config import compose
    from benchmark.run import execute

    small = ["dataset.synthetic.n_users=40", "dataset.synthetic.max_len=12", "dataset.max_len=12", "train.max_epochs=1"]
    result = execute(compose(backbone="bert4rec", denoiser="hsd", dataset="synthetic", profile="smoke", overrides=small), runs_dir=tmp_path)
    assert result.mode == "transfer from sasrec" and result.protocol["train_instances"] == "windows"
    assert "hsd (sasrec)" in result.protocol["denoised_by"]
    # HSD scores its own evaluation users on denoised histories: so does the transferred model
    assert result.protocol["denoised_eval_histories"] == "valid,test"
    for stage in ("valid", "test"):
        assert (tmp_path / result.run_id / "denoised" / stage / "decisions.npz").exists()


def test_prefix_epoch_share_trains_hsd_on_that_share_of_the_batches(tmp_path):
    from benchmark.config import compose
    from benchmark.run import execute

    small = ["dataset.synthetic.n_users=60", "dataset.synthetic.max_len=14", "dataset.max_len=14", "train.max_epochs=1",
             "train.batch_size=64"]
    full = execute(compose(backbone="sasrec", denoiser="hsd", dataset="synthetic", profile="smoke", overrides=small),
                   runs_dir=tmp_path)
    part = execute(compose(backbone="sasrec", denoiser="hsd", dataset="synthetic", profile="smoke",
                           overrides=small + ["train.prefix_epoch_share=0.25"]), runs_dir=tmp_path)
    batches = full.denoiser_report["train_steps"]
    assert batches > 4
    assert part.denoiser_report["train_steps"] == math.ceil(0.25 * batches)


def test_prefix_epoch_share_leaves_other_instance_kinds_whole_and_a_second_limit_is_refused_at_compose():
    from benchmark.config import compose
    from benchmark.data.datamodule import SeqDataModule
    from benchmark.run import train_batch_limit

    split = loo_split([[1 + (u + t) % 9 for t in range(8)] for u in range(40)], 9)
    cfg = compose(backbone="sasrec", dataset="synthetic", overrides=["train.prefix_epoch_share=0.5", "train.batch_size=16"])
    prefix = SeqDataModule(split, max_len=6, train_instances="prefix", batch_size=16)
    windows = SeqDataModule(split, max_len=6, train_instances="windows", batch_size=16)
    n_batches = math.ceil(len(prefix.train_arrays["items"]) / 16)
    assert train_batch_limit(cfg, prefix) == math.ceil(0.5 * n_batches)
    assert train_batch_limit(cfg, windows) == 1.0
    with pytest.raises(ConfigError, match="set one of them"):
        compose(backbone="sasrec", dataset="synthetic",
                overrides=["train.prefix_epoch_share=0.5", "train.limit_train_batches=0.5"])
