"""IADSR: loss terms against direct references, interest precomputation, masks, export, runs."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.config import ConfigError, compose, to_dict
from benchmark.data.instances import build_train_tensors
from benchmark.registry import BACKBONES, TEXT_ENCODERS
from benchmark.resources import Resources
from denoisers.base import StepContext, make_denoiser
from denoisers.iadsr import MODE_THRESHOLD, IADSR, IADSRReference
from denoisers.iadsr_interests import range_texts, truncate_ranges
from denoisers.iadsr_losses import blocked_info_nce, gumbel_sigmoid, info_nce, interest_terms
from models.base import ModelShape
from tests.helpers import loo_split


class BagOfWords:
    """Deterministic test encoder: the mean of hash-seeded random vectors of a text's words.

    Titles of one synthetic cluster share words, so it 'sees' the clusters. Counts every text
    it is asked to encode in ``BagOfWords.calls``."""

    calls = 0

    def __init__(self, dim: int = 32) -> None:
        self.encoder_id = f"test-bag-of-words-{dim}"
        self.dim = dim

    def _word(self, word: str) -> np.ndarray:
        seed = int(hashlib.sha1(word.lower().encode()).hexdigest()[:8], 16)
        return np.random.default_rng(seed).standard_normal(self.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        type(self).calls += len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):  # test encoder: a few hundred short texts
            words = text.replace(",", " ").split()
            if words:
                out[i] = np.mean([self._word(w) for w in words], axis=0)
        return out


@pytest.fixture
def bow(monkeypatch, tmp_path):
    """Register ``BagOfWords`` as text encoder 'test-bow' with a private text cache."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    TEXT_ENCODERS.discover()
    monkeypatch.setitem(TEXT_ENCODERS._items, "test-bow", BagOfWords)
    BagOfWords.calls = 0
    return BagOfWords


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _split(n_users: int = 12, n_items: int = 20, seed: int = 0, max_len: int = 14):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, n_items + 1, int(rng.integers(5, max_len + 1))).tolist() for _ in range(n_users)]
    return loo_split(rows, n_items)


def _iadsr(split, name="iadsr", **cfg) -> IADSR:
    section = {"name": name, "text_encoder": "test-bow", "interest_encoder": "text", **cfg}
    return make_denoiser(section, Resources(split, seed=0))


def _model(backbone: str, split, denoiser, max_len: int = 6):
    section = {"name": backbone}
    if backbone == "caser":
        section["window"] = 3
    return BACKBONES.get(backbone).from_config(section, ModelShape(split.n_items, split.n_users, max_len), denoiser=denoiser)


# ---------------------------------------------------------------------- loss terms
def test_info_nce_equals_direct_formula():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    tau = 0.1
    qn, kn = q.numpy() / np.linalg.norm(q.numpy(), axis=1, keepdims=True), k.numpy() / np.linalg.norm(k.numpy(), axis=1, keepdims=True)
    direct = np.mean([-math.log(math.exp(qn[i] @ kn[i] / tau) / sum(math.exp(qn[i] @ kn[j] / tau) for j in range(7)))
                      for i in range(7)])
    assert float(info_nce(q, k, tau)) == pytest.approx(direct, rel=1e-10)
    exclude = torch.zeros(7, 7, dtype=torch.bool)
    exclude[0, 3] = exclude[0, 0] = True  # the diagonal is never excluded
    direct0 = -math.log(math.exp(qn[0] @ kn[0] / tau) / sum(math.exp(qn[0] @ kn[j] / tau) for j in range(7) if j != 3))
    rest = [-math.log(math.exp(qn[i] @ kn[i] / tau) / sum(math.exp(qn[i] @ kn[j] / tau) for j in range(7))) for i in range(1, 7)]
    assert float(info_nce(q, k, tau, exclude)) == pytest.approx((direct0 + sum(rest)) / 7, rel=1e-10)


def test_blocked_info_nce_averages_per_block_losses():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.randn(10, 4, generator=g, dtype=torch.float64)
    blocks = [(0, 4), (4, 8), (8, 10)]
    direct = sum(float(info_nce(q[a:b], k[a:b], 0.2)) * (b - a) for a, b in blocks) / 10
    assert float(blocked_info_nce(q, k, 0.2, 4)) == pytest.approx(direct, rel=1e-10)
    assert float(blocked_info_nce(q, k, 0.2, 10)) == pytest.approx(float(info_nce(q, k, 0.2)), rel=1e-12)
    assert float(blocked_info_nce(q, k, 0.2, 0)) == pytest.approx(float(info_nce(q, k, 0.2)), rel=1e-12)
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    k1, k2 = k.clone().requires_grad_(), k.clone().requires_grad_()
    blocked_info_nce(q1, k1, 0.2, 4).backward()
    (sum(info_nce(q2[a:b], k2[a:b], 0.2) * (b - a) for a, b in blocks) / 10).backward()
    assert torch.allclose(q1.grad, q2.grad)
    assert torch.allclose(k1.grad, k2.grad)


