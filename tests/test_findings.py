"""The leaderboard index's plain-words findings, on the fixture store of test_leaderboard."""
from __future__ import annotations

import re

import pytest

from benchmark.findings import findings_lines, verdicts
from benchmark.leaderboard import write_leaderboards
from benchmark.sections import build_sections
from tests.test_leaderboard import build_store


def _findings(tmp_path) -> str:
    build_store(tmp_path / "store")
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    text = (tmp_path / "out" / "README.md").read_text()
    assert "## Findings" in text
    return text.split("## Findings", 1)[1]


def test_a_significant_gain_is_named_with_its_size_p_value_and_epoch_cost(tmp_path):
    text = _findings(tmp_path)
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: gru4rec**")]
    # hsd - none = [0.03, 0.04, 0.02] over 0.11: +27.3%, paired t-test p = 0.035; epochs 2.6 s vs 2.1 s
    assert "1 of 2 denoisers is significantly better" in line
    assert "hsd +27.3% (p = 0.035; epoch ×1.24)" in line


def test_an_epoch_ratio_against_rows_without_a_speed_probe_is_marked_unknown(tmp_path):
    from benchmark.store import result_row
    from tests.test_leaderboard import NDCG, SEEDS, result

    store = build_store(tmp_path / "store")
    for seed, ndcg in zip(SEEDS, NDCG[(0.0, "gru4rec", "hsd", None)]):  # the same runs, stored before the probe
        row = result(0.0, "gru4rec", "hsd", None, seed, ndcg)
        for key in ("speed_probe_start", "speed_probe_end"):
            del row["timings"][key]
        store.write(result_row(row, grid="fixture"))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    text = (tmp_path / "out" / "README.md").read_text().split("## Findings", 1)[1]
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: gru4rec**")]
    assert "hsd +27.3% (p = 0.035; epoch ×1.24?)" in line
    assert "| gru4rec | hsd | 3 | 2.60 | 1.24? |" in (tmp_path / "out" / "ml-100k.md").read_text()


def test_verdict_wording_agrees_with_the_counts(tmp_path):
    text = _findings(tmp_path)
    lines = {ln.split("**")[1]: ln for ln in text.splitlines() if ln.startswith("- **")}
    assert "1 of 1 denoiser is significantly better." in lines["ml-100k, replace α=0.1: gru4rec"]
    assert "the one denoiser is not significantly better." in lines["ml-100k, clean: sasrec"]
    assert not re.search(r"\b1 of \d+ denoisers? are\b", text)


def test_only_the_setting_chosen_on_validation_speaks_for_a_denoiser(tmp_path):
    text = _findings(tmp_path)
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: gru4rec**")]
    # semantic-outlier ran at ratio 0.05 (valid mean 0.120) and 0.1 (0.1217): only 0.1 is chosen
    assert "semantic-outlier (ratio=0.1)" in line and "ratio=0.05" not in line
    assert "n.s.; data" in line  # not significant, and its mode is named


def test_the_summary_counts_rows_by_verdict(tmp_path):
    store = build_store(tmp_path / "store")
    sections = build_sections(store.frame(status="ok").to_dicts())
    lines = findings_lines(sections)
    rows = [v for s in sections["ml-100k"] for vs in verdicts(s).values() for v in vs]
    # gru4rec clean: hsd (p = 0.035), semantic-outlier (n.s.); sasrec clean: hsd (n.s.);
    # gru4rec noisy: semantic-outlier ([0.01, 0.01, 0.012] above none: p = 0.004)
    assert len(rows) == 4 and sum(v.significant for v in rows) == 2
    summary = lines[4]
    assert summary.startswith("Of 4 denoiser rows beside a plain backbone, 2 are significantly better")
    assert "0 significantly worse and 2 not distinguishable" in summary


def test_no_findings_without_a_denoiser_beside_a_plain_row():
    assert findings_lines({}) == []


