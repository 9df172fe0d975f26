import numpy as np
import pytest
import torch

from benchmark.data.datamodule import IndexBatchSampler, SeqDataModule
from denoisers.base import IdentityDenoiser
from models.base import ModelShape
from models.bert4rec import BERT4Rec, BERT4RecConfig
from models.caser import Caser, CaserConfig
from models.dcrec import DCRec, DCRecConfig
from models.gru4rec import GRU4Rec, GRU4RecConfig
from models.sasrec import SASRec, SASRecConfig
from tests.helpers import loo_split


def _mixed_length_split(n_users=60, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, n_items + 1, int(rng.integers(3, 30))).tolist() for _ in range(n_users)]
    return loo_split(rows, n_items)


def test_bucketed_sampler_yields_every_index_once_with_similar_lengths_per_batch():
    lengths = np.random.default_rng(0).integers(1, 50, 1000)
    sampler = IndexBatchSampler(1000, 32, shuffle=True, seed=0, lengths=lengths, bucket=10)
    batches = list(sampler)
    flat = torch.cat(batches).numpy()
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b.numpy()]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b.numpy()]) for b in IndexBatchSampler(1000, 32, True, 0)])
    assert spread < random_spread / 3
    again = IndexBatchSampler(1000, 32, shuffle=True, seed=0, lengths=lengths, bucket=10)
    assert [b.tolist() for b in again] == [b.tolist() for b in batches]  # seeded
    assert [b.tolist() for b in again] != [b.tolist() for b in batches]  # the next epoch reshuffles


@pytest.mark.parametrize("cls,cfg", [(SASRec, SASRecConfig()), (GRU4Rec, GRU4RecConfig()), (BERT4Rec, BERT4RecConfig()),
                                     (Caser, CaserConfig()), (DCRec, DCRecConfig())])
def test_trimmed_batches_give_the_same_scores_and_losses_as_full_width(cls, cfg):
    split = _mixed_length_split()
    L = 40
    torch.manual_seed(0)
    model = cls(cfg, ModelShape(split.n_items, split.n_users, L), denoiser=IdentityDenoiser()).eval()
    if hasattr(model, "prepare_split"):  # DCRec: item graphs from the split
        model.prepare_split(split)
    kwargs = dict(max_len=L, train_instances=cls.default_instances, batch_size=16, seed=0)
    full = SeqDataModule(split, **kwargs)
    trimmed = SeqDataModule(split, trim_padding=True, **kwargs)
    def scores_by_user(dm):
        batches = list(dm.test_dataloader())
        users = torch.cat([b["users"] for b in batches])
        scores = torch.cat([model.predict_scores(b["items"]) for b in batches])
        return scores[torch.argsort(users)], [b["items"].shape[1] for b in batches]

    reference, _ = scores_by_user(full)
    scores, widths = scores_by_user(trimmed)
    assert torch.allclose(reference, scores, atol=1e-5)
    assert min(widths) < L and widths == sorted(widths)  # evaluation batches come sorted by length
    if cls.default_instances == "windows":  # BERT4Rec's cloze draws one mask decision per slot
        return
    for a, b in zip(full.train_dataloader(), trimmed.train_dataloader()):
        assert torch.equal(a["targets"][:, -b["targets"].shape[1]:], b["targets"])
        assert int((a["targets"] > 0).sum()) == int((b["targets"] > 0).sum())
        with torch.no_grad():
            torch.manual_seed(1)  # DCRec samples graph neighbours in its training step
            loss_full = float(model.training_step(a, 0))
            torch.manual_seed(1)
            assert loss_full == pytest.approx(float(model.training_step(b, 0)), rel=1e-5)
