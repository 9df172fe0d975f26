from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from benchmark.config import compose
from benchmark.registry import BACKBONES
from benchmark.run import train_and_test
from denoisers.base import IdentityDenoiser
from models.base import ModelShape
from tests.helpers import transition_split

BACKBONE_NAMES = ["gru4rec", "sasrec", "caser", "bert4rec"]


def make_model(name: str, n_items: int = 30, max_len: int = 10, **overrides):
    cfg = compose(backbone=name, overrides=[f"backbone.{k}={v}" for k, v in overrides.items()])
    section = dict(cfg.backbone)
    return BACKBONES.get(name).from_config(section, ModelShape(n_items, 50, max_len), None, None, IdentityDenoiser())


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_backbone_learns_a_planted_transition(name, tmp_path: Path):
    split = transition_split()
    cfg = compose(backbone=name, overrides=[
        "train.max_epochs=15", "train.patience=20", "logging.wandb=disabled", "logging.progress=false",
        "logging.csv=false", "dataset.max_len=10", "train.batch_size=64", "train.lr=0.005"])
    pl.seed_everything(0)
    _, _, test, _, _, _ = train_and_test(cfg, split, name, IdentityDenoiser(), tmp_path, "t")
    assert test["hr@10"] > 0.9


# the GRU of the IADSR authors' code (specs/iadsr.md §3), as configs/grids/iadsr-paper-beauty-reference-gru.yaml sets it
REFERENCE_GRU = {"tied_output": False, "gru_bias": True, "learned_padding": True, "xavier_init": False, "dropout": 0.0,
                 "num_layers": 2}


def test_reference_gru_learns_a_planted_transition(tmp_path: Path):
    split = transition_split()
    cfg = compose(backbone="gru4rec", overrides=[
        "train.max_epochs=15", "train.patience=20", "logging.wandb=disabled", "logging.progress=false",
        "logging.csv=false", "dataset.max_len=10", "train.batch_size=64", "train.lr=0.005",
        *[f"backbone.{k}={v}" for k, v in REFERENCE_GRU.items()]])
    pl.seed_everything(0)
    _, _, test, _, _, _ = train_and_test(cfg, split, "gru4rec", IdentityDenoiser(), tmp_path, "t")
    assert test["hr@10"] > 0.9


def test_reference_gru_scores_with_its_own_output_layer_and_bias():
    torch.manual_seed(0)
    model = make_model("gru4rec", **REFERENCE_GRU).eval()
    items = torch.randint(1, 31, (3, 10))
    with torch.no_grad():
        state = model.user_state(model.encode(model.embed(items), items == 0))
        scores = model.score(state)
    assert state.shape == (3, 128)  # the GRU's hidden size: no projection back to the embedding size
    expected = state @ model.output.weight.T + model.output.bias
    assert torch.allclose(scores[:, 1:], expected[:, 1:], atol=1e-6)
    assert (scores[:, 0] == float("-inf")).all()


def test_learned_padding_shapes_the_state_and_survives_trimmed_batches():
    """The reference GRU reads a trainable id-0 row at padding slots: the padding row changes
    the user state, and a batch trimmed of its leading padding gets the same states."""
    torch.manual_seed(0)
    model = make_model("gru4rec", **REFERENCE_GRU).eval()
    items = torch.tensor([[0, 0, 0, 0, 0, 4, 5, 6, 7, 8], [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        full = model.encode(model.embed(items), items == 0)
        trimmed = model.encode(model.embed(items[:, 3:]), items[:, 3:] == 0)
        assert torch.allclose(trimmed, full[:, 3:], atol=1e-6)
        model.item_embedding.weight[0] += 1.0
        moved = model.encode(model.embed(items), items == 0)
    assert not torch.allclose(moved[:, -1], full[:, -1], atol=1e-4)


@pytest.mark.parametrize("name,overrides", [("gru4rec", {}), ("gru4rec", REFERENCE_GRU), ("sasrec", {}), ("caser", {})])
def test_causal_backbones_never_see_the_future(name, overrides):
    torch.manual_seed(0)
    model = make_model(name, **overrides).eval()
    items = torch.randint(1, 31, (4, 10))
    items[:, :2] = 0  # left padding
    changed = items.clone()
    changed[:, 6:] = torch.randint(1, 31, (4, 4))
    with torch.no_grad():
        a = model.encode(model.embed(items), items == 0)
        b = model.encode(model.embed(changed), changed == 0)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-5)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("name", ["gru4rec", "sasrec", "bert4rec"])
def test_padding_slots_do_not_influence_the_user_state(name):
    torch.manual_seed(0)
    model = make_model(name).eval()
    items = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        a = model.predict_scores(items)
        # same history with more padding on the left (shorter window is equivalent)
        emb = model.embed(items)
        emb[:, :3] = torch.randn_like(emb[:, :3])  # garbage in padding rows must be ignored
        h = model.encode(emb, items == 0) if name != "bert4rec" else None
    if h is not None:
        b = model.score(model.user_state(h))
        assert torch.allclose(a, b, atol=1e-5)


def test_score_excludes_padding_and_mask_columns():
    model = make_model("bert4rec").eval()
    scores = model.predict_scores(torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6, 7, 8]]))
    assert scores.shape == (1, 31)  # N + 1 columns: the mask token is not a candidate
    assert scores[0, 0] == float("-inf")


