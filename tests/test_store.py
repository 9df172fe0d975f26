"""Result store: row layout, atomic writes, combined reads, and `bench results` queries."""
from __future__ import annotations

import threading

import polars as pl
import pytest

from benchmark.commands.results import query
from benchmark.store import ResultStore, failure_row, flatten, result_row


def run_result(run_id="r1", seed=0, denoiser="semantic-outlier", ndcg=0.2, detection=True) -> dict:
    """A dict shaped like RunResult.to_json()."""
    config = {"seed": seed, "dataset": {"name": "synthetic", "max_len": 20, "text_columns": ["title"],
                                        "noise": {"kind": "replace", "alpha": 0.1}},
              "backbone": {"name": "gru4rec", "hidden": 64}, "denoiser": {"name": denoiser, "ratio": 0.1, "enc": {}},
              "train": {"lr": 0.001}, "eval": {"ks": [5, 10]}, "logging": {"wandb": "disabled"}}
    det = {"precision": 0.9, "recall": 0.5, "f1": 0.643, "flag_rate": 0.1, "random_f1": 0.14, "labels": "injected",
           "buckets": [{"bucket": 0, "removal_ratio": 0.05, "noise_share": 0.1},
                       {"bucket": 1, "removal_ratio": 0.2, "noise_share": 0.3}],
           "insertion": {"recall": 0.25, "precision": 0.5}} if detection else None
    return {"run_id": run_id, "config": config, "protocol": {"split": "loo", "seed": seed},
            "valid": {"ndcg@10": ndcg + 0.01}, "test": {"hr@10": 2 * ndcg, "ndcg@10": ndcg},
            "test_optimistic": {"ndcg@10": ndcg + 0.001}, "curve": [{"epoch": 0}],
            "timings": {"fit_seconds": 3.0, "epoch_seconds_mean": 1.5}, "detection": det, "denoiser_report": None,
            "mode": "data", "best_epoch": 0, "epochs": 2, "versions": {"torch": "2.13", "python": "3.11"},
            "git_commit": "abc123", "status": "ok"}


def test_flatten_uses_dotted_keys_and_json_for_lists_and_empty_dicts():
    assert flatten({"a": {"b": 1, "c": [1, 2], "d": {}}, "e": None}) == {"a.b": 1, "a.c": "[1, 2]", "a.d": "{}", "e": None}


def test_result_row_holds_config_metrics_detection_timings_versions_and_provenance():
    row = result_row(run_result(), grid="g", grid_file="configs/grids/g.yaml", command="bench grid configs/grids/g.yaml")
    expected = {
        "run_id": "r1", "status": "ok", "grid": "g", "grid_file": "configs/grids/g.yaml", "seed": 0,
        "dataset.name": "synthetic", "dataset.noise.kind": "replace", "dataset.noise.alpha": 0.1,
        "backbone.name": "gru4rec", "denoiser.name": "semantic-outlier", "denoiser.ratio": 0.1,
        "noise_setting": "replace α=0.1", "mode": "data", "valid_ndcg@10": pytest.approx(0.21),
        "test_hr@10": pytest.approx(0.4), "test_ndcg@10": pytest.approx(0.2), "test_optimistic_ndcg@10": pytest.approx(0.201),
        "det_precision": 0.9, "det_recall": 0.5, "det_f1": 0.643, "det_flag_rate": 0.1, "det_random_f1": 0.14,
        "det_removal_ratio_b0": 0.05, "det_removal_ratio_b1": 0.2, "det_noise_share_b1": 0.3,
        "det_insertion_recall": 0.25, "fit_seconds": 3.0, "epoch_seconds_mean": 1.5, "version.torch": "2.13",
        "git_commit": "abc123", "dataset.text_columns": '["title"]', "eval.ks": "[5, 10]",
    }
    assert {k: row[k] for k in expected} == expected
    assert '"split": "loo"' in row["protocol_json"] and row["config_json"].startswith("{")


def test_failure_row_records_status_error_and_config():
    row = failure_row("r9", run_result()["config"], "FloatingPointError: non-finite training loss", "FloatingPointError",
                      grid="g")
    assert row["status"] == "failed" and row["error_kind"] == "FloatingPointError"
    assert row["error"].startswith("FloatingPointError") and row["denoiser.name"] == "semantic-outlier"


def test_store_reads_files_with_different_columns_together(tmp_path):
    store = ResultStore(tmp_path)
    store.write(result_row(run_result("a", detection=True)))
    store.write(result_row(run_result("b", seed=1, detection=False)))
    store.write(failure_row("c", run_result()["config"], "MemoryError: oom", "MemoryError"))
    df = store.frame()
    assert sorted(df["run_id"].to_list()) == ["a", "b", "c"]
    assert store.statuses() == {"a": "ok", "b": "ok", "c": "failed"}
    assert store.done_ids() == {"a", "b"} and store.failed() == {"c": "MemoryError: oom"}
    assert df.filter(pl.col("run_id") == "b")["det_precision"].to_list() == [None]


def test_success_replaces_the_failure_record_of_the_same_run(tmp_path):
    store = ResultStore(tmp_path)
    store.write(failure_row("a", run_result()["config"], "boom", "RuntimeError"))
    store.write(result_row(run_result("a")))
    assert store.statuses() == {"a": "ok"} and len(store.files()) == 1


