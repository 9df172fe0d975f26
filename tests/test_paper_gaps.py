"""Paper-gap explanations: the shipped file is valid, bad entries are named, and the leaderboard
prints the experiment's rows beside the paper's numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.config import ConfigError
from benchmark.leaderboard import render_gaps
from benchmark.paper_gaps import GAPS_FILE, load_gaps
from benchmark.paper_numbers import PAPER_RESULTS
from benchmark.sections import build_sections

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_explanations_name_grids_whose_cells_are_the_rows_they_select():
    from benchmark.config import to_dict
    from benchmark.grid import expand, load_grid
    from benchmark.store import flatten

    gaps = load_gaps(GAPS_FILE)
    assert gaps
    for gap in gaps:
        assert any(gap.covers(r) for r in PAPER_RESULTS) and gap.why
        grid = load_grid(ROOT / gap.grid)
        cells = [c for c in expand(grid) if c.dataset == gap.dataset]
        assert cells, f"{gap.grid} has no {gap.dataset} cells"
        for cell in cells[:3]:  # the grid's cells are rows the explanation's `where` selects
            cfg = to_dict(cell.compose())
            row = {"grid": grid.name, "config_json": json.dumps(cfg)}  # as the store keeps a grid's row
            assert gap.selects(row), (gap.grid, gap.where, flatten(cfg))


def _write(tmp_path: Path, entry: dict) -> Path:
    path = tmp_path / "gaps.yaml"
    path.write_text(json.dumps({"gaps": [entry]}))  # JSON is YAML
    return path


GOOD = {"paper": "IADSR (CIKM '25)", "table": "Table 3", "dataset": "ml-100k", "rows": ["SASRec / base"],
        "grid": "configs/grids/x.yaml", "where": {"train.train_instances": "last_only"}, "why": "one instance per user"}


@pytest.mark.parametrize("change, message", [
    ({"rows": ["SASRec / nope"]}, "no paper cell IADSR (CIKM '25) Table 3 ml-100k 'SASRec / nope'"),
    ({"where": "last_only"}, "key 'where' must be a dict"),
    ({"colour": "red"}, "unknown keys ['colour']"),
])
def test_a_bad_explanation_entry_is_named_with_its_file_index_and_key(tmp_path, change, message):
    path = _write(tmp_path, {**GOOD, **change})
    with pytest.raises(ConfigError) as err:
        load_gaps(path)
    assert str(path) in str(err.value) and "gaps[0]" in str(err.value) and message in str(err.value)


def _row(instances: str, protocol: str, seed: int, ndcg: float) -> dict:
    cfg = {"seed": seed, "protocol": protocol, "dataset": {"name": "ml-100k", "max_len": 50},
           "backbone": {"name": "sasrec"}, "denoiser": {"name": "none"},
           "train": {"max_epochs": 40, "train_instances": instances}, "eval": {"ks": [5, 10, 20]}}
    resolved = {"train_instances": "all_positions" if instances == "auto" else instances}
    return {"run_id": f"{instances}{protocol}{seed}", "config_json": json.dumps(cfg), "noise_setting": "clean",
            "protocol_json": json.dumps(resolved), "status": "ok", "valid_ndcg@10": ndcg, "test_ndcg@10": ndcg, "test_hr@10": 2 * ndcg}


def test_the_leaderboard_shows_the_experiment_rows_beside_the_paper_and_benchmark(tmp_path):
    gap = load_gaps(_write(tmp_path, {**GOOD, "where": {"protocol": "iadsr-paper", "train.train_instances": "last_only"}}))
    paper = next(r for r in PAPER_RESULTS if gap[0].covers(r)).metrics
    rows = [_row("last_only", "iadsr-paper", s, paper["ndcg@10"]) for s in (0, 1)]
    rows += [_row("auto", "iadsr-paper", s, 0.05) for s in (0, 1)]  # same preset, every target: not the experiment
    rows += [_row("auto", "benchmark", s, 0.06) for s in (0, 1, 2)]
    text = "\n".join(render_gaps("ml-100k", build_sections(rows)["ml-100k"], gap))
    assert "one instance per user" in text and "`bench grid configs/grids/x.yaml`" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| SASRec / base |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "2"  # the two last_only seeds, not the auto rows
    assert f"{paper['ndcg@10']:.4f} / {paper['ndcg@10']:.4f}" in cells
    # NDCG@10 matches the paper exactly, HR@10 (= 2 x NDCG@10 here) does not: the mean over the two
    experiment_rel = abs(2 * paper["ndcg@10"] - paper["hr@10"]) / paper["hr@10"] / 2
    assert cells[-2] == f"{experiment_rel:.1%}"
    bench_rel = (abs(0.06 - paper["ndcg@10"]) / paper["ndcg@10"] + abs(0.12 - paper["hr@10"]) / paper["hr@10"]) / 2
    assert cells[-1] == f"{bench_rel:.1%}"


def test_an_explanation_without_its_experiment_in_the_store_says_so(tmp_path):
    gap = load_gaps(_write(tmp_path, GOOD))
    rows = [_row("auto", "benchmark", s, 0.06) for s in (0, 1, 2)]
    text = "\n".join(render_gaps("ml-100k", build_sections(rows)["ml-100k"], gap))
    assert "| SASRec / base | not in the store | 0 |" in text


def test_the_index_links_the_explanations_of_datasets_in_the_store(tmp_path):
    from benchmark.leaderboard import render_index

    gap = load_gaps(_write(tmp_path, GOOD))
    by_dataset = build_sections([_row("auto", "benchmark", s, 0.06) for s in (0, 1, 2)])
    assert "[ml-100k.md](ml-100k.md#gaps-to-the-papers-explained)" in render_index(by_dataset, {}, [], gap)
    assert "gaps-to-the-papers-explained" not in render_index(by_dataset, {}, [], [])


def test_a_gap_experiment_on_hand_set_instances_is_not_the_presets_row_in_paper_vs_ours(tmp_path):
    from benchmark.leaderboard import ours_by_preset

    ref = next(r for r in PAPER_RESULTS if r.dataset == "ml-100k" and r.ours == ("sasrec", "none"))
    experiment = [_row("last_only", "iadsr-paper", s, 0.015) for s in (0, 1, 2)]
    sections = build_sections(experiment + [_row("auto", "benchmark", s, 0.06) for s in (0, 1, 2)])["ml-100k"]
    assert set(ours_by_preset(ref, sections)) == {"benchmark"}  # the one-instance rows stay in their section
    sections = build_sections(experiment + [_row("auto", "iadsr-paper", 0, 0.05)])["ml-100k"]
    assert ours_by_preset(ref, sections)["iadsr-paper"].values("test_ndcg@10") == {0: 0.05}
