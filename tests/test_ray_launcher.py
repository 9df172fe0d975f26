"""The Ray launcher runs grid cells as Ray tasks on a local instance and the driver stores them."""
from __future__ import annotations

import pytest

from benchmark.grid import expand, load_grid, run_grid
from benchmark.store import ResultStore

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'dsr-bench[ray]')")

GRID = """
name: ray-grid
profile: smoke
overrides: [dataset.synthetic.n_users=30, dataset.synthetic.n_items=24, dataset.synthetic.max_len=14,
            dataset.max_len=10, train.max_epochs=1]
datasets: [synthetic]
backbones: [gru4rec]
denoisers: [none]
seeds: [0, 1]
"""


def failing_execute(cfg, runs_dir=None, resume=False):
    """Executor for the failure case: seed 1 hits a non-finite loss, seed 0 runs for real."""
    if int(cfg.seed) == 1:
        raise FloatingPointError("non-finite training loss at epoch 0, batch 0")
    from benchmark.run import execute

    return execute(cfg, runs_dir=runs_dir)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) shared by the tests of this module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")
    mp.setenv("WANDB_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    mp.undo()


def test_ray_launcher_runs_two_tiny_cells_on_a_local_instance(tmp_path, local_ray):
    (tmp_path / "grid.yaml").write_text(GRID)
    cells = expand(load_grid(tmp_path / "grid.yaml"))
    summary = run_grid(cells, tmp_path / "store", str(tmp_path / "runs"), grid_name="ray-grid", launcher="ray",
                       cpus_per_cell=1, progress=False, echo=lambda s: None)
    assert sorted(summary.ok) == sorted(c.run_id for c in cells), summary.failed
    df = ResultStore(tmp_path / "store").frame("ok")
    assert sorted(df["seed"].to_list()) == [0, 1] and set(df["grid"].to_list()) == {"ray-grid"}
    assert df["test_ndcg@10"].null_count() == 0 and df["valid_ndcg@10"].null_count() == 0
    assert all((tmp_path / "runs" / c.run_id / "result.json").exists() for c in cells)  # ran in the workers


def test_ray_launcher_records_a_failing_cell_and_keeps_the_other(tmp_path, local_ray):
    (tmp_path / "grid.yaml").write_text(GRID)
    cells = expand(load_grid(tmp_path / "grid.yaml"))
    summary = run_grid(cells, tmp_path / "store", str(tmp_path / "runs"), grid_name="ray-grid", launcher="ray",
                       executor="tests.test_ray_launcher:failing_execute", progress=False, echo=lambda s: None)
    assert summary.ok == [cells[0].run_id]
    assert list(summary.failed) == [cells[1].run_id]
    assert ResultStore(tmp_path / "store").failed()[cells[1].run_id].startswith("FloatingPointError: non-finite")