def test_blocked_info_nce_refuses_a_second_backward_through_its_stored_softmax():
    q = torch.randn(10, 4, requires_grad=True)
    loss = blocked_info_nce(q, torch.randn(10, 4), 0.2, 4)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError):
        loss.backward()


def test_straight_through_mask_is_binary_and_passes_gradients():
    score = torch.tensor([-2.0, -0.3, 0.0, 0.4, 2.5], requires_grad=True)
    uniform = torch.tensor([0.1, 0.5, 0.5, 0.3, 0.9])
    mask, y = gumbel_sigmoid(score, uniform, tau=0.5)
    assert set(mask.detach().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask.detach(), (y > 0.5).float())
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (mask * weights).sum().backward()
    expected = weights * y.detach() * (1 - y.detach()) / 0.5  # d sigmoid((s+g)/tau) / ds
    assert torch.allclose(score.grad, expected)
    assert (score.grad.abs() > 0).all()


def test_gumbel_keep_rate_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    for s in (-2.0, -0.3665, 0.0, 1.0):
        score = torch.full((200_000,), s)
        mask, _ = gumbel_sigmoid(score, torch.rand(200_000, generator=g), tau=1.0)
        assert float(mask.mean()) == pytest.approx(1 - math.exp(-math.exp(s)), abs=0.005)
    assert 1 - math.exp(-math.exp(MODE_THRESHOLD)) == pytest.approx(0.5)


def _loop_reference(H, valid, L_sem, e1, e2, E, decoder, U, theta, tau, gtau):
    """Per-user loop implementation of specs/iadsr.md §3 steps 4-9 (float64)."""
    B, L, _ = H.shape
    cos = lambda a, b: float(a @ b / max(a.norm() * b.norm(), 1e-8))  # noqa: E731
    long_terms = []
    for i in range(B):
        num = math.exp(cos(e2[i], e1[i]) / tau)
        long_terms.append(-math.log(num / sum(math.exp(cos(e2[i], e1[j]) / tau) for j in range(B))))
    pairs = [(i, p) for i in range(B) for p in range(L) if valid[i, p]]
    short_terms = []
    for i, p in pairs:
        den = sum(math.exp(cos(H[i, p], L_sem[j, q]) / tau) for j, q in pairs)
        short_terms.append(-math.log(math.exp(cos(H[i, p], L_sem[i, p]) / tau) / den))
    scores, masks, rec = {}, {}, []
    for i in range(B):
        q = cos(e2[i], e1[i]) >= theta
        errs = []
        for p in range(L):
            if not valid[i, p]:
                continue
            s = cos(e1[i], H[i, p]) + cos(e2[i], L_sem[i, p]) + cos(H[i, p], L_sem[i, p])
            u = float(U[i, p])
            y = 1 / (1 + math.exp(-(s - math.log(-math.log(u + 1e-10) + 1e-10)) / gtau))
            m = 1.0 if y > 0.5 else 0.0
            scores[i, p], masks[i, p] = s, m
            with torch.no_grad():
                r = decoder(H[i, p] * m)
            errs.append(float(((r - E[i, p]) ** 2).mean()))
        if q and errs:
            rec.append(sum(errs) / len(errs))
    return np.mean(long_terms), np.mean(short_terms), (np.mean(rec) if rec else 0.0), scores, masks


