"""Leaderboards from a fixture store: golden files, determinism, significance marks, ranking."""
from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from benchmark.leaderboard import write_leaderboards
from benchmark.sections import build_sections, paired_pvalue
from benchmark.paper_numbers import PAPER_RESULTS, results_for
from benchmark.store import ResultStore, failure_row, result_row

GOLDEN = Path(__file__).parent / "golden" / "leaderboard"
SEEDS = (0, 1, 2)
# test NDCG@10 per (noise alpha, backbone, denoiser, ratio) and seed. gru4rec/clean: hsd differs
# from none by [0.03, 0.04, 0.02] (paired t = sqrt(27), df 2, p = 0.0351); semantic-outlier
# (ratio 0.05) by [0.01, 0.03, -0.01] (t = sqrt(3)/2, p = 0.478).
NDCG = {
    (0.0, "gru4rec", "none", None): [0.10, 0.11, 0.12],
    (0.0, "gru4rec", "hsd", None): [0.13, 0.15, 0.14],
    (0.0, "gru4rec", "semantic-outlier", 0.05): [0.11, 0.14, 0.11],
    (0.0, "gru4rec", "semantic-outlier", 0.1): [0.12, 0.12, 0.125],
    (0.0, "sasrec", "none", None): [0.20, 0.21, 0.19],
    (0.0, "sasrec", "hsd", None): [0.22, 0.20, 0.21],
    (0.1, "gru4rec", "none", None): [0.08, 0.09, 0.085],
    (0.1, "gru4rec", "semantic-outlier", 0.1): [0.09, 0.10, 0.097],
}


def config(alpha: float, backbone: str, denoiser: str, ratio: float | None, seed: int) -> dict:
    den = {"name": denoiser}
    if ratio is not None:
        den.update(ratio=ratio, protect_last=True)
    return {
        "seed": seed,
        "dataset": {"name": "ml-100k", "root": "/data", "k_core": 0, "max_len": 50, "split": "loo",
                    "text_columns": ["title"],
                    "noise": {"kind": "replace" if alpha else "none", "alpha": alpha or 0.1, "seed": 2024}},
        "backbone": {"name": backbone, "hidden_size": 64},
        "denoiser": den,
        "train": {"lr": 0.001, "max_epochs": 300, "patience": 10, "monitor": "valid/ndcg@10", "num_workers": 0},
        "eval": {"ks": [5, 10, 20], "exclude_history": False, "batch_size": 1024},
        "logging": {"wandb": "offline", "wandb_group": "fixture"},
        "data_source": None,
        "profile": None,
    }


def epochs_run(backbone: str, denoiser: str, seed: int) -> int:
    """Early stopping fired for every run but plain SASRec's seed 0, which ran all 300 epochs."""
    return 300 if (backbone, denoiser, seed) == ("sasrec", "none", 0) else 40 + seed


def result(alpha, backbone, denoiser, ratio, seed, ndcg) -> dict:
    cfg = config(alpha, backbone, denoiser, ratio, seed)
    rid = f"{backbone[:3]}{denoiser[:3]}{int((ratio or 0) * 100):02d}a{int(alpha * 10)}s{seed}"
    test = {}
    for k, scale in ((5, 0.8), (10, 1.0), (20, 1.25)):
        test[f"ndcg@{k}"] = round(ndcg * scale, 6)
        test[f"hr@{k}"] = round(ndcg * scale * 2, 6)
    det = None
    if denoiser != "none":
        flag = 0.05 + 0.01 * seed
        det = {"precision": 0.6 + 0.01 * seed, "recall": 0.4, "f1": 0.48, "flag_rate": flag, "noise_rate": 0.1,
               "random_f1": 0.07, "random_expected_f1": 0.0667, "roc_auc": round(0.7 + 0.01 * seed, 6),
               "buckets": [{"bucket": b, "removal_ratio": round(0.02 * (b + 1) + 0.001 * seed, 6)} for b in range(5)]}
    mode = {"none": "plain", "hsd": "joint", "semantic-outlier": "data"}[denoiser]
    return {"run_id": rid, "config": cfg,
            "protocol": {"split": "loo", "ranking": "full (all items)", "ties": "pessimistic", "exclude_history": False,
                         "loss": "ce", "max_len": 50, "early_stopping": "valid/ndcg@10 patience 10", "seed": seed,
                         "n_users": 943, "n_items": 1682, "denoiser_mode": mode},
            "valid": {"ndcg@10": ndcg}, "test": test, "test_optimistic": test, "curve": [],
            "timings": {"epoch_seconds_mean": 2.0 + (0.5 if denoiser == "hsd" else 0.0) + 0.1 * seed,
                        "fit_seconds": 100.0 + seed, "denoise_seconds": 5.0 if mode == "data" else 0.0,
                        "load_average_start": 0.5 + 0.25 * seed, "load_average_end": 1.0, "torch_threads": 1.0,
                        "speed_probe_start": 0.020 + 0.001 * seed, "speed_probe_end": 0.022},
            "detection": det, "mode": mode, "epochs": epochs_run(backbone, denoiser, seed), "best_epoch": 30,
            "versions": {"torch": "2.13.0"}, "git_commit": "0123abc", "status": "ok"}


