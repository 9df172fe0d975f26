"""Stopping rules of the training loop: min_epochs, the monitored metric, run-id stability."""
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from benchmark.config import ConfigError, compose, run_id, to_dict
from benchmark.metrics import monitored_metric
from benchmark.run import EpochRecorder, build_model_and_data, check_sections, train_and_test
from denoisers.base import IdentityDenoiser
from tests.helpers import transition_split

FAST = ["logging.wandb=disabled", "logging.progress=false", "logging.csv=false", "dataset.max_len=10",
        "train.batch_size=64"]


def _epochs_run(tmp_path: Path, *overrides: str) -> int:
    cfg = compose(backbone="gru4rec", overrides=[*FAST, *overrides])
    _, _, _, _, recorder, _ = train_and_test(cfg, transition_split(), "gru4rec", IdentityDenoiser(), tmp_path, "t")
    return len(recorder.curve)


def test_early_stopping_waits_for_min_epochs(tmp_path):
    # lr 0: validation NDCG never improves after epoch 0, so patience 1 stops at epoch 1
    frozen = ["train.lr=0.0", "train.patience=1", "train.max_epochs=10"]
    assert _epochs_run(tmp_path / "a", *frozen) == 2
    assert _epochs_run(tmp_path / "b", *frozen, "train.min_epochs=5") == 5


def test_the_monitored_metric_picks_the_best_epoch(tmp_path):
    cfg = compose(backbone="gru4rec", overrides=[*FAST, "train.max_epochs=4", "train.lr=0.005",
                                                 "train.monitor=valid/hr@5", "train.patience=10"])
    model, valid, _, _, recorder, _ = train_and_test(cfg, transition_split(), "gru4rec", IdentityDenoiser(), tmp_path, "t")
    assert model.monitor_name == "valid_hr5"
    best = max(recorder.curve, key=lambda r: r["valid/hr@5"])
    assert valid["hr@5"] == best["valid/hr@5"] and model.best_epoch == best["epoch"]


def test_monitor_must_name_a_computed_validation_metric():
    assert monitored_metric("valid/ndcg@10", [5, 10, 20]) == ("ndcg@10", "valid_ndcg10")
    assert monitored_metric("train/loss", [5, 10, 20]) == ("loss", "train_loss_mean")
    for bad in ("valid/ndcg@50", "test/hr@10", "valid/recall@10", "ndcg@10", "train/rec_loss"):
        with pytest.raises(ValueError, match="train.monitor"):
            monitored_metric(bad, [5, 10, 20])


def test_training_loss_monitor_keeps_the_lowest_loss_epoch_and_stops_when_it_rises(tmp_path):
    cfg = compose(backbone="gru4rec", overrides=[*FAST, "train.max_epochs=6", "train.lr=0.005",
                                                 "train.monitor=train/loss", "train.patience=10"])
    model, _, _, _, recorder, _ = train_and_test(cfg, transition_split(), "gru4rec", IdentityDenoiser(), tmp_path / "a", "t")
    losses = [r["train/loss"] for r in recorder.curve]
    assert model.monitor_name == "train_loss_mean" and len(losses) == 6
    assert model.best_epoch == losses.index(min(losses))
    # a learning rate that makes the loss climb: the first epoch stays best and patience 2 stops at 3
    climbing = compose(backbone="gru4rec", overrides=[*FAST, "train.max_epochs=8", "train.lr=5.0",
                                                      "train.monitor=train/loss", "train.patience=2"])
    model, _, _, _, recorder, _ = train_and_test(climbing, transition_split(), "gru4rec", IdentityDenoiser(), tmp_path / "b", "t")
    losses = [r["train/loss"] for r in recorder.curve]
    assert model.best_epoch == losses.index(min(losses))
    assert len(losses) == model.best_epoch + 3 < 8