def test_vectorised_terms_equal_per_user_loop():
    torch.manual_seed(0)
    B, L, h, d = 5, 7, 6, 4
    lengths = torch.tensor([7, 3, 1, 5, 7])  # left padded, two full windows
    valid = torch.arange(L).unsqueeze(0) >= (L - lengths).unsqueeze(1)
    H = torch.randn(B, L, h, dtype=torch.float64)
    L_sem = torch.randn(B, L, h, dtype=torch.float64)
    e1, e2 = torch.randn(B, h, dtype=torch.float64), torch.randn(B, h, dtype=torch.float64)
    E = torch.randn(B, L, d, dtype=torch.float64)
    U = torch.rand(B, L, dtype=torch.float64)
    decoder = torch.nn.Linear(h, d).double()
    theta = -0.2
    row = valid.nonzero(as_tuple=True)[0]
    out = interest_terms(H[valid], L_sem[valid], row, e1, e2, E[valid], decoder, U[valid], theta=theta,
                         infonce_tau=0.1, gumbel_tau=0.7)
    ref_long, ref_short, ref_rec, scores, masks = _loop_reference(H, valid, L_sem, e1, e2, E, decoder, U, theta, 0.1, 0.7)
    assert float(out.loss_long) == pytest.approx(ref_long, abs=1e-6)
    assert float(out.loss_short) == pytest.approx(ref_short, abs=1e-6)
    assert float(out.loss_rec) == pytest.approx(ref_rec, abs=1e-6)
    slots = valid.nonzero().tolist()
    assert np.allclose(out.score.detach().numpy(), [scores[i, p] for i, p in slots], atol=1e-6)
    assert out.hard.tolist() == [masks[i, p] for i, p in slots]
    assert out.qualified.tolist() == [F.cosine_similarity(e2[i], e1[i], dim=0) >= theta for i in range(B)]
    assert 0 < out.qualified.sum() < B  # both branches exercised


# ---------------------------------------------------------------------- semantic interests
def test_truncation_keeps_whole_titles_from_the_chosen_end():
    titles = ["", "aaaa", "bb", "cccccc", "", "dd"]
    items = np.array([1, 2, 3, 4, 5])
    widths = np.array([0 if not titles[i] else len(titles[i]) + 2 for i in items])
    start, end = np.array([0]), np.array([5])
    a, b = truncate_ranges(start, end, widths, 12, "tail")
    assert range_texts(items, a, b, titles) == ["cccccc, dd"]  # 10 chars; adding "bb, " exceeds 12
    a, b = truncate_ranges(start, end, widths, 8, "head")
    assert range_texts(items, a, b, titles) == ["aaaa, bb"]
    a, b = truncate_ranges(start, end, widths, 3, "tail")  # nothing fits: the last title is kept
    assert range_texts(items, a, b, titles) == ["dd"]
    assert range_texts(items, *truncate_ranges(start, end, widths, 0, "tail"), titles) == ["aaaa, bb, cccccc, dd"]


def test_prefix_interests_align_with_batch_positions_of_long_rows(bow):
    split = _split(n_users=6, max_len=14)
    den = _iadsr(split, max_chars=0, semantic_dtype="float32")
    sem = den.semantic_interests()
    train = split.train
    arrays = build_train_tensors(train, 4, "all_positions")  # rows longer than the window
    pos = arrays["positions"][arrays["positions"] >= 0]
    enc = BagOfWords()
    row_start = np.repeat(train.offsets[:-1], train.lengths)
    texts = [", ".join(split.item_text[i] for i in train.items[row_start[f]: f + 1]) for f in pos]
    assert np.allclose(sem.short[pos], enc.encode(texts), atol=1e-6)
    history = [", ".join(split.item_text[i] for i in train.row(r)[:-1]) for r in range(train.n_rows)]
    assert np.allclose(sem.long, enc.encode(history), atol=1e-6)


def test_mean_interests_are_means_of_item_vectors_over_the_same_ranges(bow):
    split = _split(n_users=8)
    den = _iadsr(split, interest_encoder="mean", max_chars=20, semantic_dtype="float32", long_text="history+target")
    sem = den.semantic_interests()
    text_sem = _iadsr(split, interest_encoder="text", max_chars=20, semantic_dtype="float32",
                      long_text="history+target").semantic_interests()
    # bag of words over 2-word titles: mean of item means == mean over all words of the text
    assert np.allclose(sem.short, text_sem.short, atol=1e-5)
    assert np.allclose(sem.long, text_sem.long, atol=1e-5)


def test_cached_interests_are_reused_with_zero_encoder_calls(bow):
    split = _split(n_users=10)
    first = _iadsr(split).semantic_interests()
    calls = BagOfWords.calls
    assert calls > 0 and first.stats["encoded"] == calls
    assert first.stats["distinct_texts"] <= first.stats["texts"]
    second = _iadsr(split).semantic_interests()  # new Resources, new cached encoder object
    assert BagOfWords.calls == calls
    assert second.stats["encoded"] == 0
    assert np.array_equal(first.short, second.short) and np.array_equal(first.long, second.long)


