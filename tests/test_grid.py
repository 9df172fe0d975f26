"""Grid expansion, skip-done, failure isolation and kill-and-resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from benchmark.config import ConfigError, to_dict
from benchmark.grid import expand, load_grid, plan, run_grid, select
from benchmark.registry import DENOISERS
from benchmark.store import ResultStore

REPO = Path(__file__).resolve().parent.parent
FAKE = "tests.test_grid:fake_execute"
TINY = ["dataset.synthetic.n_users=30", "dataset.synthetic.n_items=24", "dataset.synthetic.max_len=14",
        "dataset.max_len=10", "train.max_epochs=1"]


def write_grid(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GRID = """
name: unit
profile: smoke
overrides: [dataset.max_len=10]
datasets: [synthetic]
noise:
  - {kind: none}
  - {kind: replace, alpha: 0.1}
backbones: [gru4rec, sasrec]
denoisers: [none, semantic-outlier]
denoiser_params:
  semantic-outlier: {ratio: [0.05, 0.1]}
seeds: [0, 1]
include:
  - {backbone: caser, denoiser: none, noise: {kind: none}}
exclude:
  - {backbone: sasrec, denoiser: semantic-outlier, seed: 1}
"""


# ------------------------------------------------------------------ fake executor (importable)
def fake_execute(cfg, runs_dir=None, resume=False, force=False):
    """Stands in for benchmark.run.execute: logs the call, fails on demand, returns a result dict.

    ``FAKE_LOG``: file to append run ids to (``<id>:force`` for a forced run); ``FAKE_FAIL``:
    ``denoiser:kind`` pairs where kind is nan | oom | crash."""
    from benchmark.config import run_id
    from benchmark.runlock import run_lock

    rid = run_id(cfg)
    with run_lock(Path(runs_dir) / rid):  # as benchmark.run.execute does
        return _fake_result(cfg, rid, force)


def _fake_result(cfg, rid, force=False):
    log = os.environ.get("FAKE_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(rid + (":force" if force else "") + "\n")
    fail = dict(item.split(":") for item in os.environ.get("FAKE_FAIL", "").split(",") if item)
    kind = fail.get(cfg.denoiser.name)
    if kind == "nan":
        raise FloatingPointError("non-finite training loss at epoch 0, batch 3")
    if kind == "oom":
        raise MemoryError("out of memory allocating 8 GiB")
    if kind == "crash":
        os._exit(3)
    if kind == "swallow":  # a library that turns the stop signal into an ordinary error
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None
    value = 0.1 + 0.01 * int(cfg.seed)
    # FAKE_BEST=key=value: that denoiser setting is best on validation and worst on test
    key, _, wanted = os.environ.get("FAKE_BEST", "").partition("=")
    shift = 0.05 if key and str(cfg.denoiser.get(key)) == wanted else 0.0
    return {"run_id": rid, "config": to_dict(cfg), "protocol": {"split": "loo"}, "valid": {"ndcg@10": value + shift},
            "test": {"hr@10": 2 * value, "ndcg@10": value - shift}, "test_optimistic": {}, "curve": [],
            "timings": {"fit_seconds": 1.0}, "detection": None, "mode": "plain", "epochs": 1, "best_epoch": 0,
            "versions": {"python": "3"}, "git_commit": "abc", "status": "ok"}


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    return lambda: log.read_text().split() if log.exists() else []


def run(cells, tmp_path, **kw):
    return run_grid(cells, tmp_path / "store", tmp_path / "runs", grid_name="unit", executor=FAKE, progress=False,
                    echo=lambda s: None, **kw)


# ------------------------------------------------------------------ expansion
def test_expand_crosses_axes_params_include_and_exclude(tmp_path):
    spec = load_grid(write_grid(tmp_path / "g.yaml", GRID))
    cells = expand(spec)
    # 2 noise x 2 seeds x (gru4rec: none + 2 ratios; sasrec: none + 2 ratios) = 24,
    # minus sasrec/semantic-outlier at seed 1 (2 ratios x 2 noise = 4), plus caser/none clean x 2 seeds
    assert len(cells) == 24 - 4 + 2
    assert len({c.run_id for c in cells}) == len(cells)
    assert not [c for c in cells if c.backbone == "sasrec" and c.denoiser == "semantic-outlier" and c.seed == 1]
    assert sorted({c.noise for c in cells if c.backbone == "caser"}) == ["clean"]
    cfg = next(c for c in cells if c.params == {"ratio": 0.05} and c.noise == "replace α=0.1").compose()
    assert cfg.denoiser.ratio == 0.05 and cfg.dataset.noise.kind == "replace" and cfg.dataset.noise.alpha == 0.1
    assert cfg.logging.wandb_group == "unit" and cfg.train.max_epochs == 2 and cfg.dataset.max_len == 10
    assert cells[0].label == "synthetic | clean | gru4rec | none | seed 0"


def test_select_keeps_cells_matching_every_only_filter(tmp_path):
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", GRID)))
    picked = select(cells, ["backbone=gru4rec", "seed=0,1", "noise=clean"])
    assert picked and all(c.backbone == "gru4rec" and c.noise == "clean" for c in picked)
    assert len(picked) == len([c for c in cells if c.backbone == "gru4rec" and c.noise == "clean"])
    assert select(cells, []) == cells
    with pytest.raises(ValueError, match="KEY=V1"):
        select(cells, ["colour=red"])


def test_select_matches_noise_by_kind_and_rejects_values_no_cell_has(tmp_path):
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", GRID)))
    clean = [c for c in cells if c.noise == "clean"]
    noisy = [c for c in cells if c.noise.startswith("replace")]
    assert clean and noisy
    assert select(cells, ["noise=none"]) == clean == select(cells, ["noise=clean"])
    assert select(cells, ["noise=replace"]) == noisy
    with pytest.raises(ValueError, match="sasrekk matches no cell; the grid's backbone values: "):
        select(cells, ["backbone=sasrekk"])
    assert select(cells, ["backbone=gru4rec", "noise=none", "seed=0,1"])  # filters compose


def test_select_filters_on_denoiser_params_and_lists_the_values_the_grid_has(tmp_path):
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", GRID)))
    picked = select(cells, ["ratio=0.05"])
    assert picked == [c for c in cells if c.params == {"ratio": 0.05}]
    with pytest.raises(ValueError, match="0.5 matches no cell; the grid's ratio values: 0.05, 0.1"):
        select(cells, ["ratio=0.5"])


def test_extra_overrides_change_run_ids_but_wandb_group_does_not(tmp_path):
    spec = load_grid(write_grid(tmp_path / "g.yaml", GRID))
    base = [c.run_id for c in expand(spec)]
    assert [c.run_id for c in expand(spec, ["train.lr=0.01"])] != base
    spec.name = "renamed"
    assert [c.run_id for c in expand(spec)] == base


def test_denoiser_overrides_apply_only_to_that_denoisers_cells(tmp_path):
    text = GRID + "denoiser_overrides:\n  semantic-outlier: [train.prefix_epoch_share=0.25]\n"
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", text)))
    plain = expand(load_grid(write_grid(tmp_path / "p.yaml", GRID)))
    outlier = [c for c in cells if c.denoiser == "semantic-outlier"]
    assert outlier and all(c.compose().train.prefix_epoch_share == 0.25 for c in outlier)
    assert all(c.compose().train.prefix_epoch_share == 1.0 for c in cells if c.denoiser == "none")
    same = {c.run_id for c in plain} & {c.run_id for c in cells}
    assert same == {c.run_id for c in cells if c.denoiser == "none"}  # only the overridden cells get new ids


def test_backbone_overrides_apply_only_to_that_backbones_cells_and_show_in_the_label(tmp_path):
    text = GRID + "backbone_overrides:\n  gru4rec: [train.patience=20]\n"
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", text)))
    plain = expand(load_grid(write_grid(tmp_path / "p.yaml", GRID)))
    gru = [c for c in cells if c.backbone == "gru4rec"]
    assert gru and all(c.compose().train.patience == 20 for c in gru)
    assert all(c.compose().train.patience == 2 for c in cells if c.backbone != "gru4rec")  # the smoke profile's
    assert {c.run_id for c in cells} - {c.run_id for c in plain} == {c.run_id for c in gru}
    assert all("train.patience=20" in c.label for c in gru)


def test_a_command_line_override_of_a_backbone_override_shows_its_own_value_in_the_label(tmp_path):
    text = GRID + "backbone_overrides:\n  gru4rec: [train.patience=20]\n"
    gru = [c for c in expand(load_grid(write_grid(tmp_path / "g.yaml", text)), ["train.patience=10"])
           if c.backbone == "gru4rec"]
    assert gru and all(c.compose().train.patience == 10 for c in gru)
    assert all("train.patience=10" in c.label and "train.patience=20" not in c.label for c in gru)


def test_include_overrides_apply_only_to_the_included_cells(tmp_path):
    text = GRID.replace("{backbone: caser, denoiser: none, noise: {kind: none}}",
                        "{backbone: caser, denoiser: none, noise: {kind: none}, overrides: [train.prefix_epoch_share=0.1]}")
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", text)))
    plain = expand(load_grid(write_grid(tmp_path / "p.yaml", GRID)))
    caser = [c for c in cells if c.backbone == "caser"]
    assert len(caser) == 2 and all(c.compose().train.prefix_epoch_share == 0.1 for c in caser)
    assert all(c.compose().train.prefix_epoch_share == 1.0 for c in cells if c.backbone != "caser")
    changed = {c.run_id for c in cells} - {c.run_id for c in plain}
    assert changed == {c.run_id for c in caser}  # the other cells keep their run ids
    # the cells are told apart in listings: the included overrides are part of the label
    assert all(c.label.endswith("| caser | none(train.prefix_epoch_share=0.1) | seed 0") for c in caser if c.seed == 0)


@pytest.mark.parametrize("text, key", [
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0]\nbogus: 1\n", "bogus"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [nonesuch]\nseeds: [0]\n", "denoisers[0]"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [said]\nseeds: [0]\n"
     "denoiser_params: {said: {alpha: [1]}}\n", "denoiser_params.said.alpha"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [zero]\n", "seeds"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [said]\nseeds: [0]\n"
     "denoiser_overrides: {said: train.lr}\n", "denoiser_overrides.said"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0]\n"
     "backbone_overrides: {gru4rec: [train.lr]}\n", "backbone_overrides.gru4rec"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0]\n"
     "backbone_overrides: {lstm: [train.lr=0.1]}\n", "backbone_overrides.lstm"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0]\nnoise: [{kind: loud}]\n", "noise[0]"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0]\n"
     "include: [{backbone: caser, denoiser: none, overrides: train.lr}]\n", "include[0].overrides"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0]\n"
     "exclude: [{backbone: caser, overrides: [train.lr=0.1]}]\n", "exclude[0]"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0, 1]\ntune_seeds: [2]\n", "tune_seeds"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0, 1]\ntune_seeds: [1, 0]\n",
     "tune_seeds"),
    ("datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0, 1]\ntune_seeds: 0\n", "tune_seeds"),
])
def test_load_grid_errors_name_the_file_and_key(tmp_path, text, key):
    path = write_grid(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_tuning_on_the_training_loss_is_refused_with_the_file_named(tmp_path):
    path = write_grid(tmp_path / "loss.yaml", "datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [said]\n"
                      "seeds: [0, 1]\ntune_seeds: [0]\ndenoiser_params: {said: {beta: [0.1, 0.2]}}\n"
                      "overrides: [train.monitor=train/loss]\n")
    with pytest.raises(ConfigError, match="a choice needs a validation metric") as err:
        expand(load_grid(path))
    assert str(path) in str(err.value)


def test_shipped_grids_are_valid_and_every_dataset_grid_covers_every_runnable_denoiser():
    specs = {p.stem: load_grid(p) for p in sorted((REPO / "configs" / "grids").glob("*.yaml"))}
    assert {"smoke", "ml100k", "beauty"} <= set(specs)
    ml = specs["ml100k"]
    assert ml.backbones == ["gru4rec", "caser", "sasrec", "bert4rec"] and ml.seeds == [0, 1, 2]
    assert set(ml.denoisers) == set(DENOISERS.names()) - {"llm4dsr"}  # llm4dsr needs user LLM weights
    assert [n["kind"] for n in ml.noise] == ["none", "replace"]
    for name in ("beauty", "toys", "sports", "game"):  # Beauty's CL4SRec comes through include entries
        cells = expand(specs[name])
        for backbone in ml.backbones:
            assert {c.denoiser for c in cells if c.backbone == backbone} == set(ml.denoisers), (name, backbone)
        assert {c.noise for c in cells} == {"clean", "replace α=0.1"} and {c.seed for c in cells} == {0, 1, 2}
    assert len(expand(specs["smoke"])) == 48


# ------------------------------------------------------------------ resumability and failures
def tiny_cells(tmp_path, denoisers="[none, semantic-outlier]", seeds="[0, 1]"):
    text = (f"name: unit\nprofile: smoke\ndatasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: {denoisers}\n"
            f"seeds: {seeds}\n")
    return expand(load_grid(write_grid(tmp_path / "tiny.yaml", text)))


def test_finished_cells_are_skipped_and_only_missing_cells_run(tmp_path, fake_env):
    cells = tiny_cells(tmp_path)
    first = run(cells[:2], tmp_path)
    assert sorted(first.ok) == sorted(c.run_id for c in cells[:2])
    second = run(cells, tmp_path)
    assert second.skipped_done == 2 and sorted(second.ran) == sorted(c.run_id for c in cells[2:])
    assert sorted(fake_env()) == sorted(c.run_id for c in cells)  # each cell executed exactly once
    store = ResultStore(tmp_path / "store")
    assert store.done_ids() == {c.run_id for c in cells}
    row = store.frame().filter(store.frame()["run_id"] == cells[0].run_id).to_dicts()[0]
    assert row["grid"] == "unit" and row["test_ndcg@10"] == pytest.approx(0.1) and row["valid_ndcg@10"] == pytest.approx(0.1)


@pytest.mark.parametrize("kind, error", [("nan", "FloatingPointError: non-finite training loss"),
                                         ("oom", "MemoryError: out of memory")])
def test_failed_cell_is_recorded_others_continue_and_it_is_retried(tmp_path, fake_env, monkeypatch, kind, error):
    cells = tiny_cells(tmp_path)
    monkeypatch.setenv("FAKE_FAIL", f"semantic-outlier:{kind}")
    summary = run(cells, tmp_path)
    bad = {c.run_id for c in cells if c.denoiser == "semantic-outlier"}
    assert set(summary.failed) == bad and len(summary.ok) == len(cells) - len(bad)
    store = ResultStore(tmp_path / "store")
    assert set(store.failed()) == bad and all(e.startswith(error) for e in store.failed().values())
    row = store.frame("failed").to_dicts()[0]
    assert row["denoiser.name"] == "semantic-outlier" and row["noise_setting"] == "clean"

    skipped = run(cells, tmp_path, skip_failed=True)
    assert skipped.ran == [] and skipped.skipped_failed == len(bad)
    monkeypatch.delenv("FAKE_FAIL")
    retried = run(cells, tmp_path)
    assert sorted(retried.ran) == sorted(bad)  # failures retried, successes replace the failure record
    assert store.statuses() == {c.run_id: "ok" for c in cells}


def write_untitled_ml100k(root: Path) -> Path:
    """An ML-100K-named dataset of 30 users x 8 interactions with no item file, hence no item text."""
    import random

    rng = random.Random(0)
    rows = [f"{u}\t{rng.randint(1, 20)}\t4\t{1000 + t}" for u in range(1, 31) for t in range(8)]
    (root / "ml-100k").mkdir(parents=True)
    (root / "ml-100k" / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "\n".join(rows) + "\n")
    return root


def test_a_text_method_on_data_without_text_is_recorded_not_applicable_and_never_retried(tmp_path, capsys):
    from benchmark.cli import main

    root = write_untitled_ml100k(tmp_path / "data")
    grid = write_grid(tmp_path / "untitled.yaml", f"name: untitled\nprofile: smoke\noverrides: [dataset.root={root}]\n"
                      "datasets: [ml-100k]\nbackbones: [gru4rec]\ndenoisers: [said]\nseeds: [0, 1]\n")
    cells = expand(load_grid(grid))
    args = ["grid", str(grid), "--store", str(tmp_path / "store"), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 0  # the real executor ran: nothing failed, so the grid succeeds
    out = capsys.readouterr().out
    assert "ran 2 cells (0 ok, 0 failed, 2 not applicable)" in out
    store = ResultStore(tmp_path / "store")
    assert store.statuses() == {c.run_id: "not_applicable" for c in cells} and store.failed() == {}
    errors = store.frame("not_applicable")["error"].to_list()
    assert all(e.startswith("NotApplicableError: said needs item text, but dataset 'ml-100k' has none") for e in errors)

    again = run_grid(cells, tmp_path / "store", tmp_path / "runs", progress=False, echo=lambda s: None)
    assert again.ran == [] and again.skipped_not_applicable == 2 and again.failed == {}
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(f"{c.run_id}  n/a " in out for c in cells) and "0 to run" in out and "2 cells not applicable" in out
    assert main(["results", "--store", str(tmp_path / "store"), "--not-applicable"]) == 0
    assert "needs item text" in capsys.readouterr().out


def test_a_not_applicable_cell_runs_again_once_its_data_changes(tmp_path, capsys):
    from benchmark.cli import main
    from benchmark.data.build import clear_cache

    root = write_untitled_ml100k(tmp_path / "data")
    grid = write_grid(tmp_path / "untitled.yaml", f"name: untitled\nprofile: smoke\noverrides: [dataset.root={root}]\n"
                      "datasets: [ml-100k]\nbackbones: [gru4rec]\ndenoisers: [said]\nseeds: [0]\n")
    (cell,) = expand(load_grid(grid))
    args = ["grid", str(grid), "--store", str(tmp_path / "store"), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 0
    store = ResultStore(tmp_path / "store")
    untitled = store.not_applicable_digests()[cell.run_id]
    assert untitled.startswith("sha256:")
    assert main([*args, "--dry-run"]) == 0
    assert f"{cell.run_id}  n/a " in capsys.readouterr().out  # same data: not retried

    # the user adds titles: same run id, other data
    (root / "ml-100k" / "ml-100k.item").write_text(
        "item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tfilm number {i}\n" for i in range(1, 21)))
    clear_cache()
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{cell.run_id}  todo " in out and "1 cells recorded as not applicable were recorded on other data" in out
    assert main(args) == 0
    assert store.statuses() == {cell.run_id: "ok"}
    assert store.frame("ok")["data_digest"].to_list()[0] not in (None, untitled)


def test_data_change_check_loads_each_dataset_once_for_its_clean_and_noisy_cells(tmp_path, monkeypatch):
    import benchmark.data.build as build
    from benchmark.cli import main
    from benchmark.grid import data_changed_ids

    root = write_untitled_ml100k(tmp_path / "data")
    grid = write_grid(tmp_path / "untitled.yaml", f"name: untitled\nprofile: smoke\noverrides: [dataset.root={root}]\n"
                      "datasets: [ml-100k]\nnoise: [{kind: none}, {kind: replace, alpha: 0.2}]\n"
                      "backbones: [gru4rec]\ndenoisers: [said]\nseeds: [0]\n")
    cells = expand(load_grid(grid))
    assert main(["grid", str(grid), "--store", str(tmp_path / "store"), "--runs-dir", str(tmp_path / "runs"),
                 "--no-progress"]) == 0
    store = ResultStore(tmp_path / "store")
    assert len(set(store.not_applicable_digests().values())) == 1  # the digest is of the data before noise

    loaded = []
    real = build.data_digest_of
    monkeypatch.setattr(build, "data_digest_of", lambda cfg: loaded.append(cfg) or real(cfg))
    assert data_changed_ids(cells, store) == set()
    assert len(loaded) == 1 and loaded[0]["noise"]["kind"] == "none"


def test_plan_splits_done_failed_and_todo(tmp_path):
    cells = tiny_cells(tmp_path)
    statuses = {cells[0].run_id: "ok", cells[1].run_id: "failed"}
    p = plan(cells, statuses)
    assert [c.run_id for c in p.todo] == [c.run_id for c in cells[1:]]
    p = plan(cells, statuses, skip_failed=True)
    assert [c.run_id for c in p.todo] == [c.run_id for c in cells[2:]] and p.skipped_failed == [cells[1]]


def _as_stored_before_text_encoder_ids(store: ResultStore, rid: str) -> None:
    """Rewrite a stored row the way rows were written before they named their text encoders."""
    row = pl.read_parquet(store.path(rid)).drop("text_encoders").to_dicts()[0]
    store.write(row)


def test_redo_stale_text_reruns_only_text_rows_stored_without_encoder_ids_and_replaces_them(
        tmp_path, fake_env, monkeypatch):
    cells = tiny_cells(tmp_path, seeds="[0]")
    text = next(c for c in cells if "semantic-outlier" in c.label)
    plain = next(c for c in cells if c is not text)
    run(cells, tmp_path)
    store = ResultStore(tmp_path / "store")
    assert store.stale_text_ids() == set()  # new rows name their text encoders
    for rid in (plain.run_id, text.run_id):
        _as_stored_before_text_encoder_ids(store, rid)
    assert store.stale_text_ids() == {text.run_id}  # a plain run has no text vectors
    assert run(cells, tmp_path).ran == []  # stale rows still count as done
    old_result = tmp_path / "runs" / text.run_id / "result.json"  # the finished run directory of the old row
    old_result.parent.mkdir(parents=True, exist_ok=True)
    old_result.write_text(json.dumps({"run_id": text.run_id, "status": "ok"}))
    monkeypatch.setenv("FAKE_FAIL", "semantic-outlier:nan")
    failed = run(cells, tmp_path, redo_stale_text=True)
    assert list(failed.failed) == [text.run_id] and store.status(text.run_id) == "ok"  # the old row stays
    monkeypatch.delenv("FAKE_FAIL")
    again = run(cells, tmp_path, redo_stale_text=True)
    assert again.ran == [text.run_id] and fake_env()[-1] == f"{text.run_id}:force"
    assert store.stale_text_ids() == set() and store.status(text.run_id) == "ok"
    assert run(cells, tmp_path, redo_stale_text=True).ran == []


def test_worker_processes_record_a_crashing_cell_without_failing_its_neighbours(tmp_path, fake_env, monkeypatch):
    cells = tiny_cells(tmp_path, denoisers="[none, said]", seeds="[0, 1]")
    monkeypatch.setenv("FAKE_FAIL", "said:crash")
    summary = run(cells, tmp_path, workers=2)
    crashed = {c.run_id for c in cells if c.denoiser == "said"}
    assert set(summary.failed) == crashed
    assert all("WorkerCrashed" in e for e in summary.failed.values())
    assert ResultStore(tmp_path / "store").done_ids() == {c.run_id for c in cells} - crashed


def test_dry_run_lists_cells_and_their_status(tmp_path, fake_env, capsys):
    from benchmark.cli import main

    grid = write_grid(tmp_path / "tiny.yaml", "name: unit\nprofile: smoke\ndatasets: [synthetic]\n"
                      "backbones: [gru4rec]\ndenoisers: [none]\nseeds: [0, 1]\n")
    cells = expand(load_grid(grid))
    run(cells[:1], tmp_path)
    assert main(["grid", str(grid), "--store", str(tmp_path / "store"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{cells[0].run_id}  done" in out and f"{cells[1].run_id}  todo" in out
    assert "2 cells; 1 done, 0 running in another process, 0 failed (will retry), 1 to run" in out
    assert fake_env() == [cells[0].run_id]  # the dry run executed nothing


def test_dry_run_estimates_time_from_finished_runs_of_the_same_dataset_backbone_and_denoiser(tmp_path, fake_env, capsys):
    from benchmark.cli import main
    from benchmark.grid import TimeEstimate, estimate_seconds

    cells = tiny_cells(tmp_path)  # seed 0: none, semantic-outlier; seed 1: none, semantic-outlier
    assert main(["grid", str(tmp_path / "tiny.yaml"), "--store", str(tmp_path / "store"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "no finished runs with the same dataset, backbone, denoiser, protocol, training instances" in out
    run(cells[:1], tmp_path)  # the fake run reports fit_seconds = 1.0
    expected = estimate_seconds(cells[1:], ResultStore(tmp_path / "store").frame("ok"))
    assert expected == {cells[2].run_id: TimeEstimate(1.0, 1)}  # only the other 'none' cell has a finished twin
    assert main(["grid", str(tmp_path / "tiny.yaml"), "--store", str(tmp_path / "store"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{cells[2].run_id}  todo     {cells[2].label}  ~1 s" in out and "~1 s for 1 of 3" in out


def test_time_estimate_scales_the_plain_run_by_the_denoisers_cost_ratio_seen_under_the_same_setting():
    from benchmark.grid import Cell, TimeEstimate, estimate_seconds

    def row(dataset, backbone, denoiser, seconds, protocol="benchmark", instances="auto", monitor=None, epochs=300):
        return {"dataset.name": dataset, "backbone.name": backbone, "denoiser.name": denoiser, "protocol": protocol,
                "train.train_instances": instances, "train.monitor": monitor, "train.max_epochs": epochs,
                "data_seconds": 0.0,
                "denoise_seconds": None, "fit_seconds": seconds}

    frame = pl.DataFrame([
        row("ml-100k", "sasrec", "none", 100.0), row("ml-100k", "sasrec", "hsd", 500.0),  # hsd costs 5x plain
        row("ml-100k", "sasrec", "hsd", 9.0, "iadsr-paper", "last_only"),  # no plain twin: no ratio from it
        row("beauty", "sasrec", "none", 200.0), row("beauty", "sasrec", "none", 400.0),
        row("beauty", "sasrec", "none", 10.0, "iadsr-paper", "last_only"), row("beauty", "caser", "none", 100.0),
        row("beauty", "caser", "none", 900.0, monitor="train/loss"),  # stopping on the loss runs longer
        row("beauty", "caser", "none", 2500.0, monitor="train/loss", epochs=1000)])  # and longer with more epochs

    def cell(backbone, denoiser, *overrides):  # no setting given: estimate_seconds composes the config
        return Cell(0, f"{backbone}-{denoiser}-{len(overrides)}", "beauty", backbone, denoiser, 0, "clean", {},
                    None, list(overrides))

    cells = [cell("sasrec", "none"), cell("sasrec", "none", "protocol=iadsr-paper", "train.train_instances=last_only"),
             cell("sasrec", "hsd"), cell("caser", "hsd"), cell("gru4rec", "hsd"), cell("sasrec", "said"),
             cell("caser", "none", "train.monitor=train/loss"),
             cell("caser", "none", "train.monitor=train/loss", "train.max_epochs=1000")]
    assert estimate_seconds(cells, frame) == {
        "sasrec-none-0": TimeEstimate(300.0, 2),  # median of the two plain benchmark runs
        "sasrec-none-2": TimeEstimate(10.0, 1),  # the one-instance preset's run, not the benchmark ones
        "sasrec-hsd-0": TimeEstimate(1500.0, 3, scaled=True),  # 300 s x 5
        "caser-hsd-0": TimeEstimate(500.0, 2, scaled=True),  # no caser ratio: sasrec's
        "caser-none-1": TimeEstimate(900.0, 1),  # a row without train.monitor stopped on validation
        "caser-none-2": TimeEstimate(2500.0, 1),  # the 1000-epoch budget's run, not the 300-epoch one
    }  # gru4rec: no plain run on beauty; said: no ratio anywhere


def test_cell_setting_comes_from_the_resolved_config_including_a_denoisers_own_training_instances(tmp_path):
    text = GRID.replace("denoisers: [none, semantic-outlier]", "denoisers: [none, iadsr-reference]")
    cells = {(c.backbone, c.denoiser): c for c in expand(load_grid(write_grid(tmp_path / "g.yaml", text)))}
    assert cells["gru4rec", "none"].setting == ("benchmark", "auto", "valid/ndcg@10", "2")  # the smoke profile's budget
    # iadsr-reference sets train.train_instances in its own config, not through a grid override
    assert cells["gru4rec", "iadsr-reference"].setting == ("benchmark", "last_only", "valid/ndcg@10", "2")


# ------------------------------------------------------------------ one process per run directory
def test_cell_locked_by_another_process_is_skipped_and_not_recorded(tmp_path, fake_env, capsys):
    from benchmark.cli import main
    from benchmark.runlock import run_lock

    cells = tiny_cells(tmp_path)
    grid = tmp_path / "tiny.yaml"
    with run_lock(tmp_path / "runs" / cells[1].run_id):
        assert main(["grid", str(grid), "--store", str(tmp_path / "store"), "--runs-dir", str(tmp_path / "runs"),
                     "--dry-run"]) == 0
        assert f"{cells[1].run_id}  running" in capsys.readouterr().out
        summary = run(cells, tmp_path)
    assert list(summary.busy) == [cells[1].run_id] and cells[1].run_id not in summary.ran
    assert cells[1].run_id not in fake_env()  # never started
    assert ResultStore(tmp_path / "store").statuses() == {c.run_id: "ok" for c in cells if c is not cells[1]}
    assert run(cells, tmp_path).ran == [cells[1].run_id]  # lock released: the next invocation runs it


def test_cell_locked_after_planning_comes_back_busy_without_a_failure_record(tmp_path, fake_env, monkeypatch):
    import benchmark.runlock
    from benchmark.runlock import run_lock

    cells = tiny_cells(tmp_path)
    monkeypatch.setattr(benchmark.runlock, "lock_holder", lambda directory: None)  # the plan sees no lock
    with run_lock(tmp_path / "runs" / cells[0].run_id):
        summary = run(cells, tmp_path)
    assert list(summary.busy) == [cells[0].run_id] and "already running in process" in summary.busy[cells[0].run_id]
    assert summary.failed == {} and cells[0].run_id not in ResultStore(tmp_path / "store").statuses()


def test_cell_stored_by_another_process_after_planning_keeps_its_row_and_is_reported(tmp_path, fake_env, monkeypatch):
    import benchmark.grid
    from benchmark.store import result_row

    cells = tiny_cells(tmp_path)
    real_plan = benchmark.grid.plan

    def plan_then_other_grid_stores(*args, **kw):
        p = real_plan(*args, **kw)
        rid = cells[0].run_id  # another grid finishes this cell right after our plan was made
        row = result_row(_fake_result(cells[0].compose(), rid), "other-grid", "other.yaml", "bench grid other.yaml")
        ResultStore(tmp_path / "store").write(row)
        return p

    monkeypatch.setattr(benchmark.grid, "plan", plan_then_other_grid_stores)
    summary = run(cells, tmp_path)
    assert summary.stored_elsewhere == [cells[0].run_id] and cells[0].run_id not in summary.ran
    assert sorted(summary.ran) == sorted(c.run_id for c in cells[1:])
    stored = ResultStore(tmp_path / "store").frame()
    assert stored.filter(pl.col("run_id") == cells[0].run_id)["grid"].to_list() == ["other-grid"]
    assert ResultStore(tmp_path / "store").status(cells[0].run_id) == "ok"
    assert ResultStore(tmp_path / "store").status("no-such-run") is None


# ------------------------------------------------------------------ kill and resume (real tiny cells)
def _grid_cmd(grid: Path, tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "benchmark.cli", "grid", str(grid), "--store", str(tmp_path / "store"),
            "--runs-dir", str(tmp_path / "runs"), "--no-progress"]


def test_a_stop_signal_turned_into_an_error_by_library_code_still_stops_the_grid(tmp_path, fake_env, monkeypatch):
    cells = tiny_cells(tmp_path)  # seed 0: none, semantic-outlier (swallows the SIGTERM); seed 1: ...
    monkeypatch.setenv("FAKE_FAIL", "semantic-outlier:swallow")
    summary = run(cells, tmp_path)
    assert summary.interrupted and summary.ran == [cells[0].run_id] and summary.failed == {}
    assert ResultStore(tmp_path / "store").statuses() == {cells[0].run_id: "ok"}  # no failure row for the stop
    assert fake_env() == [cells[0].run_id, cells[1].run_id]  # nothing started after the stop


def test_sigterm_keeps_the_store_consistent_and_the_rerun_finishes_only_missing_cells(tmp_path):
    grid = write_grid(tmp_path / "kill.yaml", "name: kill\nprofile: smoke\noverrides: [" + ", ".join(TINY) + "]\n"
                      "datasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0, 1, 2, 3]\n")
    cells = expand(load_grid(grid))
    store = ResultStore(tmp_path / "store")
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_grid_cmd(grid, tmp_path), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while not store.files() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.files(), "the first cell was never stored"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    stored = store.done_ids()
    assert proc.returncode == 130, out
    assert "interrupted" in out and 1 <= len(stored) < len(cells)
    assert not list((tmp_path / "store").glob(".*"))  # no temporary file left behind
    assert set(store.statuses().values()) == {"ok"}

    again = subprocess.run(_grid_cmd(grid, tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    ran = next(line for line in again.stdout.splitlines() if line.startswith("ran: "))[5:].split(",")
    assert sorted(ran) == sorted({c.run_id for c in cells} - stored)
    assert store.done_ids() == {c.run_id for c in cells}


def test_overrides_may_follow_options_on_the_command_line():
    from benchmark.cli import build_parser, parse

    parser = build_parser()
    args = parse(parser, ["grid", "g.yaml", "profile=quick", "--only", "seed=0", "train.lr=0.01", "--dry-run"])
    assert args.overrides == ["profile=quick", "train.lr=0.01"] and args.only == ["seed=0"] and args.dry_run
    assert parse(parser, ["run", "--backbone", "gru4rec", "train.lr=0.1", "--seed", "1", "dataset.max_len=32"]).overrides == [
        "train.lr=0.1", "dataset.max_len=32"]
    with pytest.raises(SystemExit):
        parse(parser, ["grid", "g.yaml", "--only", "seed=0", "--no-such-option"])


def threads_execute(cfg, runs_dir=None, resume=False):
    """A fake executor that logs the torch thread count it runs with, then its run id."""
    import torch

    from benchmark.config import run_id

    with open(os.environ["FAKE_LOG"], "a") as fh:
        fh.write(f"threads={torch.get_num_threads()}\n")
    return _fake_result(cfg, run_id(cfg))


def test_threads_option_sets_the_torch_threads_of_every_cell(tmp_path, fake_env):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what a cell would inherit without the option
    cells = select(expand(load_grid(write_grid(tmp_path / "g.yaml", GRID))), ["backbone=gru4rec", "seed=0",
                                                                                "noise=clean", "denoiser=none"])
    try:
        run_grid(cells, tmp_path / "store", tmp_path / "runs", grid_name="unit",
                 executor="tests.test_grid:threads_execute", progress=False, echo=lambda s: None, torch_threads=1)
    finally:
        torch.set_num_threads(before)
    assert fake_env()[0] == "threads=1" and len(fake_env()) == 2  # the thread line, then the run id


@pytest.mark.parametrize(("override", "max_epochs"), [("profile=null", 300), ("profile=quick", 30)])
def test_a_profile_override_replaces_the_grid_profile(tmp_path, override, max_epochs):
    """The README's `bench grid FILE profile=null` (the full protocol) used to keep the grid's
    own profile: the explicit profile won over the override, and the same run ids came out."""
    spec = load_grid(write_grid(tmp_path / "g.yaml", GRID))
    plain, changed = expand(spec), expand(spec, [override])
    assert [c.compose().train.max_epochs for c in changed] == [max_epochs] * len(changed)
    assert {c.run_id for c in plain}.isdisjoint({c.run_id for c in changed})


def test_no_progress_silences_the_cells_bars_and_keeps_their_run_ids(tmp_path, monkeypatch):
    import benchmark.grid
    from benchmark.cli import main

    grid = write_grid(tmp_path / "g.yaml", GRID.replace("profile: smoke\n", ""))
    launched: dict[bool, list] = {}

    class Stop(Exception):
        pass

    def fake_run_grid(cells, *args, progress, **kwargs):
        launched[progress] = cells
        raise Stop

    monkeypatch.setattr(benchmark.grid, "run_grid", fake_run_grid)
    for flags in ([], ["--no-progress"]):
        with pytest.raises(Stop):
            main(["grid", str(grid), "--store", str(tmp_path / "store"), *flags])
    loud, quiet = launched[True], launched[False]
    assert [c.run_id for c in quiet] == [c.run_id for c in loud]
    assert all(c.compose().logging.progress for c in loud)
    assert not any(c.compose().logging.progress for c in quiet)
