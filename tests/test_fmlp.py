from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from benchmark.config import compose
from benchmark.registry import BACKBONES
from benchmark.run import train_and_test
from denoisers.base import IdentityDenoiser
from models.base import ModelShape
from models.fmlp import FilterBlock, FrequencyFilter
from tests.helpers import transition_split


def make_fmlp(n_items: int = 30, max_len: int = 10, **overrides):
    cfg = compose(backbone="fmlp", overrides=[f"backbone.{k}={v}" for k, v in overrides.items()])
    return BACKBONES.get("fmlp").from_config(dict(cfg.backbone), ModelShape(n_items, 50, max_len), None, None,
                                             IdentityDenoiser())


@pytest.mark.parametrize("length", [9, 10])
def test_all_ones_complex_filter_is_the_identity(length):
    filt = FrequencyFilter(length, 8)
    with torch.no_grad():
        filt.weight[..., 0] = 1.0
        filt.weight[..., 1] = 0.0
    x = torch.randn(3, length, 8)
    assert torch.allclose(filt(x), x, atol=1e-5)


def test_block_with_identity_filter_equals_block_without_filter():
    torch.manual_seed(0)
    block = FilterBlock(10, 8, 32, dropout=0.0, eps=1e-12, init_std=0.02).eval()
    with torch.no_grad():
        block.filter.weight[..., 0] = 1.0
        block.filter.weight[..., 1] = 0.0
    x = torch.randn(2, 10, 8)
    without_filter = block.ffn_norm(block.ffn(block.filter_norm(x + x)) + block.filter_norm(x + x))
    assert torch.allclose(block(x, None), without_filter, atol=1e-5)


def test_block_on_real_rows_only_equals_the_dense_block_with_zeroed_padding():
    torch.manual_seed(0)
    block = FilterBlock(10, 8, 32, dropout=0.0, eps=1e-12, init_std=0.5).eval()
    x = torch.randn(3, 10, 8)
    keep = torch.ones(3, 10, 1)
    keep[0, :4] = 0
    keep[2, :9] = 0
    x = x * keep
    dense = block.filter_norm(block.filter(x) + x) * keep
    dense = block.ffn_norm(block.ffn(dense) + dense) * keep
    x.requires_grad_(True)
    compact = block(x, keep)
    assert torch.allclose(compact, dense, atol=1e-5)
    compact.sum().backward()  # gradients reach the input through the gathered rows
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_filter_mixes_future_slots_so_the_model_is_not_causal():
    torch.manual_seed(0)
    model = make_fmlp().eval()
    items = torch.randint(1, 31, (2, 10))
    changed = items.clone()
    changed[:, -1] = (changed[:, -1] % 30) + 1
    with torch.no_grad():
        a = model.encode(model.embed(items), items == 0)
        b = model.encode(model.embed(changed), changed == 0)
    assert not torch.allclose(a[:, 0], b[:, 0])
    assert model.causal is False and model.default_instances == "prefix"


def test_padding_rows_do_not_change_the_last_slot_output():
    torch.manual_seed(0)
    model = make_fmlp().eval()
    items = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        emb = model.embed(items)
        a = model.encode(emb, items == 0)
        garbage = emb.clone()
        garbage[:, :3] = torch.randn_like(garbage[:, :3])
        b = model.encode(garbage, items == 0)
    assert a.shape == (1, 10, 64)
    assert torch.allclose(a[:, -1], b[:, -1], atol=1e-5)
    assert torch.all(a[:, :3] == 0)


def test_targets_before_the_last_slot_are_refused():
    model = make_fmlp()
    items = torch.randint(1, 31, (2, 10))
    with pytest.raises(ValueError, match="not causal"):
        model.training_inputs({"items": items, "targets": items})


def test_fmlp_learns_a_planted_transition(tmp_path: Path):
    split = transition_split(n_users=150, n_items=50)
    cfg = compose(backbone="fmlp", overrides=[
        "train.max_epochs=6", "train.patience=20", "logging.wandb=disabled", "logging.progress=false",
        "logging.csv=false", "dataset.max_len=10", "train.batch_size=64", "train.lr=0.005"])
    pl.seed_everything(0)
    _, _, test, _, _, _ = train_and_test(cfg, split, "fmlp", IdentityDenoiser(), tmp_path, "t")
    assert test["hr@10"] > max(0.5, 2.5 * 10 / split.n_items)  # random predictor: 10 / N
