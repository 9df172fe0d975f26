"""Interruptions and failures of a run: SIGINT/SIGTERM then `bench run --resume`, a clean
start without it, and a non-finite loss (failure record, exit code, grid store row)."""
from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import benchmark.run as run_module
from benchmark import cli
from benchmark.grid import expand, load_grid, run_grid
from benchmark.registry import DENOISERS
from benchmark.store import ResultStore
from denoisers.base import Denoiser, StepContext
from models.base import SequentialRecommender

TINY = ["dataset.synthetic.n_users=40", "dataset.synthetic.n_items=30", "dataset.synthetic.max_len=16",
        "dataset.max_len=8", "train.batch_size=64", "logging.csv=true"]


def bench_run(runs: Path, backbone: str, denoiser: str, *options: str) -> int:
    return cli.main(["run", "--backbone", backbone, "--denoiser", denoiser, "--dataset", "synthetic",
                     "--profile", "smoke", "--runs-dir", str(runs), *TINY, *options])


def logged_epochs(metrics_csv: Path) -> set[int]:
    """The epochs that rows of a Lightning CSV logger's ``metrics.csv`` name."""
    with metrics_csv.open(newline="") as f:
        return {int(float(row["epoch"])) for row in csv.DictReader(f)}


def result_of(runs: Path) -> dict:
    (path,) = runs.glob("*/result.json")
    return json.loads(path.read_text())


def signal_self_when(monkeypatch, owner, hook: str, signum: int, condition) -> None:
    """Make the Lightning hook ``owner.<hook>`` (of a callback or a module) send ``signum`` to
    this process when ``condition(trainer)`` holds (what Ctrl-C or `kill` would do then)."""
    original = getattr(owner, hook)

    def hooked(self, *args):
        if condition(args[0] if args else self.trainer):
            os.kill(os.getpid(), signum)
        return original(self, *args)

    monkeypatch.setattr(owner, hook, hooked)


def test_interrupted_run_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """SASRec + HSD (dropout, Gumbel noise and a shuffled sampler all draw random numbers; HSD
    keeps per-epoch records outside its tensors). Ctrl-C at the start of epoch 2, then
    --resume: the per-epoch curve (train losses and validation metrics of epochs 0-3), the best
    epoch, valid and test metrics and the denoiser report equal those of an uninterrupted run
    exactly. Without restoring the RNG state or the sampler's epoch they differ."""
    options = ["train.max_epochs=4", "train.patience=10"]
    assert bench_run(tmp_path / "a", "sasrec", "hsd", *options) == 0

    with monkeypatch.context() as patch:
        signal_self_when(patch, run_module.EpochRecorder, "on_train_epoch_start", signal.SIGINT,
                         lambda trainer: trainer.current_epoch == 2)
        capsys.readouterr()
        assert bench_run(tmp_path / "b", "sasrec", "hsd", *options) == 130
    err = capsys.readouterr().err
    (run_dir,) = (tmp_path / "b").iterdir()
    assert f"kept {run_dir / 'checkpoints/sasrec/last.ckpt'}" in err and "plus --resume" in err
    assert "finished work is kept" in err
    assert not (run_dir / "result.json").exists() and not (run_dir / "failure.json").exists()

    assert bench_run(tmp_path / "b", "sasrec", "hsd", *options, "--resume") == 0
    a, b = result_of(tmp_path / "a"), result_of(tmp_path / "b")
    assert b["resumed_from"] == {"sasrec": 2} and a["resumed_from"] == {}
    assert len(b["attempt_commits"]) == 2 and len(a["attempt_commits"]) == 1
    for key in ("curve", "valid", "test", "test_optimistic", "best_epoch", "epochs", "denoiser_report"):
        assert b[key] == a[key], key
    assert len(b["denoiser_report"]["train_removed_per_epoch"]) == 4
    assert not list(run_dir.glob("checkpoints/*/last.ckpt"))  # finished: nothing left to resume
    # each attempt's CSV log stays: the first holds epochs 0-1, the resumed one epochs 2-3 and the test
    first, resumed = (logged_epochs(run_dir / name / "metrics.csv") for name in ("csv", "csv-2"))
    assert first == {0, 1} and min(resumed) == 2 and 3 in resumed


