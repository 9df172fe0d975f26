"""STEAM: corruption, correction, decoding, export and the joint / transfer runs."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.config import ConfigError, DatasetConfig, SyntheticConfig, compose
from benchmark.data.build import build_split_data
from benchmark.data.instances import build_train_tensors
from benchmark.detection import detection_from_denoised
from benchmark.registry import BACKBONES
from denoisers._steam_ops import apply_corrections, corrupt, slice_batch
from denoisers.base import make_denoiser
from models.base import ModelShape

N_ITEMS = 40


def steam_model(n_items: int = N_ITEMS, max_len: int = 12, overrides: list[str] | None = None, backbone: str = "bert4rec"):
    cfg = compose(backbone=backbone, denoiser="steam", overrides=list(overrides or []))
    den = make_denoiser(dict(cfg.denoiser), None)
    model = BACKBONES.get(backbone).from_config(dict(cfg.backbone), ModelShape(n_items, 50, max_len), None, None, den)
    model.log_dict = lambda *a, **k: None  # no trainer attached in manual loops
    return model, den


def random_batch(B: int, L: int, n_items: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (B, L), generator=g)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    return torch.where(torch.arange(L).unsqueeze(0) >= (L - lengths).unsqueeze(1), items, torch.zeros_like(items))


def row(t: torch.Tensor) -> list[int]:
    return [int(x) for x in t if int(x) != 0]


# ---------------------------------------------------------------------------- corruption
@pytest.mark.parametrize("probs", [(0.8, 0.1, 0.1), (0.4, 0.5, 0.1)])
def test_corruption_labels_restore_the_raw_sequence(probs):
    torch.manual_seed(0)
    raw = random_batch(300, 12, N_ITEMS, seed=1)
    eos = N_ITEMS + 1
    c = corrupt(raw, N_ITEMS, *probs, max_len=16, max_run=5, eos=eos)
    assert c.items.shape == (300, 16)
    for b in range(len(raw)):  # test-only reconstruction, per row
        rebuilt = []
        for item, op, tgt in zip(c.items[b].tolist(), c.ops[b].tolist(), c.targets[b].tolist()):
            if item == 0:
                assert op == 0 and tgt == [0] * 5
                continue
            if op == 1:
                assert item not in row(raw[b])  # inserted noise is never a raw item
                continue
            if op == 2:
                run = tgt[: tgt.index(eos)] if eos in tgt else tgt
                assert 1 <= len(run) <= 5 and 0 not in run
                rebuilt.extend(reversed(run))
            rebuilt.append(item)
        assert rebuilt == row(raw[b])
        inserted = [i for i, op in zip(c.items[b].tolist(), c.ops[b].tolist()) if op == 1]
        assert len(set(inserted)) == len(inserted)
    assert c.ops.eq(1).any() and c.ops.eq(2).any()


def test_corruption_follows_the_configured_probabilities():
    torch.manual_seed(0)
    keep, delete, insert = 0.6, 0.25, 0.15
    raw = torch.randint(1, 5000, (3000, 30))
    c = corrupt(raw, 5000, keep, delete, insert, max_len=200, max_run=5, eos=5001)
    not_last = torch.zeros_like(raw, dtype=torch.bool)
    not_last[:, :-1] = True
    fresh = (c.run == 0) & not_last
    in_run = (c.run > 0) & (c.run < 5) & not_last
    assert c.deleted[fresh].float().mean().item() == pytest.approx(delete / (keep + delete), abs=0.01)
    assert c.deleted[in_run].float().mean().item() == pytest.approx(delete, abs=0.01)
    assert not c.deleted[:, -1].any()  # the last item is never deleted
    assert not c.deleted[c.run == 5].any()  # runs stop at max_run
    assert c.inserted[fresh].float().mean().item() == pytest.approx(insert / (1 - insert), abs=0.01)
    assert c.inserted[c.run > 0].sum() == 0  # no insertions inside a deletion run
    q_last = insert / (insert + keep)  # deleting the last item is redrawn
    assert c.inserted[:, -1][c.run[:, -1] == 0].float().mean().item() == pytest.approx(q_last / (1 - q_last), abs=0.02)


def reference_walk(raw: list[int], n_items: int, keep: float, delete: float, max_len: int, max_run: int, rng: random.Random):
    """The reference ``raw_data_rand_modify`` (dataLoader.py) as a plain loop: returns
    (kept, deleted, inserted, run lengths)."""
    cur, i, kept, deleted, inserted, runs = len(raw), 0, 0, 0, 0, []
    pool = set(range(1, n_items + 1)) - set(raw)
    p0, p1 = keep, keep + delete
    while i < len(raw):
        d = rng.random()
        if d <= p0:
            kept, i = kept + 1, i + 1
        elif p0 < d <= p1 and cur != 1 and i != len(raw) - 1:
            run = 0
            while True:
                run, cur, i = run + 1, cur - 1, i + 1
                d = rng.random()
                if not (p0 < d <= p1 and cur != 1 and run < max_run and i != len(raw) - 1):
                    break
            kept, i, deleted = kept + 1, i + 1, deleted + run
            runs.append(run)
        elif d > p1 and pool and cur < max_len:
            pool.remove(rng.choice(sorted(pool)))
            inserted, cur = inserted + 1, cur + 1
    return kept, deleted, inserted, runs


@pytest.mark.parametrize("probs", [(0.8, 0.1, 0.1), (0.4, 0.5, 0.1)])
def test_vectorised_corruption_matches_the_reference_walk_in_distribution(probs):
    keep, delete, insert = probs
    n_items, L, M, B = 60, 14, 16, 3000  # the length cap M binds for long rows
    raw = random_batch(B, L, n_items, seed=2)
    rng = random.Random(0)
    ref = np.array([reference_walk(row(r), n_items, keep, delete, M, 5, rng)[:3] for r in raw])
    torch.manual_seed(0)
    c = corrupt(raw, n_items, keep, delete, insert, max_len=M, max_run=5, eos=n_items + 1)
    ours = np.stack([(~c.deleted & (raw > 0)).sum(1).numpy(), c.deleted.sum(1).numpy(), c.inserted.sum(1).numpy()], 1)
    se = np.sqrt(ref.var(0) / B + ours.var(0) / B)
    assert np.all(np.abs(ref.mean(0) - ours.mean(0)) < 4 * se + 1e-9), (ref.mean(0), ours.mean(0))
    assert (c.items > 0).sum(1).max() <= M


def test_corruption_respects_a_small_item_pool():
    torch.manual_seed(0)
    raw = torch.tensor([[1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 2, 3]])
    c = corrupt(raw, 7, 0.1, 0.0, 0.9, max_len=20, max_run=5, eos=8)
    for b in range(2):
        ins = [i for i, op in zip(c.items[b].tolist(), c.ops[b].tolist()) if op == 1]
        assert set(ins) <= set(range(1, 8)) - set(row(raw[b])) and len(set(ins)) == len(ins)
    assert c.ops[0].eq(1).sum() == 1  # only item 7 is unseen in row 0


def test_slice_batch_takes_contiguous_crops_and_moves_positions():
    torch.manual_seed(0)
    items = random_batch(200, 10, N_ITEMS, seed=3)
    positions = torch.where(items > 0, torch.arange(2000).view(200, 10), torch.full_like(items, -1))
    out = slice_batch({"items": items, "positions": positions, "users": torch.arange(200)}, max_len=4)
    for b in range(200):
        crop, full = row(out["items"][b]), row(items[b])
        assert 1 <= len(crop) <= 4
        starts = [s for s in range(len(full)) if full[s : s + len(crop)] == crop]
        assert starts
        kept_pos = out["positions"][b][out["items"][b] > 0]
        assert torch.equal(items.view(-1)[kept_pos], out["items"][b][out["items"][b] > 0])
    assert torch.equal(out["users"], torch.arange(200))


# ---------------------------------------------------------------------------- correction
def list_correction(items: list[int], decisions: list[int], generated: list[list[int]], eos: int) -> list[int]:
    """The reference ``seqs_correction`` with Python list insertions."""
    seq = [0 if d == 1 else x for x, d in zip(items, decisions)]
    k = 0
    for t, (x, d) in enumerate(zip(items, decisions)):
        if d == 2 and x != 0:
            j = 0
            for g in generated[t]:
                if g == eos:
                    break
                seq.insert(t + k, g)
                j += 1
            k += j
    return [x for x in seq if x != 0]


def test_vectorised_correction_equals_the_list_implementation():
    g = torch.Generator().manual_seed(4)
    B, L, K, eos = 300, 10, 5, N_ITEMS + 1
    items = random_batch(B, L, N_ITEMS, seed=4)
    decisions = torch.randint(0, 3, (B, L), generator=g)
    generated = torch.randint(1, N_ITEMS + 2, (B, L, K), generator=g)  # includes EOS
    positions = torch.arange(B * L).view(B, L)
    for out_len in (L, 14):
        out, moved = apply_corrections(items, decisions, generated, eos, out_len, carry=positions)
        for b in range(B):
            expect = list_correction(items[b].tolist(), decisions[b].tolist(), generated[b].tolist(), eos)[-out_len:]
            got = out[b].tolist()
            assert got == [0] * (out_len - len(expect)) + expect
            src = moved[b][moved[b] >= 0]
            assert torch.equal(items.view(-1)[src], out[b][moved[b] >= 0])


def test_keep_everywhere_leaves_histories_and_scores_unchanged():
    torch.manual_seed(0)
    model, den = steam_model()
    with torch.no_grad():
        den.corrector.weight.zero_()
        den.corrector.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))
    model.eval()
    items = random_batch(16, 12, N_ITEMS, seed=5)
    corrected, _ = den.correct(model, items, 12)
    assert torch.equal(corrected, items)
    batch = {"items": items, "targets": torch.randint(1, N_ITEMS + 1, (16,)), "lengths": (items > 0).sum(1)}
    with torch.no_grad():
        den.cfg.eval_path = "corrected"
        a = model._eval_scores(dict(batch), "test")
        den.cfg.eval_path = "raw"
        b = model._eval_scores(dict(batch), "test")
    assert torch.equal(a, b)


def test_insert_decode_modes_agree_on_the_first_item_only():
    torch.manual_seed(0)
    model, den = steam_model()
    model.eval()
    with torch.no_grad():
        den.decoder.position.normal_(0, 1.0)
        z = torch.randn(64, model.hidden_size)
        fixed = den.decoder.greedy(z, model, "fixed")
        ref = den.decoder.greedy(z, model, "reference")
    assert fixed.shape == (64, 5) and fixed.min() >= 1 and fixed.max() <= N_ITEMS + 1
    assert torch.equal(fixed[:, 0], ref[:, 0])
    assert not torch.equal(fixed[:, 1:], ref[:, 1:])


def test_config_rejects_bad_values_and_applies_the_preset():
    _, den = steam_model(overrides=["denoiser.preset=reference"])
    assert den.probs == (0.4, 0.5, 0.1) and den.decode_mode == "reference"
    _, den = steam_model(overrides=["denoiser.insert_decode=fixed"])
    assert den.probs == (0.8, 0.1, 0.1) and den.decode_mode == "fixed"
    with pytest.raises(ConfigError, match="keep_prob"):
        steam_model(overrides=["denoiser.keep_prob=0.5"])
    with pytest.raises(ConfigError, match="preset"):
        steam_model(overrides=["denoiser.preset=nope"])
    with pytest.raises(ConfigError, match="causal"):
        steam_model(backbone="sasrec")


# ---------------------------------------------------------------------------- export
def synthetic_split(n_users: int = 200, n_items: int = 60, max_len: int = 20):
    return build_split_data(DatasetConfig(name="synthetic", max_len=max_len, synthetic=SyntheticConfig(
        n_users=n_users, n_items=n_items, n_clusters=4, min_len=12, max_len=20, noise_rate=0.1, transition="cluster")))


def test_export_produces_valid_corrected_sequences():
    split = synthetic_split(n_users=60)
    torch.manual_seed(0)
    model, den = steam_model(n_items=split.n_items, max_len=8)  # windows shorter than rows
    with torch.no_grad():
        nn.init.normal_(den.corrector.weight, 0.0, 2.0)  # an untrained corrector that uses all three ops
    decisions = den.export(model, split.train)
    assert (~decisions.keep).any() and len(decisions.insert_items) > 0
    assert decisions.insert_items.min() >= 1 and decisions.insert_items.max() <= split.n_items
    assert np.all(decisions.keep[decisions.insert_before])  # insertions precede kept items
    cleaned = decisions.apply()
    assert cleaned.items.min() >= 1 and cleaned.items.max() <= split.n_items
    assert np.array_equal(cleaned.lengths, np.bincount(split.train.row_of_position[decisions.keep], minlength=split.train.n_rows)
                          + np.bincount(split.train.row_of_position[decisions.insert_before], minlength=split.train.n_rows))
    assert np.all((decisions.score >= 0) & (decisions.score <= 1))
    report = den.report()["export"]
    assert report["delete_share"] > 0 and report["inserted_items"] == len(decisions.insert_items)


def test_delete_decisions_beat_the_random_remover_on_planted_noise():
    # 4 clusters of 6 items; the planted noise is off-cluster. A higher insertion rate than the
    # paper preset gives the corrector enough "delete" examples to learn within a few seconds.
    split = synthetic_split(n_items=24)
    torch.manual_seed(0)
    model, den = steam_model(n_items=split.n_items, max_len=20, overrides=[
        "backbone.embedding_size=32", "backbone.n_layers=1",
        "denoiser.keep_prob=0.6", "denoiser.delete_prob=0.1", "denoiser.insert_prob=0.3"])
    arrays = build_train_tensors(split.train, 20, "windows")
    X, P = torch.from_numpy(arrays["items"]), torch.from_numpy(arrays["positions"])
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    model.train()
    for _ in range(160):
        idx = torch.randint(0, len(X), (64,))
        loss = model.training_step({"items": X[idx], "targets": torch.zeros_like(X[idx]), "positions": P[idx], "users": idx}, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    report = detection_from_denoised(split, den.export(model, split.train))
    assert report["flag_rate"] > 0.02
    assert report["f1"] > 2 * report["random_expected_f1"]
    assert report["roc_auc"] > 0.7


def test_joint_run_exports_data_that_reloads_and_trains(tmp_path: Path):
    from benchmark.export import load_denoised_split
    from benchmark.run import execute

    common = ["dataset.synthetic.n_users=60", "dataset.synthetic.n_items=40", "dataset.max_len=12", "train.batch_size=64"]
    cfg = compose(backbone="bert4rec", denoiser="steam", dataset="synthetic", profile="smoke", overrides=common)
    first = execute(cfg, runs_dir=tmp_path)
    assert first.mode == "joint" and first.detection is not None
    assert first.denoiser_report["preset"] == "paper"
    split = build_split_data(compose(dataset="synthetic", overrides=common).dataset)
    reloaded = load_denoised_split(tmp_path / first.run_id / "denoised", split)
    for stage in ("valid", "test"):  # evaluation data untouched
        assert np.array_equal(getattr(reloaded, stage).targets, getattr(split, stage).targets)
        assert np.array_equal(getattr(reloaded, stage).history.items, getattr(split, stage).history.items)
    assert reloaded.train.items.min() >= 1 and reloaded.train.items.max() <= split.n_items
    second = execute(compose(backbone="sasrec", dataset="synthetic", profile="smoke",
                             overrides=common + [f"data_source=denoised:{first.run_id}"]), runs_dir=tmp_path)
    assert second.status == "ok" and "hr@10" in second.test


def test_non_native_backbone_runs_the_transfer_protocol_with_steams_evaluation_path(tmp_path: Path):
    from benchmark.export import load_denoised_split
    from benchmark.run import execute

    common = ["dataset.synthetic.n_users=60", "dataset.synthetic.n_items=40", "dataset.max_len=12", "train.batch_size=64"]
    result = execute(compose(backbone="sasrec", denoiser="steam", dataset="synthetic", profile="smoke", overrides=common),
                     runs_dir=tmp_path)
    assert result.mode == "transfer from bert4rec"
    out = tmp_path / result.run_id / "denoised"
    assert (out / "decisions.npz").exists()
    assert "hr@10" in result.test
    # eval_path corrected (default): SASRec is evaluated on STEAM-corrected histories, targets untouched
    assert result.protocol["denoised_eval_histories"] == "valid,test"
    split = build_split_data(compose(dataset="synthetic", overrides=common).dataset)
    reloaded = load_denoised_split(out, split)
    for stage in ("valid", "test"):
        history = getattr(reloaded, stage).history
        assert np.array_equal(getattr(reloaded, stage).targets, getattr(split, stage).targets)
        assert history.items.min() >= 1 and history.items.max() <= split.n_items
    raw = execute(compose(backbone="sasrec", denoiser="steam", dataset="synthetic", profile="smoke",
                          overrides=common + ["denoiser.eval_path=raw"]), runs_dir=tmp_path)
    assert "denoised_eval_histories" not in raw.protocol
    assert not (tmp_path / raw.run_id / "denoised" / "test").exists()