def test_monitored_training_loss_is_the_epoch_mean_the_run_records(tmp_path):
    """Early stopping reads the loss at validation time, before Lightning's own epoch mean of
    train/loss exists; both must be the same number."""
    seen = []

    class Watch(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            seen.append(float(trainer.callback_metrics["train_loss_mean"]))

    cfg = compose(backbone="gru4rec", overrides=[*FAST, "train.max_epochs=3", "train.monitor=train/loss"])
    model, dm = build_model_and_data(cfg, transition_split(), "gru4rec", IdentityDenoiser())
    recorder = EpochRecorder()
    trainer = pl.Trainer(max_epochs=3, callbacks=[recorder, Watch()], logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert seen == pytest.approx([r["train/loss"] for r in recorder.curve], rel=1e-5)


def test_valid_in_train_split_refuses_a_validation_monitor():
    inside = ["dataset.split=loo_valid_in_train"]
    with pytest.raises(ConfigError, match="train.monitor=train/loss"):
        check_sections(compose(backbone="gru4rec", overrides=inside))
    check_sections(compose(backbone="gru4rec", overrides=[*inside, "train.monitor=train/loss"]))


def test_min_epochs_at_its_default_keeps_earlier_run_ids():
    cfg = to_dict(compose(backbone="sasrec"))
    before = dict(cfg, train={k: v for k, v in cfg["train"].items() if k != "min_epochs"})
    assert run_id(cfg) == run_id(before)
    assert run_id(compose(backbone="sasrec", overrides=["train.min_epochs=20"])) != run_id(cfg)


def test_run_records_the_commit_of_its_start_not_of_its_end(tmp_path, monkeypatch):
    """A grid cell runs for hours; the checkout may move meanwhile. The recorded commit is the
    one the run's code was imported from."""
    import benchmark.run as run_module

    commits = iter(["commit-at-start", "commit-at-end", "commit-at-end"])
    monkeypatch.setattr(run_module, "git_commit", lambda: next(commits))
    cfg = compose(backbone="gru4rec", denoiser="none", dataset="synthetic", profile="smoke",
                  overrides=["dataset.synthetic.n_users=40", "dataset.synthetic.n_items=30", "dataset.max_len=8"])
    result = run_module.execute(cfg, runs_dir=tmp_path)
    assert result.git_commit == "commit-at-start"


def test_run_records_its_torch_threads_and_the_load_it_ran_under(tmp_path, monkeypatch):
    import benchmark.run as run_module

    loads = iter([(3.0, 0.0, 0.0), (1.0, 0.0, 0.0)])
    monkeypatch.setattr(run_module.os, "getloadavg", lambda: next(loads))
    monkeypatch.setattr(run_module.os, "cpu_count", lambda: 2)
    cfg = compose(backbone="gru4rec", denoiser="none", dataset="synthetic", profile="smoke",
                  overrides=["dataset.synthetic.n_users=40", "dataset.synthetic.n_items=30", "dataset.max_len=8"])
    result = run_module.execute(cfg, runs_dir=tmp_path)
    assert result.timings["load_average_start"] == 1.5 and result.timings["load_average_end"] == 0.5
    assert result.timings["torch_threads"] == torch.get_num_threads()
    assert result.timings["speed_probe_start"] > 0 and result.timings["speed_probe_end"] > 0



def test_run_threads_option_pins_the_runs_torch_threads_and_restores_them(tmp_path, capsys):
    import json

    from benchmark import cli

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        code = cli.main(["run", "--runs-dir", str(tmp_path), "--backbone", "gru4rec", "--dataset", "synthetic",
                         "--profile", "smoke", "--threads", "1", "dataset.synthetic.n_users=40",
                         "dataset.synthetic.n_items=30", "dataset.max_len=8", "logging.wandb=disabled"])
        assert code == 0 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert "torch threads: 1\n" in out
    (result,) = tmp_path.glob("*/result.json")
    assert json.loads(result.read_text())["timings"]["torch_threads"] == 1.0


class _FakeStrategy:
    @staticmethod
    def reduce_boolean_decision(decision, all=True):  # noqa: A002 - Lightning's signature
        return decision


class _FakeTrainer:
    def __init__(self):
        self.should_stop, self.current_epoch, self.fast_dev_run = False, 0, False
        self.callback_metrics, self.strategy = {}, _FakeStrategy()


def _epochs_until_stop(callback, scores, max_epochs=None):
    """Feed one validation score per epoch; the number of epochs run when the fit loop (which
    stops on should_stop once min_epochs epochs ran) would end."""
    import torch

    trainer = _FakeTrainer()
    for epoch, score in enumerate(scores[:max_epochs]):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"valid/ndcg@10": torch.tensor(score)}
        callback._run_early_stopping_check(trainer)
        if trainer.should_stop and epoch + 1 >= callback.min_epochs:
            return epoch + 1
    return len(scores)


def test_min_epochs_does_not_stop_a_run_that_improved_after_an_early_plateau():
    from benchmark.run import EarlyStoppingAfterMinEpochs

    # plateau for epochs 1-3 (patience 2 exhausted at epoch 3), then improving until epoch 6
    scores = [0.1, 0.2, 0.2, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    stopper = EarlyStoppingAfterMinEpochs(min_epochs=5, monitor="valid/ndcg@10", mode="max", patience=2)
    assert _epochs_until_stop(stopper, scores) == 9  # best at epoch 6, then two checks without gain
    # Lightning's own EarlyStopping keeps the early signal and the loop acts on it at min_epochs
    import pytorch_lightning as pl
    plain = pl.callbacks.EarlyStopping(monitor="valid/ndcg@10", mode="max", patience=2)
    plain.min_epochs = 5
    assert _epochs_until_stop(plain, scores) == 5


def test_min_epochs_still_stops_a_flat_run_as_soon_as_it_is_allowed():
    from benchmark.run import EarlyStoppingAfterMinEpochs

    stopper = EarlyStoppingAfterMinEpochs(min_epochs=5, monitor="valid/ndcg@10", mode="max", patience=2)
    assert _epochs_until_stop(stopper, [0.1] * 12) == 5
    without_min = EarlyStoppingAfterMinEpochs(min_epochs=0, monitor="valid/ndcg@10", mode="max", patience=2)
    assert _epochs_until_stop(without_min, [0.1] * 12) == 3


def test_epoch_lines_report_each_epochs_time_metric_and_best_so_far(tmp_path, capsys):
    cfg = compose(backbone="gru4rec", overrides=[*FAST, "train.max_epochs=3", "train.lr=0.005",
                                                 "logging.epoch_lines=true"])
    _, _, _, _, recorder, _ = train_and_test(cfg, transition_split(), "gru4rec", IdentityDenoiser(), tmp_path, "rid0")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("run rid0 gru4rec: epoch")]
    assert [ln.split(",")[0] for ln in lines] == [f"run rid0 gru4rec: epoch {e}/3" for e in (1, 2, 3)]
    values = [r["valid/ndcg@10"] for r in recorder.curve]
    best = max(range(3), key=lambda e: values[e])
    assert lines[-1].endswith(f"valid/ndcg@10 {values[-1]:.4f} (best {values[best]:.4f} at epoch {best + 1})")
    assert " s, valid/ndcg@10 " in lines[0]


def test_epoch_lines_are_off_by_default(tmp_path, capsys):
    _epochs_run(tmp_path, "train.max_epochs=2")
    assert ": epoch 1/2" not in capsys.readouterr().err
