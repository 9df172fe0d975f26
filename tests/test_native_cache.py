"""Transfer runs that differ only in the target backbone share one native phase
(benchmark.native_cache), with results equal to those of a run that trains it itself."""
from __future__ import annotations

import logging
from pathlib import Path

from benchmark.config import compose
from benchmark.integrity import read_manifest
from benchmark.run import execute

# STEAM: native BERT4Rec; its corrector also rewrites the evaluation histories (valid, test)
COMMON = ["dataset.synthetic.n_users=60", "dataset.synthetic.n_items=40", "dataset.max_len=12",
          "train.batch_size=64", "train.max_epochs=2"]


def _run(runs_dir: Path, backbone: str, *extra: str):
    cfg = compose(backbone=backbone, denoiser="steam", dataset="synthetic", profile="smoke", overrides=[*COMMON, *extra])
    return execute(cfg, runs_dir=runs_dir)


def _phases(runs_dir: Path) -> list[Path]:
    """The stored native phases (directories; their lock files lie beside them)."""
    return [p for p in (runs_dir / "_native").iterdir() if p.is_dir()]


def _outcome(result) -> dict:
    data = result.to_json()
    return {k: data[k] for k in ("valid", "test", "test_optimistic", "detection", "denoiser_report", "epochs",
                                 "best_epoch", "curve", "protocol", "mode", "native")}


def test_a_second_target_backbone_reuses_the_native_phase_and_matches_an_unshared_run_exactly(tmp_path):
    first = _run(tmp_path / "shared", "gru4rec")
    assert first.mode == "transfer from bert4rec"
    assert len(_phases(tmp_path / "shared")) == 1
    reused = _run(tmp_path / "shared", "sasrec")
    assert not (tmp_path / "shared" / reused.run_id / "checkpoints" / "bert4rec").exists()  # no native training
    assert reused.timings["native_shared_from_seconds"] > 0
    assert reused.protocol["denoised_eval_histories"] == "valid,test"
    manifest = read_manifest(tmp_path / "shared" / reused.run_id / "denoised")
    assert manifest["provenance"]["native_phase_from"]["run_id"] == first.run_id
    alone = _run(tmp_path / "alone", "sasrec", "train.share_native=false")
    assert alone.run_id == reused.run_id  # the switch is not part of the run id
    assert (tmp_path / "alone" / alone.run_id / "checkpoints" / "bert4rec").exists()
    assert not (tmp_path / "alone" / "_native").exists()
    assert _outcome(reused) == _outcome(alone)
    for stage in ("", "valid", "test"):  # the exported data too
        a = (tmp_path / "shared" / reused.run_id / "denoised" / stage / "masks.tsv").read_bytes()
        assert a == (tmp_path / "alone" / alone.run_id / "denoised" / stage / "masks.tsv").read_bytes()


def test_a_native_phase_with_other_settings_is_not_shared(tmp_path):
    _run(tmp_path, "gru4rec")
    _run(tmp_path, "sasrec", "train.lr=0.002")  # the native phase trains with this lr too
    assert len(_phases(tmp_path)) == 2


def test_an_unreadable_shared_phase_is_trained_again_with_a_warning(tmp_path, caplog):
    first = _run(tmp_path / "a", "gru4rec")
    (cache,) = _phases(tmp_path / "a")
    (cache / "train.npz").write_bytes(b"not an npz")
    with caplog.at_level(logging.WARNING, logger="benchmark.native_cache"):
        again = _run(tmp_path / "a", "sasrec")
    assert "unreadable" in caplog.text and str(cache) in caplog.text
    assert (tmp_path / "a" / again.run_id / "checkpoints" / "bert4rec").exists()
    alone = _run(tmp_path / "b", "sasrec", "train.share_native=false")
    assert _outcome(again) == _outcome(alone) and first.mode == again.mode


def test_a_second_run_of_the_same_native_phase_waits_for_the_first_to_store_it(tmp_path):
    import threading

    from benchmark.native_cache import NativeCache

    cache = NativeCache(tmp_path, "k")
    order = []
    with cache.claim():
        second = threading.Thread(target=lambda: (cache.claim().__enter__(), order.append("second claimed")))
        second.start()
        second.join(timeout=0.5)
        order.append("first releases")
        assert second.is_alive()  # blocked on the lock the first holds
    second.join(timeout=30)
    assert order == ["first releases", "second claimed"]


def test_dropping_a_transfer_run_drops_the_native_phase_it_made(tmp_path):
    from benchmark.commands.results import drop_runs
    from benchmark.store import ResultStore, result_row

    store = ResultStore(tmp_path / "store")
    first = _run(tmp_path / "runs", "gru4rec")
    store.write(result_row(first.to_json()))
    (phase,) = _phases(tmp_path / "runs")
    deleted = drop_runs([first.run_id], store, tmp_path / "runs")
    assert str(phase) in deleted and not phase.exists()  # its rerun trains the native model again
    assert not (tmp_path / "runs" / first.run_id).exists()


def test_a_transfer_row_records_where_its_native_phase_stopped_and_reproduce_compares_it(tmp_path):
    from benchmark.reproduce import compare_rows
    from benchmark.store import result_row

    trained = result_row(_run(tmp_path, "gru4rec").to_json())
    shared = result_row(_run(tmp_path, "sasrec").to_json())
    for row in (trained, shared):
        assert row["native_epochs"] == 2  # max_epochs=2 of the native BERT4Rec
        assert 1 <= row["native_best_epoch"] <= 2
    plain = result_row(execute(compose(backbone="sasrec", dataset="synthetic", profile="smoke", overrides=COMMON),
                               runs_dir=tmp_path).to_json())
    assert "native_epochs" not in plain
    moved = {**shared, "native_epochs": 3}
    assert [d.column for d in compare_rows(shared, moved).differences] == ["native_epochs"]