def build_store(directory: Path, order=None) -> ResultStore:
    store = ResultStore(directory)
    items = [(key, seed, v) for key, values in NDCG.items() for seed, v in zip(SEEDS, values)]
    for (alpha, bb, den, ratio), seed, v in (order(items) if order else items):
        store.write(result_row(result(alpha, bb, den, ratio, seed, v), grid="fixture",
                               grid_file="configs/grids/fixture.yaml", command="bench grid configs/grids/fixture.yaml"))
    store.write(failure_row("failed1", config(0.0, "caser", "none", None, 0), "FloatingPointError: nan", "FloatingPointError",
                            grid="fixture"))
    store.write(failure_row("noText1", config(0.0, "caser", "said", None, 0),
                            "NotApplicableError: said needs item text, but dataset 'ml-100k' has none",
                            "NotApplicableError", grid="fixture"))
    return store


def read_all(directory: Path, figures: bool = False) -> dict[str, bytes]:
    """File name -> bytes; PNG figures only with ``figures`` (their bytes depend on the
    matplotlib version, so the golden files hold the Markdown and CSV only)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if figures or p.suffix != ".png"}


def test_leaderboard_matches_the_golden_files(tmp_path):
    build_store(tmp_path / "store")
    write_leaderboards(tmp_path / "store", tmp_path / "out", gaps=[], superseded=[])  # both: their own tests
    produced = read_all(tmp_path / "out")
    assert sorted(produced) == ["README.md", "ml-100k.csv", "ml-100k.md"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["ml-100k-popularity.png", "ml-100k-robustness.png"]
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, data in produced.items():
            (GOLDEN / name).write_bytes(data)
    assert produced == read_all(GOLDEN), "regenerate with UPDATE_GOLDEN=1 after checking the diff"


def test_same_store_gives_the_same_bytes_whatever_the_write_order(tmp_path):
    build_store(tmp_path / "a")
    build_store(tmp_path / "b", order=lambda items: list(reversed(items)))
    write_leaderboards(tmp_path / "a", tmp_path / "out_a")
    write_leaderboards(tmp_path / "b", tmp_path / "out_b")
    write_leaderboards(tmp_path / "a", tmp_path / "out_a")  # rewrite in place
    assert read_all(tmp_path / "out_a", figures=True) == read_all(tmp_path / "out_b", figures=True)


def test_paired_pvalue_matches_the_closed_form_for_two_degrees_of_freedom():
    # df = 2: two-sided p = 1 - t / sqrt(t^2 + 2)
    t = math.sqrt(27)
    assert paired_pvalue({0: 0.13, 1: 0.15, 2: 0.14}, {0: 0.10, 1: 0.11, 2: 0.12}) == pytest.approx(1 - t / math.sqrt(t * t + 2))
    t = math.sqrt(3) / 2
    assert paired_pvalue({0: 0.11, 1: 0.14, 2: 0.11}, {0: 0.10, 1: 0.11, 2: 0.12}) == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert paired_pvalue({0: 0.2, 5: 0.3}, {0: 0.1, 1: 0.2}) is None  # one common seed
    assert paired_pvalue({0: 0.2, 1: 0.3}, {0: 0.1, 1: 0.2}) is None  # constant difference


def _rows(md: str, section: str) -> dict[str, list[str]]:
    block = md.split(f"## {section}\n", 1)[1].split("### Test metrics", 1)[1].split("###", 1)[0]
    out = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[f"{cells[0]} {cells[1]}"] = cells
    return out


def test_significance_marks_follow_the_paired_t_test(tmp_path):
    build_store(tmp_path / "store")
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    rows = _rows((tmp_path / "out" / "ml-100k.md").read_text(), "clean")
    ndcg10 = 4 + 4  # backbone, denoiser, mode, n, HR@5, HR@10, HR@20, NDCG@5 -> NDCG@10
    assert rows["gru4rec hsd"][ndcg10].endswith("†")  # p = 0.035
    assert not rows["gru4rec semantic-outlier (ratio=0.05)"][ndcg10].endswith("†")  # p = 0.478
    assert not rows["gru4rec none"][ndcg10].endswith("†")
    assert not any(c.endswith("†") for c in rows["sasrec hsd"])  # diffs [0.02, -0.01, 0.02]: p > 0.05


def test_best_is_bold_and_second_underlined_per_backbone(tmp_path):
    build_store(tmp_path / "store")
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    rows = _rows((tmp_path / "out" / "ml-100k.md").read_text(), "clean")
    ndcg10 = 8
    assert rows["gru4rec hsd"][ndcg10].startswith("**0.1400 ± 0.0100**")
    assert rows["gru4rec semantic-outlier (ratio=0.1)"][ndcg10].startswith("<u>0.1217")
    assert rows["sasrec hsd"][ndcg10].startswith("**0.2100") and rows["sasrec none"][ndcg10].startswith("<u>0.2000")
    assert not rows["gru4rec none"][ndcg10].startswith(("**", "<u>"))
    assert rows["gru4rec hsd"][-1] == "+27.3%"  # ΔNDCG@10 vs gru4rec none (0.14 / 0.11)


def test_a_plain_control_on_prefix_instances_does_not_displace_the_default_plain_row(tmp_path):
    from benchmark.store import result_row

    store = build_store(tmp_path / "store")
    for seed, ndcg in zip(SEEDS, (0.05, 0.06, 0.07)):  # plain GRU4Rec trained like HSD: one instance per target
        row = result(0.0, "gru4rec", "none", None, seed, ndcg)
        row["config"]["train"].update(train_instances="prefix", prefix_epoch_share=0.1)
        row["run_id"] = f"gruprefix{seed}"
        store.write(result_row(row, grid="fixture"))
        row = result(0.0, "gru4rec", "hsd", None, seed, 0.14)  # HSD on its budget (instances: auto)
        row["config"]["train"].update(prefix_epoch_share=0.1)
        row["run_id"] = f"gruhsdshare{seed}"
        store.write(result_row(row, grid="fixture"))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    rows = _rows((tmp_path / "out" / "ml-100k.md").read_text(), "clean")
    control = "gru4rec none (train.prefix_epoch_share=0.1, train.train_instances=prefix)"
    assert rows[control][-1] == "—"
    # matched to neither plain row exactly: compared with the one trained on default instances (0.11)
    assert rows["gru4rec hsd (train.prefix_epoch_share=0.1)"][-1] == "+27.3%"


def test_a_plain_control_on_other_instances_is_not_a_setting_chosen_on_validation(tmp_path):
    from benchmark.store import result_row

    store = build_store(tmp_path / "store")
    for seed in SEEDS:  # a control on prefix instances that beats the default plain row on validation
        row = result(0.0, "gru4rec", "none", None, seed, 0.30)
        row["config"]["train"].update(train_instances="prefix", prefix_epoch_share=0.1)
        row["protocol"]["train_instances"] = "prefix"
        row["run_id"] = f"gruprefix{seed}"
        store.write(result_row(row, grid="fixture"))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    md = (tmp_path / "out" / "ml-100k.md").read_text()
    clean = md.split("## clean\n", 1)[1].split("\n## ", 1)[0]
    chosen = clean.split("### Hyperparameters chosen on validation", 1)[1].split("###", 1)[0]
    assert "| gru4rec | none |" not in chosen
    by_preset = md.split("## Paper vs ours, by protocol preset", 1)[1].split("\n## ", 1)[0]
    base = next(line for line in by_preset.splitlines() if line.startswith("| GRU4Rec / base |") and "NDCG@10" in line)
    assert "| 0.1100 (3) |" in base  # the default plain row (0.10, 0.11, 0.12), not the control's 0.30


def test_variants_separate_hyperparameters_and_sections_separate_noise(tmp_path):
    store = build_store(tmp_path / "store")
    sections = build_sections(store.frame("ok").to_dicts())["ml-100k"]
    assert [s.noise for s in sections] == ["clean", "replace α=0.1"]
    labels = [v.label for v in sections[0].variants]
    assert labels == ["none", "hsd", "semantic-outlier (ratio=0.05)", "semantic-outlier (ratio=0.1)", "none", "hsd"]
    assert all(v.seeds == [0, 1, 2] for v in sections[0].variants)


def test_a_variant_trained_on_part_of_each_epoch_says_so_in_its_label(tmp_path):
    rows = []
    for den, limit in (("none", None), ("hsd", 0.1)):
        for seed in SEEDS:
            res = result(0.0, "sasrec", den, None, seed, 0.2)
            res["run_id"] += "b"
            if limit is not None:
                res["config"]["train"]["prefix_epoch_share"] = limit
            rows.append(result_row(res, grid="fixture"))
    labels = [v.label for v in build_sections(rows)["ml-100k"][0].variants]
    assert labels == ["none", "hsd (train.prefix_epoch_share=0.1)"]


def test_paper_table_shows_every_cell_the_paper_reports(tmp_path):
    build_store(tmp_path / "store")
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    md = (tmp_path / "out" / "ml-100k.md").read_text()
    paper = md.split("## clean\n", 1)[1].split("### Paper vs ours", 1)[1].split("###", 1)[0]
    assert "| gru4rec / none | GRU4Rec / base | IADSR (CIKM '25) Table 3 | 0.0180 / 0.1760 |" in paper
    assert "GRU4Rec / HSD" in paper and "SASRec / HSD" in paper and "SASRec / base" in paper
    assert "### Paper vs ours" not in md.split("## replace α=0.1\n", 1)[1]  # no paper reports that setting


def test_files_end_with_commands_grid_files_and_commits_and_index_counts_failures(tmp_path):
    build_store(tmp_path / "store")
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    md = (tmp_path / "out" / "ml-100k.md").read_text()
    tail = md.split("## Provenance", 1)[1]
    assert "`bench grid configs/grids/fixture.yaml`" in tail and "`configs/grids/fixture.yaml`" in tail
    assert "`0123abc`" in tail
    index = (tmp_path / "out" / "README.md").read_text()
    assert re.search(r"\| \[ml-100k\.md\]\(ml-100k\.md\) \(\[csv\]\(ml-100k\.csv\)\) \| ml-100k \| clean, replace α=0\.1 \| 8 \| 24 \| 1 \|", index)


def test_stale_generated_files_are_removed_and_hand_written_files_kept(tmp_path):
    build_store(tmp_path / "store")
    out = tmp_path / "out"
    out.mkdir()
    (out / "gone.md").write_text("<!-- generated by `bench leaderboard`; edit the runs, not this file -->\nold\n")
    (out / "gone.csv").write_text("old\n")
    (out / "notes.md").write_text("hand-written\n")
    (out / "detection-beauty.md").write_text("<!-- generated by `bench detect`; rerun the command at the end -->\n")
    write_leaderboards(tmp_path / "store", out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "detection-beauty.md", "ml-100k-popularity.png",
                                                      "ml-100k-robustness.png", "ml-100k.csv", "ml-100k.md", "notes.md"]
    assert "[detection-beauty.md](detection-beauty.md)" in (out / "README.md").read_text()  # indexed, kept


def test_paper_numbers_are_transcribed_with_their_source():
    assert all(r.paper.startswith(("IADSR", "LLM4DSR")) for r in PAPER_RESULTS)
    ml = {(r.backbone_label, r.method_label): r for r in results_for("ml-100k", "clean", "loo")}
    assert ml["GRU4Rec", "base"].metrics["hr@5"] == 0.0180 and ml["SASRec", "IADSR"].metrics["ndcg@20"] == 0.0311
    assert ml["—", "DCRec"].ours == ("dcrec", "none") and ml["Caser", "HSD"].ours == ("caser", "hsd")
    game = {(r.backbone_label, r.method_label): r for r in results_for("game", "replace α=0.1", "window")}
    assert game["BERT4Rec", "LLM4DSR"].metrics == {"ndcg@20": 0.0316, "ndcg@50": 0.0397, "hr@20": 0.0644, "hr@50": 0.1056}
    assert game["LLaRA", "none"].ours is None
    sports = {(r.backbone_label, r.method_label): r for r in results_for("sports", "clean", "loo")}
    assert "typo" in sports["GRU4Rec", "base"].note
    beauty = {(r.backbone_label, r.method_label) for r in results_for("beauty", "clean", "loo")}
    assert ("SASRec", "HSD") not in beauty  # lost in extraction: no numbers, no row


def test_rows_stored_before_a_key_existed_group_with_rows_at_its_default(tmp_path):
    store = ResultStore(tmp_path / "store")
    for seed, ndcg in ((0, 0.05), (1, 0.06)):
        res = result(0.0, "sasrec", "hsd", None, seed, ndcg)
        if seed == 1:  # written after train.min_epochs was added (its default, 0)
            res["config"]["train"]["min_epochs"] = 0
        store.write(result_row(res, grid="fixture"))
    assert store.frame()["train.min_epochs"].to_list() == [0, 0]
    [section] = build_sections(store.frame("ok").to_dicts())["ml-100k"]
    [variant] = section.variants
    assert variant.label == "hsd" and variant.seeds == [0, 1]


def test_hyperparameters_are_chosen_by_validation_metric_not_test(tmp_path):
    """semantic-outlier ratio 0.05 has the better validation NDCG@10 but the worse test NDCG@10;
    the choice must follow validation. A third setting with one seed only is not eligible even
    though its validation value is the highest."""
    store = ResultStore(tmp_path / "store")
    for ratio, valid, test, seeds in ((0.05, 0.30, 0.10, SEEDS), (0.1, 0.20, 0.15, SEEDS), (0.2, 0.90, 0.90, (0,))):
        for seed in seeds:
            r = result(0.0, "gru4rec", "semantic-outlier", ratio, seed, test)
            r["valid"] = {"ndcg@10": valid + 0.001 * seed}
            store.write(result_row(r))
    for seed in SEEDS:
        store.write(result_row(result(0.0, "gru4rec", "none", None, seed, 0.12)))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    md = (tmp_path / "out" / "ml-100k.md").read_text()
    block = md.split("### Hyperparameters chosen on validation\n", 1)[1].split("###", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("| gru4rec")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[:5] == ["gru4rec", "semantic-outlier", "3 (2)", "semantic-outlier (ratio=0.05)", "0.3010"]
    with open(tmp_path / "out" / "ml-100k.csv", newline="") as fh:
        flags = {row["variant"]: row["chosen_on_valid"] for row in csv.DictReader(fh)}
    assert flags == {"none": "", "semantic-outlier (ratio=0.05)": "1", "semantic-outlier (ratio=0.1)": "0",
                     "semantic-outlier (ratio=0.2)": "0"}


def test_robustness_figure_follows_each_denoiser_across_noise_ratios_with_its_validation_choice(tmp_path):
    from benchmark.figures import robustness_series
    from benchmark.store import ResultStore

    build_store(tmp_path / "store")
    rows = [r for r in ResultStore(tmp_path / "store").frame().to_dicts() if r["status"] == "ok"]
    backbone, series = robustness_series(build_sections(rows)["ml-100k"])
    assert backbone == "gru4rec"  # sasrec ran on clean data only: no line of two points
    assert series["none"] == [(0.0, pytest.approx(0.11)), (0.1, pytest.approx(0.085))]
    # semantic-outlier ran with two ratios on clean data; the clean point is one of them, never both
    assert len(series["semantic-outlier"]) == 2 and series["semantic-outlier"][1] == (0.1, pytest.approx(0.287 / 3))


def test_robustness_figure_keeps_the_plain_line_when_the_clean_section_also_holds_a_plain_control(tmp_path):
    from benchmark.figures import robustness_series
    from benchmark.store import ResultStore, result_row

    store = build_store(tmp_path / "store")
    for seed in SEEDS:  # a plain control on prefix instances, clean data only: its label gets the keys
        row = result(0.0, "gru4rec", "none", None, seed, 0.05)
        row["config"]["train"].update(train_instances="prefix", prefix_epoch_share=0.1)
        row["protocol"]["train_instances"] = "prefix"  # another protocol: not passed over by the validation choice
        row["run_id"] = f"gruprefix{seed}"
        store.write(result_row(row, grid="fixture"))
    rows = [r for r in ResultStore(tmp_path / "store").frame().to_dicts() if r["status"] == "ok"]
    backbone, series = robustness_series(build_sections(rows)["ml-100k"])
    assert backbone == "gru4rec"
    # the default plain row is one line across both ratios, named "none"; the control has one point: no line
    assert series["none"] == [(0.0, pytest.approx(0.11)), (0.1, pytest.approx(0.085))]
    assert sorted(series) == ["none", "semantic-outlier"]


def test_popularity_figure_reads_removal_ratio_per_bucket_from_the_detection_columns(tmp_path):
    from benchmark.figures import popularity_series
    from benchmark.store import ResultStore

    build_store(tmp_path / "store")
    rows = [r for r in ResultStore(tmp_path / "store").frame().to_dicts() if r["status"] == "ok"]
    section, backbone, removal, _ = popularity_series(build_sections(rows)["ml-100k"])
    assert section is not None and removal
    for label, values in removal.items():
        variant = next(v for v in section.variants if v.backbone == backbone and label in (v.denoiser, v.label))
        assert values[0] == pytest.approx(np.mean(list(variant.values("det_removal_ratio_b0").values())))


def test_failed_cells_are_listed_once_per_reason_with_their_seeds(tmp_path):
    from benchmark.leaderboard import render_failures

    msg = "IADSR needs item text, but dataset 'sports' has none (e.g. 'sports' has no titles in this suite)"
    rows = [failure_row(f"f{seed}", config(0.0, "sasrec", "iadsr", None, seed), msg, "ValueError") for seed in (2, 0, 1)]
    rows += [failure_row("nan", config(0.0, "sasrec", "said", None, 0), "FloatingPointError: nan\ntraceback", "FloatingPointError")]
    for row in rows:
        row["noise_setting"] = "clean"
    table = render_failures(rows)
    assert table[2:] == [f"| sasrec | iadsr | clean | 0, 1, 2 | {msg} |", "| sasrec | said | clean | 0 | FloatingPointError: nan |"]


def test_not_applicable_cells_are_listed_apart_from_failures_and_counted_apart_in_the_index(tmp_path):
    build_store(tmp_path / "store")
    write_leaderboards(tmp_path / "store", tmp_path / "out", gaps=[], superseded=[])
    md = (tmp_path / "out" / "ml-100k.md").read_text()
    not_applicable = md.split("## Not applicable\n", 1)[1].split("\n## ", 1)[0]
    failed = md.split("## Failed\n", 1)[1].split("\n## ", 1)[0]
    assert "| caser | said | clean | 0 | NotApplicableError: said needs item text" in not_applicable
    assert "FloatingPointError" not in not_applicable
    assert "| caser | none | clean | 0 | FloatingPointError: nan |" in failed and "said" not in failed
    index = (tmp_path / "out" / "README.md").read_text()
    assert "| not applicable | failed runs |" in index
    assert next(line for line in index.splitlines() if "| ml-100k |" in line).endswith("| 1 | 1 |")


def test_a_failure_whose_cell_later_succeeded_under_another_run_id_is_not_listed(tmp_path):
    """A cell that failed under older code (its config lacked a key added since, so its run id
    differs) and then succeeded is not a failed cell; an unrelated failure still is."""
    store = build_store(tmp_path / "store")
    stale = config(0.0, "gru4rec", "hsd", None, 1)
    store.write(failure_row("stale1", stale, "ConfigAttributeError: Key 'protocol' not in 'RunConfig'",
                            "ConfigAttributeError", grid="fixture"))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    page = (tmp_path / "out" / "ml-100k.md").read_text()
    assert "ConfigAttributeError" not in page
    assert "FloatingPointError: nan" in page  # failed1 (caser / none) never succeeded
    index = (tmp_path / "out" / "README.md").read_text()
    assert "| [ml-100k.md](ml-100k.md) ([csv](ml-100k.csv)) | ml-100k |" in index and "| 1 |" in index


def test_a_failure_stays_listed_when_only_another_dataset_or_seed_of_its_config_succeeded(tmp_path):
    """The same method failing on a dataset without titles and succeeding on one with titles are
    different cells; so are two seeds of one configuration."""
    store = build_store(tmp_path / "store")
    no_titles = config(0.0, "gru4rec", "hsd", None, 0)  # gru4rec/hsd seeds 0-2 succeeded on ml-100k
    no_titles["dataset"]["name"] = "sports"
    store.write(failure_row("sports1", no_titles, "ValueError: hsd needs item text, but dataset 'sports' has none",
                            "ValueError", grid="fixture"))
    other_seed = config(0.0, "gru4rec", "hsd", None, 7)
    store.write(failure_row("seed7", other_seed, "MemoryError: out of memory", "MemoryError", grid="fixture"))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    index = (tmp_path / "out" / "README.md").read_text().splitlines()
    assert [ln.endswith("| 1 |") for ln in index if "| sports |" in ln] == [True]  # its one failed run
    assert "MemoryError: out of memory" in (tmp_path / "out" / "ml-100k.md").read_text()


def test_a_row_whose_seed_ran_into_the_epoch_cap_is_marked(tmp_path):
    build_store(tmp_path / "store")
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    rows = [ln for ln in (tmp_path / "out" / "ml-100k.md").read_text().splitlines() if ln.startswith("| sasrec |")]
    marked = {ln.split(" | ")[1] for ln in rows if " | 3 ‡ | " in ln}
    assert marked == {"none"}  # plain SASRec's seed 0 ran all 300 epochs; its hsd row stopped early


def test_a_text_row_with_a_seed_stored_before_rows_named_their_text_encoders_is_marked(tmp_path):
    import polars as pl

    store = build_store(tmp_path / "store")
    old = result(0.1, "gru4rec", "semantic-outlier", 0.1, 1, 0.10)["run_id"]
    store.write(pl.read_parquet(store.path(old)).drop("text_encoders").to_dicts()[0])
    plain = result(0.1, "gru4rec", "none", None, 1, 0.09)["run_id"]  # no text vectors: never marked
    store.write(pl.read_parquet(store.path(plain)).drop("text_encoders").to_dicts()[0])
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    md = (tmp_path / "out" / "ml-100k.md").read_text()
    marked = [ln for ln in md.splitlines() if ln.startswith("| gru4rec |") and " | 3 ◇ | " in ln]
    assert len(marked) == 1 and "semantic-outlier" in marked[0]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "ml-100k.csv").read_text())))
    stale = {(r["noise"], r["denoiser"]): r["stale_text_seeds"] for r in rows if r["stale_text_seeds"]}
    assert list(stale.values()) == ["1"] and next(iter(stale))[1] == "semantic-outlier"


def test_provenance_counts_how_many_of_a_grid_files_cells_are_in_the_store(tmp_path):
    from benchmark.grid import expand, load_grid

    grid = tmp_path / "part.yaml"
    grid.write_text("datasets: [ml-100k]\nbackbones: [sasrec]\ndenoisers: [none, hsd]\nseeds: [0, 1]\n")
    cells = expand(load_grid(grid))
    assert len(cells) == 4
    store = ResultStore(tmp_path / "store")
    for cell in cells[:3]:
        res = result(0.0, "sasrec", cell.denoiser, None, cell.seed, 0.2)
        res["run_id"] = cell.run_id
        store.write(result_row(res, grid="part", grid_file=str(grid), command=f"bench grid {grid}"))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    text = (tmp_path / "out" / "ml-100k.md").read_text()
    assert f"- `{grid}`: 3 of its 4 cells for this dataset are in the store" in text


def test_a_setting_left_to_the_preset_reads_default_in_the_label_beside_an_explicit_one():
    rows = []
    for decision in (None, "sample"):
        for seed in SEEDS:
            res = result(0.0, "sasrec", "hsd", None, seed, 0.2)
            res["config"]["denoiser"]["eval_decision"] = decision
            res["run_id"] += f"d{decision}"
            rows.append(result_row(res, grid="fixture"))
    labels = [v.label for v in build_sections(rows)["ml-100k"][0].variants]
    assert labels == ["hsd (eval_decision=default)", "hsd (eval_decision=sample)"]


def test_paper_comparisons_on_a_same_named_but_differently_filtered_dataset_carry_the_caveat(tmp_path):
    """The suite's `game` is not LLM4DSR's Game: its by-preset table says so; ML-100K's does not."""
    store = build_store(tmp_path / "store")
    for seed in SEEDS:
        row = result(0.0, "sasrec", "none", None, seed, 0.05)
        row["config"]["dataset"]["name"] = "game"
        row["run_id"] = f"gamesas{seed}"
        store.write(result_row(row, grid="fixture"))
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    game = (tmp_path / "out" / "game.md").read_text().split("## Paper vs ours, by protocol preset", 1)[1]
    assert "**Not the paper's data.**" in game.split("| paper row |", 1)[0] and "LLM4DSR's Game" in game
    assert "| SASRec / none | LLM4DSR" in game  # the comparison itself stays
    assert "Not the paper's data" not in (tmp_path / "out" / "ml-100k.md").read_text()