def test_run_stopped_by_early_stopping_and_killed_while_testing_resumes_without_training_more(tmp_path, monkeypatch, capsys):
    """lr 0: validation never improves after epoch 0, so patience 1 ends the fit after epoch 1.
    SIGTERM during the test; the resumed run goes straight to the test (2 epochs, not 3)."""
    options = ["train.lr=0.0", "train.patience=1", "train.max_epochs=6"]
    assert bench_run(tmp_path / "a", "gru4rec", "none", *options) == 0
    before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: libraries imported by other tests install theirs
    with monkeypatch.context() as patch:
        signal_self_when(patch, SequentialRecommender, "on_test_start", signal.SIGTERM, lambda trainer: True)
        assert bench_run(tmp_path / "b", "gru4rec", "none", *options) == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handlers are gone again
    assert bench_run(tmp_path / "b", "gru4rec", "none", *options, "--resume") == 0
    a, b = result_of(tmp_path / "a"), result_of(tmp_path / "b")
    assert a["epochs"] == b["epochs"] == 2 and b["resumed_from"] == {"gru4rec": 2}
    assert (b["curve"], b["test"]) == (a["curve"], a["test"])


def test_rerun_without_resume_starts_clean_and_says_what_it_removed(tmp_path, caplog):
    out = tmp_path / "abc"
    for name in ("RUNNING", "config.yaml", "failure.json", "csv/metrics.csv", "checkpoints/sasrec/last.ckpt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("old")
    with caplog.at_level("WARNING", logger="benchmark.run"):
        assert run_module._prepare_run_directory(out, resume=False) is False
    assert sorted(p.name for p in out.iterdir()) == ["RUNNING"]  # the lock stays: this process holds it
    assert "removed checkpoints, config.yaml, csv, failure.json" in caplog.text and "--resume" in caplog.text

    caplog.clear()
    with caplog.at_level("WARNING", logger="benchmark.run"):
        assert run_module._prepare_run_directory(out, resume=True) is False
    assert caplog.text == ""  # a fresh grid cell: nothing to resume, nothing removed, nothing to say

    (out / "failure.json").write_text("old")
    with caplog.at_level("WARNING", logger="benchmark.run"):
        assert run_module._prepare_run_directory(out, resume=True) is False
    assert "no checkpoint to resume from" in caplog.text and "removed failure.json" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["RUNNING"]

    for name in ("failure.json", "csv/metrics.csv", "checkpoints/sasrec/last.ckpt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("old")
    assert run_module._prepare_run_directory(out, resume=True) is True
    assert (out / "csv/metrics.csv").exists() and (out / "checkpoints/sasrec/last.ckpt").exists()
    assert not (out / "failure.json").exists()


def test_resume_from_a_corrupted_checkpoint_is_an_error_naming_the_file(tmp_path, capsys):
    options = ["train.max_epochs=2"]
    assert bench_run(tmp_path, "gru4rec", "none", *options) == 0
    (run_dir,) = tmp_path.iterdir()
    (run_dir / "result.json").unlink()
    last = run_dir / "checkpoints/gru4rec/last.ckpt"
    torch.save({"state_dict": {}}, last)
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    capsys.readouterr()
    assert bench_run(tmp_path, "gru4rec", "none", *options, "--resume") == 2
    err = capsys.readouterr().err
    assert f"{last}: cannot resume from this checkpoint" in err and "run without --resume" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ non-finite loss
class NanAfterFirstEpoch(Denoiser):
    """Test denoiser: an auxiliary loss that turns NaN in epoch 1."""

    level = "train"
    accepts_trimmed_batches = True
    registry_name = "nan-aux"

    def auxiliary_loss(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.stage != "train":
            return {}
        return {"nan_aux": torch.tensor(float("nan") if ctx.epoch >= 1 else 0.0)}


@pytest.fixture
def nan_denoiser(monkeypatch):
    DENOISERS.discover()
    monkeypatch.setattr(DENOISERS, "_items", dict(DENOISERS._items))
    monkeypatch.setattr(DENOISERS, "_origin", dict(DENOISERS._origin))
    DENOISERS.add("nan-aux", NanAfterFirstEpoch, origin=__name__)


REASON = "non-finite training loss at epoch 1, batch 0 (nan_aux=nan, loss=nan)"


def test_nan_loss_stops_the_run_with_a_failure_record_and_exit_code_1(tmp_path, nan_denoiser, capsys):
    assert bench_run(tmp_path, "gru4rec", "nan-aux", "train.max_epochs=3") == 1
    err = capsys.readouterr().err
    (run_dir,) = tmp_path.iterdir()
    assert f"failed: {REASON}" in err and str(run_dir / "failure.json") in err and "Traceback" not in err
    assert not (run_dir / "result.json").exists()
    record = json.loads((run_dir / "failure.json").read_text())  # strict JSON: no bare NaN
    assert record["kind"] == "NonFiniteLossError" and record["reason"].startswith(REASON)
    assert (record["epoch"], record["batch"]) == (1, 0) and record["loss_terms"]["nan_aux"] == "nan"
    logged = [v for line in (run_dir / "csv/metrics.csv").read_text().splitlines()[1:] for v in line.split(",")]
    assert "nan" not in logged  # the NaN step logged nothing


def test_grid_cell_with_nan_loss_is_stored_as_failed_with_the_reason(tmp_path, nan_denoiser):
    grid = tmp_path / "nan.yaml"
    grid.write_text("name: nan\nprofile: smoke\noverrides: [" + ", ".join([*TINY, "train.max_epochs=3"]) + "]\n"
                    "datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [nan-aux, none]\nseeds: [0]\n")
    cells = expand(load_grid(grid))
    summary = run_grid(cells, tmp_path / "store", tmp_path / "runs", grid_name="nan", progress=False,
                       echo=lambda s: None)
    bad, good = cells[0].run_id, cells[1].run_id
    assert summary.ok == [good] and list(summary.failed) == [bad]
    assert ResultStore(tmp_path / "store").failed()[bad].startswith(f"NonFiniteLossError: {REASON}")
    assert json.loads((tmp_path / "runs" / bad / "failure.json").read_text())["epoch"] == 1


def test_grid_cell_interrupted_mid_training_continues_from_its_last_epoch_on_the_next_invocation(tmp_path, monkeypatch, capsys):
    """SIGTERM at the start of epoch 2 stops the grid with the cell unfinished; `--dry-run` lists
    it as resuming after 2 epochs, the next `bench grid` continues it from that checkpoint
    instead of starting over, and the stored row has the curve and metrics of an uninterrupted run."""
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nprofile: smoke\noverrides: [" + ", ".join([*TINY, "train.max_epochs=4", "train.patience=10"])
                    + "]\ndatasets: [synthetic]\nbackbones: [sasrec]\ndenoisers: [none]\nseeds: [0]\n")
    (cell,) = expand(load_grid(grid))

    def run(name: str):
        return run_grid([cell], tmp_path / name / "store", tmp_path / name / "runs", grid_name="g", progress=False,
                        echo=lambda s: None)

    assert run("a").ok == [cell.run_id]
    with monkeypatch.context() as patch:
        signal_self_when(patch, run_module.EpochRecorder, "on_train_epoch_start", signal.SIGTERM,
                         lambda trainer: trainer.current_epoch == 2)
        stopped = run("b")
    assert stopped.interrupted and not stopped.ok and not stopped.failed
    assert (tmp_path / "b/runs" / cell.run_id / "checkpoints/sasrec/last.ckpt").exists()
    capsys.readouterr()
    assert cli.main(["grid", str(grid), "--dry-run", "--store", str(tmp_path / "b/store"),
                     "--runs-dir", str(tmp_path / "b/runs")]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if cell.run_id in ln]
    assert " todo " in line and line.endswith("(resumes sasrec after 2 epochs)")  # the listing says so

    assert run("b").ok == [cell.run_id]
    a, b = (ResultStore(tmp_path / n / "store").frame().row(0, named=True) for n in ("a", "b"))
    for key in ("test_ndcg@10", "test_hr@20", "valid_ndcg@10", "best_epoch", "epochs"):
        assert b[key] == a[key], key
    ra, rb = (json.loads((tmp_path / n / "runs" / cell.run_id / "result.json").read_text()) for n in ("a", "b"))
    assert rb["resumed_from"] == {"sasrec": 2} and ra["resumed_from"] == {}
    assert rb["curve"] == ra["curve"]


def test_attempt_log_names_every_commit_that_trained_a_resumed_run(tmp_path):
    from benchmark.leaderboard import provenance_lines
    from benchmark.store import result_row

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert run_module.record_attempt(run_dir, "aaa", resume=False) == ["aaa"]
    assert run_module.record_attempt(run_dir, "bbb", resume=True) == ["aaa", "bbb"]
    assert run_module.record_attempt(run_dir, "ccc", resume=False) == ["ccc"]  # a clean start forgets them
    (run_dir / run_module.ATTEMPTS_FILE).unlink()  # an attempt made before runs recorded theirs
    assert run_module.record_attempt(run_dir, "ddd", resume=True) == [run_module.UNKNOWN_ATTEMPT, "ddd"]

    base = {"run_id": "r1", "config": {"seed": 0}, "git_commit": "bbb"}
    resumed = result_row({**base, "attempt_commits": ["aaa", "bbb"]})
    assert json.loads(resumed["attempt_commits"]) == ["aaa", "bbb"]
    assert "attempt_commits" not in result_row({**base, "attempt_commits": ["bbb"]})
    text = "\n".join(provenance_lines([resumed]))
    assert "- `bbb`\n" in text and "- `aaa` (an earlier attempt of a resumed run)" in text
