"""`bench reproduce`: a stored cell re-run from its recorded config gives the stored numbers."""
from __future__ import annotations

import json

import polars as pl
import pytest

from benchmark import cli
from benchmark.config import compose
from benchmark.run import execute
from benchmark.store import ResultStore, result_row

TINY = ["dataset.synthetic.n_users=40", "dataset.synthetic.n_items=25", "dataset.synthetic.min_len=6",
        "dataset.synthetic.max_len=10", "dataset.max_len=8", "dataset.noise.kind=replace", "dataset.noise.alpha=0.1",
        "train.batch_size=32", "train.max_epochs=2", "logging.csv=false", "logging.wandb=disabled"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store holding one finished cell (GRU4Rec + HSD on noisy synthetic data)."""
    root = tmp_path_factory.mktemp("reproduce")
    cfg = compose(backbone="gru4rec", denoiser="hsd", dataset="synthetic", profile="smoke", overrides=TINY)
    result = execute(cfg, runs_dir=root / "runs")
    store = ResultStore(root / "store")
    store.write(result_row(result.to_json(), grid="fixture"))
    return store, result.run_id


def _rewrite(store: ResultStore, rid: str, **changes) -> None:
    row = pl.read_parquet(store.path(rid)).to_dicts()[0]
    row.update(changes)
    store.write(row)


def test_a_stored_cell_rerun_from_its_config_matches_every_outcome_column(stored, tmp_path, capsys):
    store, rid = stored
    code = cli.main(["reproduce", rid, "--store", str(store.directory), "--runs-dir", str(tmp_path / "rerun")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"run {rid}: reproduced" in out and "1 of 1 runs reproduced" in out
    assert (tmp_path / "rerun" / rid / "result.json").exists()  # trained again, in the scratch directory


def test_a_stored_metric_that_the_rerun_does_not_give_is_reported_with_both_values(stored, tmp_path, capsys):
    store, rid = stored
    copy = ResultStore(tmp_path / "store")
    copy.write(pl.read_parquet(store.path(rid)).to_dicts()[0])
    true_value = pl.read_parquet(store.path(rid))["test_ndcg@10"][0]
    _rewrite(copy, rid, **{"test_ndcg@10": true_value + 0.01})
    code = cli.main(["reproduce", rid, "--store", str(copy.directory), "--runs-dir", str(tmp_path / "rerun")])
    out = capsys.readouterr().out
    assert code == 1
    assert "NOT reproduced; 1 of" in out
    assert f"test_ndcg@10: stored {true_value + 0.01!r}, rerun {true_value!r}" in out


def test_a_stored_row_made_on_other_data_is_reported_with_both_data_digests(stored, tmp_path, capsys):
    store, rid = stored
    copy = ResultStore(tmp_path / "store")
    copy.write(pl.read_parquet(store.path(rid)).to_dicts()[0])
    now = pl.read_parquet(store.path(rid))["data_digest"][0]
    assert now.startswith("sha256:")
    _rewrite(copy, rid, data_digest="sha256:0000000000000000")
    cli.main(["reproduce", rid, "--store", str(copy.directory), "--runs-dir", str(tmp_path / "rerun")])
    out = capsys.readouterr().out
    assert f"the data differs from the stored run's: data digest sha256:0000000000000000 then, {now} now" in out


def test_a_difference_on_another_cpu_is_reported_with_both_cpu_models(stored, tmp_path, capsys):
    from benchmark.provenance import cpu_model

    store, rid = stored
    row = pl.read_parquet(store.path(rid)).to_dicts()[0]
    assert row["cpu"] == cpu_model()  # rows record the CPU that finished them
    copy = ResultStore(tmp_path / "store")
    copy.write(row)
    _rewrite(copy, rid, cpu="Elsewhere CPU 9000", **{"test_ndcg@10": row["test_ndcg@10"] + 0.01})
    assert cli.main(["reproduce", rid, "--store", str(copy.directory), "--runs-dir", str(tmp_path / "rerun")]) == 1
    out = capsys.readouterr().out
    assert f"the stored run finished on CPU 'Elsewhere CPU 9000', this rerun on '{cpu_model()}'" in out


def test_a_stored_config_that_no_longer_hashes_to_its_run_id_is_refused_before_training(stored, tmp_path, capsys):
    store, rid = stored
    copy = ResultStore(tmp_path / "store")
    row = pl.read_parquet(store.path(rid)).to_dicts()[0]
    config = json.loads(row["config_json"])
    config["train"]["lr"] = 0.5
    copy.write({**row, "config_json": json.dumps(config)})
    code = cli.main(["reproduce", rid, "--store", str(copy.directory), "--runs-dir", str(tmp_path / "rerun")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"run {rid}: its stored config now hashes to" in err
    assert not (tmp_path / "rerun").exists()


def test_an_unknown_run_id_names_the_missing_store_file(stored, tmp_path, capsys):
    store, _ = stored
    code = cli.main(["reproduce", "0123456789ab", "--store", str(store.directory)])
    err = capsys.readouterr().err
    assert code == 2 and "run 0123456789ab: no " in err and "0123456789ab.parquet" in err


def test_a_text_row_stored_before_rows_named_their_encoders_is_explained_when_it_differs():
    from benchmark.reproduce import STALE_TEXT_NOTE, Comparison, Difference, render

    differs = Comparison("abc", ["test_ndcg@10"], [Difference("test_ndcg@10", 0.0415, 0.0399)], [], [])
    assert STALE_TEXT_NOTE in render(differs, stale_text=True)
    assert STALE_TEXT_NOTE not in render(differs)
    same = Comparison("abc", ["test_ndcg@10"], [], [], [])
    assert STALE_TEXT_NOTE not in render(same, stale_text=True)


def test_a_rerun_trains_with_the_thread_count_of_the_stored_run_and_restores_it(stored, tmp_path, capsys, monkeypatch):
    import torch

    import benchmark.run

    store, rid = stored
    copy = ResultStore(tmp_path / "store")
    copy.write({**pl.read_parquet(store.path(rid)).to_dicts()[0], "torch_threads": 1.0})
    seen = []
    real_execute = benchmark.run.execute

    def recording_execute(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(benchmark.run, "execute", recording_execute)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cli.main(["reproduce", rid, "--store", str(copy.directory), "--runs-dir", str(tmp_path / "rerun")])
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert f"run {rid}: " in (out := capsys.readouterr().out) and "(rerun with 1 torch thread, as the stored run)" in out
