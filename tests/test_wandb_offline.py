"""A grid cell logs to an offline W&B run grouped by the grid name, without an API key."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.grid import expand, load_grid, run_grid
from benchmark.store import ResultStore

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2", reason="wandb is not installed")

GRID = """
name: wandb-grid
profile: smoke
overrides: [logging.wandb=offline, dataset.synthetic.n_users=30, dataset.synthetic.n_items=24,
            dataset.synthetic.max_len=14, dataset.max_len=10, train.max_epochs=1]
datasets: [synthetic]
backbones: [gru4rec]
denoisers: [none]
seeds: [0]
"""


def wandb_records(path: Path):
    """Records of a W&B 0.31 ``run-*.wandb`` file: a 7-byte header (":W&B", magic, version), then
    a LevelDB-style log of 32 KiB blocks, each record a 7-byte header (crc32c, little-endian
    length, type 1 full / 2 first / 3 middle / 4 last) and a ``wandb_internal_pb2.Record``."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            raw = chunk
        elif kind == 2:
            buf = chunk
            continue
        elif kind == 3:
            buf += chunk
            continue
        elif kind == 4:
            raw = buf + chunk
        else:
            continue
        record = pb.Record()
        record.ParseFromString(raw)
        yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_grid_cell_writes_an_offline_wandb_run_grouped_and_tagged_with_test_and_valid_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "grid.yaml").write_text(GRID)
    cells = expand(load_grid(tmp_path / "grid.yaml"))
    summary = run_grid(cells, tmp_path / "store", tmp_path / "runs", grid_name="wandb-grid", progress=False,
                       echo=lambda s: None)
    assert summary.ok == [cells[0].run_id], summary.failed
    files = sorted((tmp_path / "runs" / cells[0].run_id).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    assert b"test/hr@10" in files[0].read_bytes() and b"test/ndcg@10" in files[0].read_bytes()

    runs, logged = [], {}
    for record in wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            runs.append(record.run)
        elif kind == "history":  # keys are in `key` or, in W&B 0.31, in `nested_key`
            logged.update({_key(item): item.value_json for item in record.history.item})
    assert [r.run_group for r in runs] == ["wandb-grid"] and runs[0].run_id == cells[0].run_id
    assert {"dataset:synthetic", "backbone:gru4rec", "denoiser:none", "seed:0", "noise:clean"} <= set(runs[0].tags)
    row = ResultStore(tmp_path / "store").frame().to_dicts()[0]
    assert float(logged["test/hr@10"]) == pytest.approx(row["test_hr@10"])
    assert float(logged["test/ndcg@10"]) == pytest.approx(row["test_ndcg@10"])
    assert float(logged["valid/ndcg@10"]) == pytest.approx(row["valid_ndcg@10"])