def test_bert4rec_masking_replaces_only_real_items_with_targets_kept():
    torch.manual_seed(0)
    model = make_model("bert4rec", mask_ratio=0.5)
    items = torch.randint(1, 31, (64, 10))
    items[:, :3] = 0
    inputs, targets = model.training_inputs({"items": items})
    masked = inputs == model.mask_token
    assert masked.any(1).all(), "every sequence has at least one masked slot"
    assert not masked[:, :3].any(), "padding is never masked"
    assert torch.equal(targets[masked], items[masked])
    assert (targets[~masked] == 0).all()
    assert torch.equal(inputs[~masked], items[~masked])
    share = masked[:, 3:].float().mean().item()
    assert 0.35 < share < 0.65


def test_bert4rec_appends_the_mask_token_at_inference():
    model = make_model("bert4rec")
    out = model.eval_inputs(torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]))
    assert out[0, -1] == model.mask_token and torch.equal(out[0, :-1], torch.arange(1, 10))


def test_a_loss_the_backbone_cannot_train_is_not_applicable_to_it():
    """The iadsr-reference preset trains with the authors' in-batch tanh loss, which BERT4Rec's
    cloze training cannot use: by design, so a grid records the cell as not applicable."""
    from omegaconf import OmegaConf

    from benchmark.config import NotApplicableError

    cfg = compose(backbone="bert4rec", denoiser="iadsr-reference")
    with pytest.raises(NotApplicableError, match="train.loss='inbatch_tanh' is not supported by BERT4Rec"):
        BACKBONES.get("bert4rec").from_config(dict(cfg.backbone), ModelShape(30, 10, 10), OmegaConf.to_object(cfg.train),
                                              None, IdentityDenoiser())


@pytest.mark.parametrize("loss", ["ce", "bpr", "bce_neg", "inbatch"])
def test_every_objective_gives_a_finite_loss_and_gradients(loss):
    cfg = compose(backbone="sasrec", overrides=[f"train.loss={loss}"])
    from omegaconf import OmegaConf

    model = BACKBONES.get("sasrec").from_config(dict(cfg.backbone), ModelShape(30, 10, 10), OmegaConf.to_object(cfg.train), None, IdentityDenoiser())
    items = torch.randint(1, 31, (8, 10))
    targets = torch.randint(1, 31, (8, 10))
    loss_value = model.training_step({"items": items, "targets": targets, "users": torch.arange(8)}, 0)
    loss_value.backward()
    assert torch.isfinite(loss_value)
    assert model.item_embedding.weight.grad.abs().sum() > 0


def test_ce_equals_dense_log_softmax_reference():
    model = make_model("sasrec")
    states = torch.randn(5, 64)
    targets = torch.tensor([1, 2, 3, 4, 5])
    got = model.next_item_loss(states, targets, torch.zeros(5, 1, dtype=torch.long))
    logits = states @ model.item_embedding.weight[1:].T
    want = -torch.log_softmax(logits, -1)[torch.arange(5), targets - 1]
    assert torch.allclose(got, want, atol=1e-5)


def test_negative_sampling_avoids_history_items():
    from omegaconf import OmegaConf

    cfg = compose(backbone="sasrec", overrides=["train.loss=bpr", "train.num_negatives=8"])
    model = BACKBONES.get("sasrec").from_config(dict(cfg.backbone), ModelShape(40, 10, 10), OmegaConf.to_object(cfg.train), None, IdentityDenoiser())
    torch.manual_seed(0)
    history = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]] * 50)
    neg = model.sample_negatives(torch.full((50,), 9), history)
    assert ((neg >= 10) & (neg <= 40)).all()


def test_full_ranking_scores_stay_float32_under_bf16_autocast():
    # bf16 logits keep 8 significant bits: over a large catalogue many items would tie with
    # the target, and pessimistic ties would count every one of them against it
    torch.manual_seed(0)
    model = make_model("sasrec", n_items=2000).eval()
    batch = {"items": torch.randint(1, 2001, (6, 10)), "targets": torch.randint(1, 2001, (6,)),
             "lengths": torch.full((6,), 10)}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model._eval_scores(dict(batch), "test")
        state = model.user_state(model(batch["items"]), batch["lengths"])
    assert scores.dtype == torch.float32
    with torch.no_grad():
        expected = model.score(state.float())
    assert torch.equal(scores, expected)
    assert len(torch.unique(scores[0, 1:])) > 1990  # no mass ties introduced by rounding


@pytest.mark.parametrize("name,overrides", [("sasrec", {}), ("sasrec", {"bidirectional": True}), ("bert4rec", {}),
                                            ("caser", {})])
def test_last_slot_state_shortcut_equals_the_full_encoder(name, overrides):
    torch.manual_seed(0)
    model = make_model(name, **overrides).eval()
    items = torch.randint(1, 31, (5, 10))
    items[0, :6] = 0
    items[3, :9] = 0
    pad = items == 0
    with torch.no_grad():
        emb = model.embed(items)
        full = model.user_state(model.encode(emb, pad))
        short = model.encode_state(emb, pad)
    assert short.shape == full.shape
    assert torch.allclose(short, full, atol=1e-5)


def test_a_backbone_with_its_own_user_state_gets_the_full_encoder_in_encode_state():
    from models.sasrec import SASRec

    class MeanStateSASRec(SASRec):
        def user_state(self, hidden, lengths=None):
            return hidden.mean(1)

    torch.manual_seed(0)
    plain = make_model("sasrec").eval()
    model = MeanStateSASRec(plain.cfg, ModelShape(30, 50, 10), None, None, IdentityDenoiser()).eval()
    model.load_state_dict(plain.state_dict())
    items = torch.randint(1, 31, (4, 10))
    with torch.no_grad():
        emb = model.embed(items)
        expected = model.encode(emb, items == 0).mean(1)
        assert torch.allclose(model.encode_state(emb, items == 0), expected, atol=1e-6)
