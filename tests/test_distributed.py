"""Lightning DDP over 2 CPU processes (gloo, ddp_spawn): every evaluation user is counted
exactly once, and the test metrics of a checkpoint equal those of one process (RecBole's
distributed sampler padded ranks and miscounted, its #1872)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from benchmark import cli
from benchmark.config import ConfigError, compose
from benchmark.data.build import build_split_data
from benchmark.data.datamodule import IndexBatchSampler
from benchmark.distributed import (CloseProcessGroupAtTeardown, check_denoiser_supports_processes, process_count,
                                   spawn_callbacks)
from benchmark.registry import DENOISERS
from benchmark.run import build_model_and_data
from denoisers.base import make_denoiser

# 101 test users: an odd count, which a padding sampler would round up to 102
TINY = ["dataset.synthetic.n_users=101", "dataset.synthetic.n_items=30", "dataset.synthetic.max_len=16",
        "dataset.max_len=8", "train.batch_size=32", "eval.batch_size=16", "train.accelerator=cpu",
        "train.max_epochs=2", "logging.csv=false"]
DDP = ["train.devices=2", "train.strategy=ddp_spawn"]


@pytest.mark.parametrize("world", [2, 3])
def test_evaluation_shares_of_the_ranks_are_disjoint_and_cover_every_instance_once(world):
    lengths = np.random.default_rng(0).integers(1, 9, 101)
    shares = [torch.cat(list(IndexBatchSampler(101, 16, False, 0, lengths, 0, rank, world))) for rank in range(world)]
    seen = torch.cat(shares).sort().values
    assert torch.equal(seen, torch.arange(101))
    assert sum(len(IndexBatchSampler(101, 16, False, 0, lengths, 0, r, world)) for r in range(world)) == 7


def test_training_shares_have_equal_lengths_and_together_hold_every_instance():
    lengths = np.random.default_rng(1).integers(1, 9, 101)
    samplers = [IndexBatchSampler(101, 16, True, 3, lengths, 2, rank, 2) for rank in range(2)]
    shares = [list(s) for s in samplers]
    assert len(shares[0]) == len(shares[1]) == len(samplers[0]) == 4  # 7 batches wrap to 8
    assert set(torch.cat(shares[0] + shares[1]).tolist()) == set(range(101))
    alone = torch.cat(list(IndexBatchSampler(101, 16, True, 3, lengths, 2))).tolist()
    assert sorted(alone) == list(range(101))


def test_one_process_keeps_the_batches_it_had_before_ranks_existed():
    sampler = IndexBatchSampler(50, 8, True, 5)
    g = torch.Generator().manual_seed(5)
    expected = list(torch.randperm(50, generator=g).split(8))
    assert all(torch.equal(a, b) for a, b in zip(sampler, expected, strict=True))


@pytest.mark.parametrize(("devices", "strategy", "n"), [(1, "auto", 1), (2, "auto", 1), (2, "ddp_spawn", 2),
                                                        ("2", "ddp", 2), ([0, 1, 2], "ddp", 3), ("auto", "ddp", 1)])
def test_process_count_reads_devices_and_strategy(devices, strategy, n):
    assert process_count(devices, strategy) == n


@pytest.mark.parametrize(("strategy", "added"), [("ddp_spawn", True), ("ddp_fork", True), ("ddp", False),
                                                 ("auto", False)])
def test_only_spawning_strategies_get_the_process_group_closed_at_teardown(strategy, added):
    callbacks = spawn_callbacks(strategy)
    assert [type(c) for c in callbacks] == ([CloseProcessGroupAtTeardown] if added else [])


def test_teardown_destroys_an_initialised_gloo_group_and_is_a_no_op_without_one(tmp_path):
    dist = torch.distributed
    callback = CloseProcessGroupAtTeardown()
    callback.teardown(None, None, "fit")  # no group: nothing to close
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        callback.teardown(None, None, "fit")
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_denoiser_with_per_epoch_state_is_refused_under_several_processes_before_any_data(capsys):
    with pytest.raises(ConfigError, match="iadsr.*per-user state"):
        check_denoiser_supports_processes(DENOISERS.get("iadsr"), 2)
    check_denoiser_supports_processes(DENOISERS.get("said"), 2)  # stateless hooks: allowed
    rc = cli.main(["run", "--backbone", "sasrec", "--denoiser", "hsd", "--dataset", "synthetic", "--profile",
                   "smoke", "--runs-dir", "/nonexistent/never-created", *TINY, *DDP])
    assert rc == 2 and "per-user state" in capsys.readouterr().err
    assert not Path("/nonexistent/never-created").exists()


def _one_process_test_metrics(cfg, checkpoint: str, root: Path) -> dict[str, float]:
    """Test metrics of ``checkpoint`` (with per-popularity-bucket counts) in this process."""
    split = build_split_data(cfg.dataset)
    model, dm = build_model_and_data(cfg, split, cfg.backbone.name, make_denoiser({"name": "none"}, None))
    model.set_item_buckets(np.r_[-1, np.arange(split.n_items) % 5])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(root))
    trainer.test(model, datamodule=dm, ckpt_path=checkpoint, verbose=False, weights_only=True)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_ddp_run_trains_and_tests_and_one_process_gets_the_same_test_metrics_from_its_checkpoint(tmp_path):
    """``bench run`` with 2 DDP processes: training and the test of the best checkpoint run in the
    workers; one process testing the same checkpoint gets the same metrics, each of the 101 test
    users counted once (bucket counts sum to 101; a padding sampler gives 102, and metric states
    shared between spawned workers gave 202 before they were reset per epoch)."""
    options = [*TINY, *DDP]
    rc = cli.main(["run", "--backbone", "sasrec", "--denoiser", "none", "--dataset", "synthetic", "--profile",
                   "smoke", "--runs-dir", str(tmp_path), *options])
    assert rc == 0
    (result_file,) = tmp_path.glob("*/result.json")
    result = json.loads(result_file.read_text())
    assert [row["epoch"] for row in result["curve"]] == [0, 1]  # the curve came back from the workers
    assert result["epochs"] == 2 and result["valid"]
    n_test_users = 101
    assert sum(v for k, v in result["test"].items() if k.startswith("n_b")) == n_test_users

    cfg = compose(backbone="sasrec", denoiser="none", dataset="synthetic", profile="smoke", overrides=options)
    best = str(result_file.parent / "checkpoints" / "sasrec" / "best.ckpt")
    single = _one_process_test_metrics(cfg, best, tmp_path / "single")
    for key in ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10"):
        assert result["test"][key] == pytest.approx(single[f"test/{key}"], abs=1e-6)  # run's test ran under DDP
    assert sum(v for k, v in single.items() if "/n_b" in k) == n_test_users
