import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from benchmark.config import ConfigError, compose
from benchmark.run import train_and_test
from denoisers.base import make_denoiser
from denoisers.cl4srec import MASKED, CL4SRecConfig, augment_views, crop, mask, nt_xent, reorder
from tests.helpers import transition_split


def batch_of_histories(seed: int = 0, B: int = 64, L: int = 12) -> torch.Tensor:
    """Left-padded rows of distinct items with lengths 1..L (distinct ids make runs identifiable)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    items = torch.arange(1, L + 1).repeat(B, 1) + 100 * torch.arange(B).unsqueeze(1)
    return torch.where(torch.arange(L).unsqueeze(0) >= L - lengths.unsqueeze(1), items, 0)


def real(row: torch.Tensor) -> list[int]:
    return [int(x) for x in row if x != 0]


@pytest.mark.parametrize("ratio", [0.2, 0.6, 0.9])
def test_crop_keeps_a_contiguous_run_of_floor_ratio_n_items_left_padded(ratio):
    items = batch_of_histories()
    out = crop(items, ratio, torch.Generator().manual_seed(1))
    for src, view in zip(items, out):
        n, kept = len(real(src)), real(view)
        assert len(kept) == max(1, math.floor(ratio * n))
        assert torch.all(view[: len(view) - len(kept)] == 0), "left-padded"
        s = real(src)
        assert any(s[i : i + len(kept)] == kept for i in range(n - len(kept) + 1)), "a contiguous run"


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_mask_marks_exactly_floor_ratio_n_real_slots_and_nothing_else(ratio):
    items = batch_of_histories()
    out, masked = mask(items, ratio, torch.Generator().manual_seed(2))
    n = (items > 0).sum(1)
    assert torch.equal(masked.sum(1), torch.floor(ratio * n.double()).long())
    assert not masked[items == 0].any(), "padding is never masked"
    assert torch.equal(out[~masked], items[~masked])
    assert torch.all(out[masked] == 0)


@pytest.mark.parametrize("ratio", [0.2, 0.5, 1.0])
def test_reorder_permutes_one_contiguous_run_and_leaves_the_rest(ratio):
    items = batch_of_histories(B=128)
    out = reorder(items, ratio, torch.Generator().manual_seed(3))
    shuffled_rows = 0
    for src, view in zip(items, out):
        n = len(real(src))
        r = math.floor(ratio * n)
        assert sorted(real(view)) == sorted(real(src)), "same multiset"
        assert torch.all(view[src == 0] == 0), "padding untouched"
        changed = (view != src).nonzero().flatten()
        if len(changed):
            shuffled_rows += 1
            assert int(changed.max() - changed.min()) + 1 <= r, "changes stay inside one run of r slots"
            lo, hi = int(changed.min()), int(changed.max()) + 1
            assert sorted(view[lo:hi].tolist()) == sorted(src[lo:hi].tolist())
        else:
            assert r >= 0
    assert shuffled_rows > 0


def test_views_use_only_the_enabled_augmentations():
    items = batch_of_histories(B=256)
    cfg = CL4SRecConfig(augmentations=["mask"], mask_ratio=0.5)
    view = augment_views(items, cfg, torch.Generator().manual_seed(4))
    assert torch.equal((view == MASKED).sum(1), torch.floor(0.5 * (items > 0).sum(1).double()).long())
    cfg = CL4SRecConfig(augmentations=["crop", "reorder"])
    view = augment_views(items, cfg, torch.Generator().manual_seed(4))
    assert not (view == MASKED).any()
    lengths = (view > 0).sum(1)
    n = (items > 0).sum(1)
    cropped = lengths < n
    assert cropped.any() and (~cropped).any(), "both augmentations are drawn"


def test_nt_xent_matches_a_dense_reference():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    for similarity, tau in (("dot", 1.0), ("cosine", 0.5)):
        views = torch.cat([z1, z2])
        if similarity == "cosine":
            views = F.normalize(views, dim=-1)
        losses = []
        for a in range(10):
            pos = (a + 5) % 10
            num = torch.exp(views[a] @ views[pos] / tau)
            den = sum(torch.exp(views[a] @ views[c] / tau) for c in range(10) if c != a)
            losses.append(-torch.log(num / den))
        assert torch.allclose(nt_xent(z1, z2, tau, similarity), torch.stack(losses).mean(), atol=1e-5)


def test_bad_ratio_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="crop_ratio"):
        make_denoiser({"name": "cl4srec", "crop_ratio": 1.5}, None)
    with pytest.raises(ConfigError, match="augmentations"):
        make_denoiser({"name": "cl4srec", "augmentations": ["shuffle"]}, None)


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_cl4srec_trains_with_a_backbone_and_beats_random(backbone, tmp_path: Path):
    split = transition_split(n_users=150, n_items=50)
    cfg = compose(backbone=backbone, denoiser="cl4srec", overrides=[
        "train.max_epochs=8", "train.patience=20", "logging.wandb=disabled", "logging.progress=false",
        "logging.csv=false", "dataset.max_len=10", "train.batch_size=64", "train.lr=0.005"])
    pl.seed_everything(0)
    denoiser = make_denoiser(dict(cfg.denoiser), None)
    model, _, test, _, recorder, _ = train_and_test(cfg, split, backbone, denoiser, tmp_path, "t")
    assert test["hr@10"] > max(0.5, 2.5 * 10 / split.n_items)  # random predictor: 10 / N
    cl_losses = [row["train/cl_loss"] for row in recorder.curve if "train/cl_loss" in row]
    assert cl_losses and all(value > 0 for value in cl_losses)
    assert model.denoiser.mask_embedding.requires_grad


def test_padding_mask_token_hides_masked_items_from_the_encoder():
    from tests.test_fmlp import make_fmlp  # any backbone; fmlp's zeroed padding makes it exact

    torch.manual_seed(0)
    model = make_fmlp().eval()
    denoiser = make_denoiser({"name": "cl4srec", "mask_token": "padding"}, None)
    denoiser.attach(model)
    view = torch.tensor([[0, 0, 3, MASKED, 5, 6, 7, 8, 9, 10]])
    as_padding = torch.tensor([[0, 0, 3, 0, 5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        a = denoiser.view_states(model, view)
        b = model.user_state(model.encode(model.embed(as_padding), as_padding == 0))
    assert torch.allclose(a, b)