# ---------------------------------------------------------------------- hooks and export
def _train_batch(split, L=6):
    arrays = build_train_tensors(split.train, L, "all_positions")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def test_progressive_mask_zeroes_inputs_in_the_next_epoch_only(bow):
    split = _split()
    den = _iadsr(split, theta=-1.0)
    model = _model("gru4rec", split, den)
    batch = _train_batch(split)
    ctx = StepContext(model, batch, "train", 0)
    emb = model.embed(batch["items"])
    assert torch.equal(den.transform_inputs(emb, ctx), emb)  # epoch 0: unmasked
    ctx.extras["input_items"] = batch["items"]
    model(batch["items"], ctx)
    den.auxiliary_loss(ctx)
    dropped = (den.mask_cur == 0).nonzero().flatten()
    assert len(dropped) > 0
    den.on_train_epoch_end(model, 0)
    assert torch.equal((den.mask_prev == 0).nonzero().flatten(), dropped) and (den.mask_cur == 1).all()
    out = den.transform_inputs(emb, StepContext(model, batch, "train", 1))
    is_dropped = torch.isin(batch["positions"], dropped)
    assert (out[is_dropped] == 0).all()
    assert torch.equal(out[~is_dropped], emb[~is_dropped])
    assert torch.equal(den.transform_inputs(emb, StepContext(model, batch, "valid", 1)), emb)
    den.on_train_epoch_end(model, 1)  # nothing was scored in epoch 1: all kept again
    assert torch.equal(den.transform_inputs(emb, StepContext(model, batch, "train", 2)), emb)
    off = _iadsr(split, progressive_mask=False)
    _model("gru4rec", split, off)
    assert torch.equal(off.transform_inputs(emb, StepContext(model, batch, "train", 3)), emb)


@pytest.mark.parametrize("mode", ["mode", "noisefree", "sample"])
def test_export_drops_exactly_the_low_score_positions(bow, mode):
    split = _split()
    den = _iadsr(split, export=mode, theta=-1.0)
    model = _model("sasrec", split, den)
    decisions = den.export(model, split.train)
    score = -decisions.score
    assert decisions.source is split.train and len(decisions.keep) == len(split.train.items)
    if mode == "mode":
        assert np.array_equal(decisions.keep, score > MODE_THRESHOLD)
    elif mode == "noisefree":
        assert np.array_equal(decisions.keep, score > 0)
    else:
        assert np.array_equal(decisions.keep, den.export(model, split.train).keep)  # seeded
    cleaned = decisions.apply()
    assert np.array_equal(cleaned.items, split.train.items[decisions.keep])
    assert cleaned.n_rows == split.train.n_rows  # validation/test items live outside the training rows


def test_unqualified_rows_keep_every_position(bow):
    split = _split()
    den = _iadsr(split, theta=1.01, export="noisefree")  # nobody can qualify
    decisions = den.export(_model("gru4rec", split, den), split.train)
    assert decisions.keep.all()


@pytest.mark.parametrize("backbone", ["gru4rec", "sasrec", "caser", "bert4rec"])
def test_iadsr_trains_every_backbone_through_the_contract(bow, backbone):
    split = _split()
    den = _iadsr(split)
    model = _model(backbone, split, den)
    mode = "windows" if backbone == "bert4rec" else "all_positions"
    batch = {k: torch.from_numpy(v) for k, v in build_train_tensors(split.train, 6, mode).items()}
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    for param in (den.short_proj.weight, den.long_proj.weight, den.decoder.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert model.item_embedding.weight.grad.abs().sum() > 0
    assert den.short_proj.weight.shape == (model.hidden_size, 32)
    decisions = den.export(model, split.train)
    assert decisions.keep.shape == split.train.items.shape


def test_cloze_backbone_gets_an_extra_unmasked_pass(bow):
    split = _split()
    den = _iadsr(split)
    model = _model("bert4rec", split, den)
    batch = {k: torch.from_numpy(v) for k, v in build_train_tensors(split.train, 6, "windows").items()}
    model.eval()  # no dropout: the extra pass must equal a plain forward over the history
    ctx = StepContext(model, batch, "train", 0)
    items, _ = model.training_inputs(batch)
    ctx.extras["input_items"] = items
    model(items, ctx)
    hidden, _, _ = den._states(ctx)
    assert not torch.equal(hidden, ctx.hidden)
    assert torch.allclose(hidden, model.encode(model.embed(batch["items"]), batch["items"] == 0))


# ---------------------------------------------------------------------- configuration
def test_reference_preset_switches_to_the_released_code_behaviour():
    cfg = compose(backbone="gru4rec", denoiser="iadsr-reference")
    section = to_dict(cfg.denoiser)
    assert section["name"] == "iadsr-reference"
    assert (section["theta"], section["progressive_mask"], section["long_text"], section["truncate"]) == (
        -1.0, False, "history+target", "head")
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.loss) == (1e-5, 32, "inbatch_tanh")
    den = make_denoiser(section, None)
    assert isinstance(den, IADSRReference) and den.cfg.theta == -1.0 and den.cfg.interest_encoder == "text"
    paper = to_dict(compose(backbone="gru4rec", denoiser="iadsr").denoiser)
    assert (paper["theta"], paper["progressive_mask"]) == (-0.9, True)