def test_reads_after_a_replace_a_removal_or_another_writer_see_the_store_as_it_is_now(tmp_path):
    store, other = ResultStore(tmp_path), ResultStore(tmp_path)
    first = result_row(run_result("a"))
    store.write(first)
    store.write(result_row(run_result("b", seed=1)))
    assert store.statuses() == {"a": "ok", "b": "ok"}  # both files read and cached
    other.write({**first, "test_ndcg@10": first["test_ndcg@10"] + 0.125})  # same size, new inode
    assert store.frame().filter(pl.col("run_id") == "a")["test_ndcg@10"].to_list() == [first["test_ndcg@10"] + 0.125]
    store.path("b").unlink()
    other.write(failure_row("c", run_result()["config"], "boom", "RuntimeError"))
    assert store.statuses() == {"a": "ok", "c": "failed"}


def test_a_write_that_dies_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    store.write(result_row(run_result("good")))

    def broken_write(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken_write)
    with pytest.raises(OSError, match="disk full"):
        store.write(result_row(run_result("bad")))
    assert [p.name for p in tmp_path.iterdir()] == ["good.parquet"]
    assert store.done_ids() == {"good"}


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path):
    store = ResultStore(tmp_path)
    rows = [result_row(run_result(f"r{i % 4}", seed=i % 4, ndcg=0.1 + i / 1000)) for i in range(60)]
    # a large text column makes every write take a while
    for row in rows:
        row["denoiser_report_json"] = "x" * 200_000
    errors: list[BaseException] = []
    done = threading.Event()

    def writer():
        try:
            for row in rows:
                store.write(row)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads == 0:
        df = store.frame()  # raises on a truncated parquet file
        if df.height:
            assert df["test_ndcg@10"].null_count() == 0 and df["run_id"].n_unique() == df.height
            assert (df["denoiser_report_json"].str.len_chars() == 200_000).all()
        reads += 1
    thread.join()
    assert not errors and reads > 0
    assert store.done_ids() == {"r0", "r1", "r2", "r3"}


def test_results_query_filters_and_groups_with_mean_and_std_over_seeds(tmp_path):
    store = ResultStore(tmp_path)
    for seed, ndcg in enumerate([0.1, 0.2, 0.3]):
        store.write(result_row(run_result(f"so{seed}", seed=seed, ndcg=ndcg)))
        store.write(result_row(run_result(f"no{seed}", seed=seed, denoiser="none", ndcg=ndcg / 2)))
    out = query(store.scan(), ["dataset=synthetic", "alpha=0.1"], ["backbone", "denoiser"], ["test_ndcg@10"])
    assert out["denoiser.name"].to_list() == ["none", "semantic-outlier"]
    assert out["n"].to_list() == [3, 3]
    assert out["test_ndcg@10_mean"].to_list() == pytest.approx([0.1, 0.2])
    assert out["test_ndcg@10_std"].to_list() == pytest.approx([0.05, 0.1])
    rows = query(store.scan(), ["seed=1", "denoiser=none"], None, ["test_ndcg@10"])
    assert rows["run_id"].to_list() == ["no1"]


def test_results_query_names_unknown_columns(tmp_path):
    from benchmark.cli import UserError

    store = ResultStore(tmp_path)
    store.write(result_row(run_result()))
    with pytest.raises(UserError, match="did you mean seed"):
        query(store.scan(), ["sed=1"], None, ["test_ndcg@10"])


def test_repeated_where_options_all_apply(tmp_path, capsys):
    from benchmark.cli import main

    store = ResultStore(tmp_path)
    for seed in (0, 1):
        store.write(result_row(run_result(f"so{seed}", seed=seed)))
        store.write(result_row(run_result(f"no{seed}", seed=seed, denoiser="none")))
    main(["results", "--store", str(tmp_path), "--where", "seed=1", "--where", "denoiser=none", "--metrics", "test_ndcg@10"])
    out = capsys.readouterr().out
    assert "no1" in out and "no0" not in out and "so1" not in out


def test_drop_deletes_the_store_file_and_run_directory_of_only_the_named_runs(tmp_path, capsys):
    from benchmark.cli import main

    store, runs = ResultStore(tmp_path / "results"), tmp_path / "runs"
    for rid in ("keep", "gone"):
        store.write(result_row(run_result(rid)))
        (runs / rid).mkdir(parents=True)
        (runs / rid / "result.json").write_text("{}")
    assert main(["results", "--store", str(store.directory), "--runs-dir", str(runs), "--drop", "gone"]) == 0
    assert not store.path("gone").exists() and not (runs / "gone").exists()
    assert store.path("keep").exists() and (runs / "keep" / "result.json").exists()
    assert store.done_ids() == {"keep"}


def test_drop_refuses_unknown_or_executing_runs_and_then_deletes_nothing(tmp_path, capsys):
    from benchmark.cli import main
    from benchmark.runlock import run_lock

    store, runs = ResultStore(tmp_path / "results"), tmp_path / "runs"
    for rid in ("a", "busy"):
        store.write(result_row(run_result(rid)))
        (runs / rid).mkdir(parents=True)
    args = ["results", "--store", str(store.directory), "--runs-dir", str(runs), "--drop", "a"]
    assert main(args + ["nosuchrun"]) == 2
    assert "nosuchrun: no such run" in capsys.readouterr().err
    with run_lock(runs / "busy"):
        assert main(args + ["busy"]) == 2
    assert "is executing in process" in capsys.readouterr().err
    assert store.done_ids() == {"a", "busy"} and (runs / "a").is_dir()