def test_variant_on_instances_no_plain_row_used_is_compared_with_the_plain_row_on_default_instances(tmp_path):
    from benchmark.sections import baseline_of

    store = build_store(tmp_path / "store")
    for seed in SEEDS:
        control = result(0.0, "gru4rec", "none", None, seed, 0.05)  # plain control on prefix instances
        control["config"]["train"].update(train_instances="prefix", prefix_epoch_share=0.1)
        control["run_id"] = f"gruprefix{seed}"
        last = result(0.0, "gru4rec", "hsd", None, seed, 0.01)  # trained on last-only instances
        last["config"]["train"].update(train_instances="last_only")
        last["run_id"] = f"grulast{seed}"
        for row in (control, last):
            store.write(result_row(row, grid="fixture"))
    rows = [r for r in ResultStore(tmp_path / "store").frame().to_dicts() if r["status"] == "ok"]
    clean = [s for s in build_sections(rows)["ml-100k"] if s.setting.get("dataset.noise.kind") == "none"]
    assert len(clean) == 1
    variant = next(v for v in clean[0].variants if v.config.get("train.train_instances") == "last_only")
    base = baseline_of(variant, clean[0])
    assert base is not None and base.denoiser == "none"
    assert base.config.get("train.train_instances", "auto") == "auto"
    assert base.values("test_ndcg@10") == pytest.approx({0: 0.10, 1: 0.11, 2: 0.12})