def test_a_plain_row_that_ran_into_the_epoch_cap_is_called_possibly_undertrained(tmp_path):
    text = _findings(tmp_path)
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: sasrec**")]
    assert "3 seeds; 1 of 3 seeds hit the epoch cap, so it may be undertrained" in line
    (other,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: gru4rec**")]
    assert "epoch cap" not in other


def test_a_standalone_model_is_compared_with_the_backbone_it_modifies(tmp_path):
    from benchmark.store import result_row
    from tests.test_leaderboard import _rows, result

    store = build_store(tmp_path / "store")
    for seed, ndcg in zip((0, 1, 2), (0.24, 0.26, 0.23)):  # plain SASRec: 0.20, 0.21, 0.19
        row = result(0.0, "fmlp", "none", None, seed, ndcg)
        row["run_id"] = f"fmlp{seed}"
        store.write(result_row(row, grid="fixture"))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    rows = _rows((tmp_path / "out" / "ml-100k.md").read_text(), "clean")
    assert rows["fmlp none"][-1] == "+21.7%"  # ΔNDCG@10: mean 0.2433 against SASRec's 0.20
    assert rows["sasrec none"][-1] == "—" and rows["gru4rec none"][-1] == "—"
    text = (tmp_path / "out" / "README.md").read_text().split("## Findings", 1)[1]
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: sasrec**")]
    assert "fmlp +21.7% (p = 0.006" in line  # differences [0.04, 0.05, 0.04]: t = 13, df 2
    assert not [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: fmlp**")]
    assert "per target in perf" not in line.split("fmlp +21.7%", 1)[1].split(")", 1)[0]

    # bench perf times a standalone model beside the backbone it is compared with, under its own name
    import json

    perf = {"reports": [{"dataset": "ml-100k", "denoisers": [
        {"backbone": "sasrec", "denoiser": "fmlp", "standalone": True, "ratio_median": 1.37}]}]}
    (tmp_path / "out" / "perf.json").write_text(json.dumps(perf))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    text = (tmp_path / "out" / "README.md").read_text().split("## Findings", 1)[1]
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: sasrec**")]
    assert "fmlp +21.7% (p = 0.006; ×1.37 per target in perf)" in line


def test_sections_that_share_a_noise_setting_are_told_apart_by_their_differing_setting(tmp_path):
    from benchmark.store import result_row
    from tests.test_leaderboard import result

    store = build_store(tmp_path / "store")
    for denoiser, ndcg in (("none", 0.30), ("hsd", 0.33)):  # a second training budget, one seed
        row = result(0.0, "gru4rec", denoiser, None, 0, ndcg)
        row["config"]["train"]["min_epochs"] = 30
        row["run_id"] = f"min30{denoiser}"
        store.write(result_row(row, grid="fixture"))
    write_leaderboards(tmp_path / "store", tmp_path / "out", superseded=[])  # replacements: the tests below
    text = (tmp_path / "out" / "README.md").read_text().split("## Findings", 1)[1]
    heads = sorted(ln.split(":")[0] for ln in text.splitlines() if ln.startswith("- **ml-100k, clean"))
    assert heads == ["- **ml-100k, clean — train.min_epochs=0", "- **ml-100k, clean — train.min_epochs=0",
                     "- **ml-100k, clean — train.min_epochs=30"]
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean — train.min_epochs=30: gru4rec**")]
    assert "plain NDCG@10 0.3000, 1 seed" in line and "hsd +10.0% (1 seed, untested" in line


def test_a_denoiser_is_also_compared_with_a_plain_backbone_trained_on_its_instances(tmp_path):
    from benchmark.store import result_row
    from tests.test_leaderboard import result

    store = build_store(tmp_path / "store")
    for seed, control, hsd in zip((0, 1, 2), (0.12, 0.14, 0.13), (0.16, 0.17, 0.15)):
        for denoiser, ndcg in (("none", control), ("hsd", hsd)):
            row = result(0.0, "gru4rec", denoiser, None, seed, ndcg)
            row["config"]["train"]["prefix_epoch_share"] = 0.1
            if denoiser == "none":
                row["config"]["train"]["train_instances"] = "prefix"
            row["protocol"]["train_instances"] = "prefix"  # what both resolved to
            row["run_id"] = f"prefix{denoiser}{seed}"
            store.write(result_row(row, grid="fixture"))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    text = (tmp_path / "out" / "README.md").read_text().split("## Findings", 1)[1]
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: gru4rec**")]
    # against the default plain row (0.11): +45.5%; against the prefix control (0.13): differences
    # [0.04, 0.03, 0.02], t = sqrt(27), p = 0.035
    assert "hsd (train.prefix_epoch_share=0.1) +45.5% (p = " in line
    # epoch seconds: HSD 2.5 + 0.1 * seed, the control 2.0 + 0.1 * seed -> 2.6 / 2.1
    assert "against plain gru4rec on the same prefix instances (share 0.1): +23.1%, p = 0.035, epoch ×1.24)" in line
    # rows trained on the default instances have no such control
    (sasrec,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: sasrec**")]
    assert "against plain" not in sasrec


def _replaced_patience_store(tmp_path):
    """The fixture store plus gru4rec none/hsd/semantic-outlier (ratio 0.1) under patience 20."""
    from benchmark.store import result_row
    from tests.test_leaderboard import result

    store = build_store(tmp_path / "store")
    for denoiser, ndcg in (("none", 0.30), ("hsd", 0.27)):
        row = result(0.0, "gru4rec", denoiser, None, 0, ndcg)
        row["config"]["train"]["patience"] = 20
        row["run_id"] = f"p20{denoiser}"
        store.write(result_row(row, grid="fixture"))
    return store


def test_a_row_under_a_replaced_setting_leaves_the_findings_once_it_ran_under_the_replacement(tmp_path):
    from benchmark.superseded import Supersession

    _replaced_patience_store(tmp_path)
    rule = Supersession("ml-100k", (("train.patience", 10),), (("train.patience", 20),), "Flat stretches.", "gru4rec")
    write_leaderboards(tmp_path / "store", tmp_path / "out", superseded=[rule])
    text = (tmp_path / "out" / "README.md").read_text().split("## Findings", 1)[1]
    (old,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean — train.patience=10: gru4rec**")]
    # hsd ran again under patience 20: only semantic-outlier speaks for the old setting, marked as such
    assert "semantic-outlier" in old and "hsd" not in old
    assert "(A replaced setting, train.patience=10 → 20; these denoisers have not run under the new one.)" in old
    (new,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean — train.patience=20: gru4rec**")]
    assert "hsd -10.0%" in new
    assert "- **ml-100k, train.patience=10 → 20**: Flat stretches. Left out: clean: gru4rec (hsd)." in text
    # sasrec shares the old section but the rule names gru4rec only
    (sasrec,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean — train.patience=10: sasrec**")]
    assert "hsd" in sasrec and "replaced" not in sasrec
    md = (tmp_path / "out" / "ml-100k.md").read_text()
    assert md.count("Replaced setting for gru4rec: train.patience=10 → 20") == 1


def test_a_replaced_setting_without_its_replacement_in_the_store_changes_nothing(tmp_path):
    from benchmark.superseded import Supersession

    build_store(tmp_path / "store")
    write_leaderboards(tmp_path / "store", tmp_path / "plain", superseded=[])
    rule = Supersession("ml-100k", (("train.patience", 10),), (("train.patience", 20),), "Flat stretches.")
    write_leaderboards(tmp_path / "store", tmp_path / "ruled", superseded=[rule])
    for name in ("README.md", "ml-100k.md"):
        assert (tmp_path / "ruled" / name).read_text() == (tmp_path / "plain" / name).read_text()


@pytest.mark.parametrize("entry, message", [
    ("{dataset: ml-100k, setting: {train.patience: 10}, replaced_by: {train.patience: 20}}", "key 'why' must be a str"),
    ("{dataset: ml-100k, setting: {train.lr: 0.1}, replaced_by: {train.lr: 0.01}, why: x}",
     "setting keys ['train.lr'] are not section keys"),
    ("{dataset: ml-100k, setting: {train.patience: 10}, replaced_by: {train.min_epochs: 30}, why: x}",
     "missing from setting: ['train.min_epochs']"),
    ("{dataset: ml-100k, setting: {train.patience: 10}, replaced_by: {train.patience: 20}, why: x, seed: 0}",
     "unknown keys ['seed']"),
])
def test_superseded_file_errors_name_the_file_entry_and_key(tmp_path, entry, message):
    from benchmark.config import ConfigError
    from benchmark.superseded import load_superseded

    path = tmp_path / "superseded.yaml"
    path.write_text(f"superseded:\n  - {entry}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: superseded[0]: ") + ".*" + re.escape(message)):
        load_superseded(path)


def test_the_shipped_superseded_file_loads():
    from benchmark.superseded import load_superseded

    rules = load_superseded()
    assert {r.change() for r in rules} >= {"train.patience=10 → 20", "train.min_epochs=0 → 30"}


def test_a_denoiser_whose_seeds_detect_noise_in_opposite_directions_is_named_with_each_seeds_auc(tmp_path):
    store = build_store(tmp_path / "store")
    rows = store.frame(status="ok").to_dicts()
    assert not [ln for ln in findings_lines(build_sections(rows)) if "noise-score AUC" in ln]  # AUC 0.70-0.72
    for r in rows:  # seed 1 of the noisy semantic-outlier row ranks noise below chance, removing hot items
        if r["denoiser.name"] == "semantic-outlier" and r["dataset.noise.kind"] == "replace" and r["seed"] == 1:
            r.update({"det_roc_auc": 0.3, "det_removal_ratio_b0": 0.5, "det_removal_ratio_b4": 0.01})
    flips = [ln for ln in findings_lines(build_sections(rows)) if "noise-score AUC" in ln]
    # above chance: seeds 0 and 2, hottest bucket 0.020 and 0.022, coldest 0.100 and 0.102
    assert flips == ["- **ml-100k, replace α=0.1: gru4rec / semantic-outlier**: noise-score AUC 0.70 (seed 0), "
                     "0.30 (seed 1), 0.72 (seed 2). The seeds above chance removed 2% of the hottest popularity "
                     "bucket's positions and 10% of the coldest's; those below, 50% and 1%."]


def test_a_setting_whose_mask_flags_every_position_on_a_seed_is_listed_with_its_seeds(tmp_path):
    store = build_store(tmp_path / "store")
    rows = store.frame(status="ok").to_dicts()
    assert not [ln for ln in findings_lines(build_sections(rows)) if "flagged" in ln]  # no intro, no row
    for r in rows:  # seed 2 of the noisy semantic-outlier row flags every position
        if r["denoiser.name"] == "semantic-outlier" and r["dataset.noise.kind"] == "replace" and r["seed"] == 2:
            r["det_flag_rate"] = 1.0
    collapsed = [ln for ln in findings_lines(build_sections(rows)) if ln.startswith("- **") and "flagged" in ln]
    ndcg = {r["seed"]: r["test_ndcg@10"] for r in rows
            if r["denoiser.name"] == "semantic-outlier" and r["dataset.noise.kind"] == "replace"}
    assert collapsed == [f"- **ml-100k, replace α=0.1: gru4rec / semantic-outlier** (the row validation chose): seed 2 "
                         f"of 3 flagged 100.0% of the positions; test NDCG@10 {ndcg[2]:.4f} there against "
                         f"{(ndcg[0] + ndcg[1]) / 2:.4f} for the other seeds."]


def test_a_cost_measured_side_by_side_by_bench_perf_speaks_for_the_row(tmp_path):
    import json

    build_store(tmp_path / "store")
    (tmp_path / "out").mkdir()
    perf = {"reports": [{"dataset": "ml-100k", "denoisers": [
        {"backbone": "gru4rec", "denoiser": "hsd", "ratio_median": 63.3, "train_instances": "prefix"}]},
        {"dataset": "beauty", "denoisers": [{"backbone": "sasrec", "denoiser": "hsd", "ratio_median": 50.0}]}]}
    (tmp_path / "out" / "perf.json").write_text(json.dumps(perf))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    text = (tmp_path / "out" / "README.md").read_text().split("## Findings", 1)[1]
    (gru,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: gru4rec**")]
    assert "hsd +27.3% (p = 0.035; ×63.30 per target in perf)" in gru
    # no perf entry for sasrec on ml-100k (beauty's does not count): the store's epoch ratio stays
    (sasrec,) = [ln for ln in text.splitlines() if ln.startswith("- **ml-100k, clean: sasrec**")]
    assert "per target in perf" not in sasrec and "epoch ×1.24" in sasrec


def test_a_malformed_perf_report_is_named_before_any_leaderboard_is_written(tmp_path):
    build_store(tmp_path / "store")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "perf.json").write_text('{"reports": [{"dataset": "ml-100k", "denoisers": [{"backbone": "x"}]}]}')
    with pytest.raises(ValueError, match=r"perf\.json: not a `bench perf` report .*ratio_median"):
        write_leaderboards(tmp_path / "store", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["perf.json"]
