"""Two-stage grids (``tune_seeds``): every setting at the tuning seeds, the chosen one at the rest."""
from __future__ import annotations

import pytest

import benchmark.launchers
from benchmark.cli import main
from benchmark.grid import expand, load_grid
from benchmark.store import ResultStore
from benchmark.tuning import resolve_tuning
from tests.test_grid import FAKE, fake_env, write_grid  # noqa: F401  (fake_env is a fixture)

TUNED = """
name: tuned
profile: smoke
datasets: [synthetic]
backbones: [gru4rec]
denoisers: [none, semantic-outlier]
denoiser_params:
  semantic-outlier: {ratio: [0.05, 0.1, 0.2]}
seeds: [0, 1, 2]
tune_seeds: [0]
"""


@pytest.fixture
def tuned_grid(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark.launchers, "DEFAULT_EXECUTOR", FAKE)
    return write_grid(tmp_path / "tuned.yaml", TUNED)


def _cli(grid, tmp_path, *extra):
    return main(["grid", str(grid), "--store", str(tmp_path / "store"), "--runs-dir", str(tmp_path / "runs"),
                 "--no-progress", *extra])


def _by_id(grid):
    return {c.run_id: c for c in expand(load_grid(grid))}


def test_one_command_runs_every_setting_at_the_tuning_seed_then_only_the_validation_choice(
        tmp_path, tuned_grid, fake_env, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_BEST", "ratio=0.2")  # best on validation, worst on test
    assert _cli(tuned_grid, tmp_path) == 0
    cells = _by_id(tuned_grid)
    ran = [cells[rid] for rid in fake_env()]
    assert len(ran) == len(set(fake_env()))  # nothing ran twice
    seed0 = {(c.denoiser, c.params.get("ratio")) for c in ran if c.seed == 0}
    assert seed0 == {("none", None), ("semantic-outlier", 0.05), ("semantic-outlier", 0.1), ("semantic-outlier", 0.2)}
    for seed in (1, 2):
        assert {(c.denoiser, c.params.get("ratio")) for c in ran if c.seed == seed} == {
            ("none", None), ("semantic-outlier", 0.2)}
    out = capsys.readouterr().out
    assert "tuning: synthetic | clean | gru4rec | semantic-outlier: ratio=0.2 chosen on valid_ndcg@10 = 0.1500" in out
    assert "3 of 3 settings competed" in out and "2 cells of the settings chosen on validation follow" in out
    assert "4 cells not run: settings validation did not choose" in out  # 2 settings x 2 seeds


def test_dry_run_shows_other_seeds_waiting_then_passed_over_after_the_tuning_seed_ran(
        tmp_path, tuned_grid, fake_env, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_BEST", "ratio=0.1")
    cells = _by_id(tuned_grid)
    assert _cli(tuned_grid, tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    waiting = [rid for rid, c in cells.items() if c.denoiser != "none" and c.seed > 0]
    assert all(f"{rid}  waiting" in out for rid in waiting) and "6 held by tuning" in out
    assert "6 cells wait for a validation choice" in out
    assert "after the validation choices: at most 2 more cells to run (6 waiting cells without an estimate)" in out

    assert _cli(tuned_grid, tmp_path, "--only", "seed=0") == 0  # the tuning stage alone
    assert {cells[rid].seed for rid in fake_env()} == {0}
    capsys.readouterr()
    assert _cli(tuned_grid, tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    for rid, c in cells.items():
        if c.denoiser != "none" and c.seed > 0:
            assert f"{rid}  {'todo' if c.params['ratio'] == 0.1 else 'passed'}" in out, c.label
    assert "4 held by tuning" in out and "ratio=0.1 chosen" in out


def test_only_seed_of_the_second_stage_uses_the_stored_tuning_runs(tmp_path, tuned_grid, fake_env, monkeypatch):
    monkeypatch.setenv("FAKE_BEST", "ratio=0.05")
    assert _cli(tuned_grid, tmp_path, "--only", "seed=0") == 0
    before = len(fake_env())
    assert _cli(tuned_grid, tmp_path, "--only", "seed=2") == 0
    cells = _by_id(tuned_grid)
    second = [cells[rid] for rid in fake_env()[before:]]
    assert {(c.seed, c.denoiser, c.params.get("ratio")) for c in second} == {(2, "none", None),
                                                                            (2, "semantic-outlier", 0.05)}


def test_a_finished_cell_of_a_setting_not_chosen_stays_in_the_store_and_counts_as_done(
        tmp_path, tuned_grid, fake_env, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_BEST", "ratio=0.2")
    cells = _by_id(tuned_grid)
    other = next(rid for rid, c in cells.items() if c.params.get("ratio") == 0.05 and c.seed == 1)
    plain_grid = write_grid(tmp_path / "plain.yaml", TUNED.replace("tune_seeds: [0]\n", ""))
    assert _cli(plain_grid, tmp_path, "--only", "seed=1", "--only", "ratio=0.05") == 0  # ran before tuning existed
    assert _cli(tuned_grid, tmp_path, "--dry-run") == 0
    assert f"{other}  done" in capsys.readouterr().out
    assert _cli(tuned_grid, tmp_path) == 0
    assert fake_env().count(other) == 1
    assert ResultStore(tmp_path / "store").status(other) == "ok"


# ------------------------------------------------------------------ the choice itself
def _outcomes(cells, valid: dict[float, float], status: dict[float, str] | None = None) -> dict:
    """Stored rows for the tuning cells: ratio -> validation NDCG@10 (and optionally status)."""
    rows = {}
    for c in cells:
        if c.seed == 0:
            ratio = c.params.get("ratio")
            rows[c.run_id] = {"status": (status or {}).get(ratio, "ok"), "valid_ndcg@10": valid.get(ratio, 0.1)}
    return rows


def test_the_choice_ignores_test_metrics_breaks_ties_by_grid_order_and_skips_untuned_groups(tmp_path):
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", TUNED)))
    rows = _outcomes(cells, {0.05: 0.2, 0.1: 0.3, 0.2: 0.3})
    for c in cells:
        if c.run_id in rows:
            rows[c.run_id]["test_ndcg@10"] = 1.0 if c.params.get("ratio") == 0.05 else 0.0
    state = resolve_tuning(cells, [0], rows)
    assert [ch.params for ch in state.choices] == [{"ratio": 0.1}]  # 0.1 and 0.2 tie: the first listed wins
    assert state.choices[0].value == pytest.approx(0.3)
    assert all(c.denoiser == "none" or c.seed == 0 or c.params["ratio"] == 0.1 for c in state.active)
    assert {c.params["ratio"] for c in state.passed_over} == {0.05, 0.2} and not state.waiting
    assert sum(c.denoiser == "none" for c in state.active) == 3  # one setting: every seed, no choice


def test_a_missing_or_failed_tuning_cell_holds_its_group_and_a_not_applicable_one_does_not_compete(tmp_path):
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", TUNED)))
    rows = _outcomes(cells, {0.05: 0.9, 0.1: 0.3, 0.2: 0.2})
    missing = dict(rows)
    del missing[next(c.run_id for c in cells if c.seed == 0 and c.params.get("ratio") == 0.2)]
    for held in (missing, _outcomes(cells, {0.05: 0.9}, {0.2: "failed"})):
        state = resolve_tuning(cells, [0], held)
        assert not state.choices and len(state.waiting) == 6 and not state.passed_over
    state = resolve_tuning(cells, [0], _outcomes(cells, {0.05: 0.9, 0.1: 0.3}, {0.05: "not_applicable"}))
    assert [ch.params for ch in state.choices] == [{"ratio": 0.1}] and state.choices[0].competed == 2


def test_without_tune_seeds_every_cell_runs(tmp_path):
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", TUNED.replace("tune_seeds: [0]\n", ""))))
    state = resolve_tuning(cells, [], {})
    assert state.active == cells and not state.waiting and not state.passed_over