def test_bad_config_values_name_the_key():
    with pytest.raises(ConfigError, match="export="):
        make_denoiser({"name": "iadsr", "export": "maybe"}, None)
    with pytest.raises(ConfigError, match="thetta"):
        make_denoiser({"name": "iadsr", "thetta": 0.1}, None)


# ---------------------------------------------------------------------- detection on planted noise
def test_exported_masks_find_planted_noise_above_random(bow, tmp_path, one_thread):
    from benchmark.run import execute
    from benchmark.store import result_row

    cfg = compose(backbone="sasrec", denoiser="iadsr", dataset="synthetic", profile="smoke", overrides=[
        "dataset.synthetic.n_users=120", "dataset.synthetic.max_len=20", "dataset.synthetic.noise_rate=0.2",
        "backbone.n_layers=1", "backbone.embedding_size=32", "train.max_epochs=6", "train.patience=6",
        "train.batch_size=64", "train.lr=0.005", "denoiser.text_encoder=test-bow", "denoiser.interest_encoder=text", "denoiser.export=noisefree",
    ])
    result = execute(cfg, runs_dir=tmp_path / "runs")
    d = result.detection
    print({k: d[k] for k in ("precision", "recall", "f1", "flag_rate", "noise_rate", "random_expected_f1", "roc_auc")})
    assert result.mode == "joint" and d["labels"] == "injected"
    assert d["flag_rate"] > 0.02
    assert d["precision"] > 1.5 * d["noise_rate"]
    assert d["f1"] > 1.4 * d["random_expected_f1"]
    assert (tmp_path / "runs" / result.run_id / "denoised" / "masks.tsv").exists()
    assert result.denoiser_report["semantic"]["interest_encoder"] == "text"
    # the row names the text encoder, so it is not taken for one made before vectors were exact
    assert result.text_encoders == [result.denoiser_report["semantic"]["encoder"]]
    assert result_row(result.to_json())["text_encoders"] == json.dumps(result.text_encoders)


def test_bench_denoise_prints_the_exported_files_and_the_follow_up(bow, tmp_path, capsys, one_thread):
    from benchmark import cli

    runs = tmp_path / "runs"
    code = cli.main(["denoise", "--denoiser", "iadsr", "--backbone", "gru4rec", "--dataset", "synthetic",
                     "--profile", "smoke", "--runs-dir", str(runs), "dataset.synthetic.n_users=40",
                     "denoiser.text_encoder=test-bow"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = dict(line.split(":", 1) for line in out.splitlines() if line.startswith(("run id", "atomic file", "mask file", "next")))
    rid = lines["run id"].strip()
    assert lines["atomic file"].strip() == str(runs / rid / "denoised" / "synthetic.inter")
    assert (runs / rid / "denoised" / "masks.tsv").exists()
    assert lines["next"].strip() == (f"bench run --data denoised:{rid} --backbone sasrec --dataset synthetic "
                                     f"dataset.synthetic.n_users=40 --runs-dir {runs}")
    assert cli.main(["denoise", "--denoiser", "none", "--dataset", "synthetic", "--runs-dir", str(runs)]) == 2


def test_export_of_other_sequences_computes_their_own_interests(bow):
    split = _split()
    den = _iadsr(split, theta=-1.0, export="noisefree")
    model = _model("gru4rec", split, den)
    history = split.test.history  # training rows plus the validation item
    decisions = den.export(model, history)
    assert decisions.source is history and decisions.keep.shape == history.items.shape
    assert np.array_equal(decisions.keep, -decisions.score > 0)


@pytest.mark.parametrize("progress", [True, False])
def test_text_cache_progress_bar_follows_the_run_progress_setting(bow, capfd, progress):
    resources = Resources(_split(), seed=0, progress=progress)
    resources.encode_texts(["red lipstick", "face cream"], name="test-bow")
    assert bow.calls == 2
    assert ("encoding texts" in capfd.readouterr().err) is progress