def test_findings_sum_up_the_robustness_figure_against_plain_at_the_highest_noise_ratio(tmp_path):
    from benchmark.findings import robustness_line

    build_store(tmp_path / "store")
    rows = [r for r in ResultStore(tmp_path / "store").frame().to_dicts() if r["status"] == "ok"]
    line = robustness_line("ml-100k", build_sections(rows)["ml-100k"])
    # plain gru4rec: mean 0.11 clean, 0.085 at 10%; semantic-outlier at 10%: [0.09, 0.10, 0.097]
    assert "plain test NDCG@10 falls from 0.1100 at 0% injected noise to 0.0850 at 10% (-22.7%)" in line
    p = paired_pvalue({0: 0.09, 1: 0.10, 2: 0.097}, {0: 0.08, 1: 0.09, 2: 0.085})
    assert p < 0.05 and f"semantic-outlier +12.5% (p = {p:.3f}; significantly above plain at 10%)" in line


def test_a_section_stopped_on_training_loss_chooses_no_setting_and_keeps_every_variant(tmp_path):
    from benchmark.sections import chosen_on_validation, representative_variants

    store = ResultStore(tmp_path / "store")
    for loss, ndcg in (("auto", 0.20), ("inbatch_tanh", 0.10)):
        for seed in SEEDS:
            row = result(0.0, "sasrec", "none", None, seed, ndcg)
            row["config"]["train"].update(monitor="train/loss", loss=loss)
            row["run_id"] += loss[:3]
            store.write(result_row(row, grid="fixture"))
    section = build_sections(store.frame("ok").to_dicts())["ml-100k"][0]
    assert len(section.variants) == 2
    assert chosen_on_validation(section) == []
    assert len(representative_variants(section)) == 2
    write_leaderboards(tmp_path / "store", tmp_path / "out")
    md = (tmp_path / "out" / "ml-100k.md").read_text()
    assert "Hyperparameters chosen on validation" not in md.split("## clean\n", 1)[1].split("\n## ", 1)[0]
