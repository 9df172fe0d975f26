"""Protocol presets: composition order, per-dataset/backbone layers, recording, errors."""
from __future__ import annotations

import pytest

from benchmark.cli import main as bench
from benchmark.config import ConfigError, compose, run_id, to_dict
from benchmark.grid import expand, load_grid
from benchmark.protocols import load_protocol, protocol_names
from benchmark.registry import BACKBONES, DATASETS
from benchmark.sections import build_sections


def test_benchmark_preset_leaves_run_ids_of_configs_without_a_protocol_key_unchanged():
    cfg = to_dict(compose(backbone="sasrec"))
    assert cfg["protocol"] == "benchmark"
    before = {k: v for k, v in cfg.items() if k != "protocol"}
    assert run_id(cfg) == run_id(before)
    assert run_id(compose(backbone="sasrec", protocol="iadsr-paper")) != run_id(cfg)


def test_iadsr_paper_uses_length_32_on_amazon_and_50_on_ml100k_and_two_gru_layers():
    beauty = compose("gru4rec", "none", "beauty", protocol="iadsr-paper")
    ml = compose("sasrec", "none", "ml-100k", protocol="iadsr-paper")
    assert (beauty.dataset.max_len, ml.dataset.max_len) == (32, 50)
    assert beauty.backbone.num_layers == 2 and beauty.backbone.hidden_size == 128
    assert beauty.train.batch_size == 32 and beauty.train.lr == pytest.approx(1e-4)
    assert "num_layers" not in ml.backbone  # GRU-only keys never reach another backbone


def test_llm4dsr_paper_switches_to_windows_and_metrics_at_20_and_50():
    cfg = compose("sasrec", "none", "ml-100k", overrides=["protocol=llm4dsr-paper"])
    assert cfg.dataset.split == "window" and cfg.dataset.window_size == 11
    assert list(cfg.eval.ks) == [20, 50] and cfg.train.monitor == "valid/ndcg@20"
    assert cfg.train.loss == "bce_neg" and cfg.protocol == "llm4dsr-paper"
    assert compose("bert4rec", "none", "ml-100k", protocol="llm4dsr-paper").train.loss == "auto"


def test_profile_and_command_line_overrides_win_over_the_preset():
    cfg = compose("sasrec", "none", "beauty", profile="budget", protocol="llm4dsr-paper",
                  overrides=["train.lr=0.01"])
    assert cfg.train.max_epochs == 40  # budget profile caps the preset's 201
    assert cfg.train.lr == pytest.approx(0.01)


@pytest.mark.parametrize("name", [n for n in protocol_names() if n != "benchmark"])
def test_every_paper_preset_lists_its_differences_and_composes_for_every_backbone_and_dataset(name):
    preset = load_protocol(name)
    assert preset.description and len(preset.differences) >= 3
    for dataset in DATASETS.names():
        for backbone in BACKBONES.names():
            assert compose(backbone, "none", dataset, protocol=name).protocol == name


def test_unknown_protocol_lists_the_available_ones_and_bench_exits_nonzero(capsys):
    with pytest.raises(ConfigError, match="available: benchmark, iadsr-paper, llm4dsr-paper"):
        compose(protocol="iadsr")
    assert bench(["run", "--protocol", "iadsr", "--dataset", "synthetic"]) == 2
    assert "unknown protocol 'iadsr'" in capsys.readouterr().err


def test_malformed_preset_names_the_file_and_key(tmp_path, monkeypatch):
    import benchmark.protocols as protocols

    (tmp_path / "broken.yaml").write_text("name: broken\nby_backbone: {sasrec: 3}\n")
    monkeypatch.setattr(protocols, "PROTOCOL_DIR", tmp_path)
    with pytest.raises(protocols.ProtocolError, match=r"broken.yaml: key 'by_backbone'"):
        load_protocol("broken")


def test_grid_protocol_key_reaches_every_cell_and_unknown_names_are_rejected(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("protocol: iadsr-paper\ndatasets: [beauty]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0, 1]\n")
    cells = expand(load_grid(path))
    assert [c.compose().dataset.max_len for c in cells] == [32, 32]
    assert all(c.compose().protocol == "iadsr-paper" for c in cells)
    path.write_text("protocol: iadsr\ndatasets: [beauty]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0]\n")
    with pytest.raises(ConfigError, match="protocol"):
        load_grid(path)


def test_window_preset_run_records_its_preset_and_reports_at_20_and_50(tmp_path):
    from benchmark.run import execute
    from benchmark.store import result_row

    cfg = compose("sasrec", "none", "synthetic", profile="smoke", protocol="llm4dsr-paper",
                  overrides=["dataset.synthetic.n_users=40", "dataset.synthetic.n_items=60"])  # K=50 needs > 50 items
    result = execute(cfg, runs_dir=tmp_path)
    assert result.protocol["preset"] == "llm4dsr-paper" and result.protocol["split"].startswith("window")
    assert {"ndcg@20", "ndcg@50", "hr@50"} <= set(result.test)
    assert result_row(result.to_json())["protocol"] == "llm4dsr-paper"


def test_leaderboard_sections_separate_protocols_and_older_rows_count_as_benchmark():
    import json

    def row(protocol: str | None, seed: int) -> dict:
        cfg = {"seed": seed, "dataset": {"name": "ml-100k", "max_len": 50}, "backbone": {"name": "sasrec"},
               "denoiser": {"name": "none"}, "train": {"max_epochs": 40}, "eval": {"ks": [5, 10, 20]}}
        if protocol is not None:  # rows stored before presets existed have no protocol key
            cfg["protocol"] = protocol
        return {"run_id": f"r{protocol}{seed}", "config_json": json.dumps(cfg), "noise_setting": "clean",
                "test_ndcg@10": 0.1 + seed / 100, "status": "ok"}

    sections = build_sections([row(None, 0), row("benchmark", 1), row("iadsr-paper", 0)])["ml-100k"]
    assert sorted(s.setting["protocol"] for s in sections) == ["benchmark", "iadsr-paper"]
    bench_section = next(s for s in sections if s.setting["protocol"] == "benchmark")
    assert bench_section.variants[0].seeds == [0, 1]


def _store_row(protocol: str, denoiser: dict, seed: int, valid: float, test: float, max_len: int = 50) -> dict:
    import json

    cfg = {"seed": seed, "protocol": protocol, "dataset": {"name": "ml-100k", "max_len": max_len},
           "backbone": {"name": "sasrec"}, "denoiser": denoiser, "train": {"max_epochs": 40},
           "eval": {"ks": [5, 10, 20]}}
    name = json.dumps(cfg, sort_keys=True)
    return {"run_id": name, "config_json": json.dumps(cfg), "noise_setting": "clean", "status": "ok",
            "valid_ndcg@10": valid, "test_ndcg@10": test, "test_hr@10": 2 * test}


def test_paper_vs_ours_by_preset_uses_the_preset_section_and_the_validation_choice():
    from benchmark.leaderboard import ours_by_preset, render_paper_by_preset
    from benchmark.paper_numbers import PAPER_RESULTS

    rows = []
    for seed in (0, 1, 2):
        # benchmark: two IADSR settings; the one with the better validation score has the worse test score
        rows.append(_store_row("benchmark", {"name": "iadsr", "info_weight": 0.1}, seed, 0.30, 0.05))
        rows.append(_store_row("benchmark", {"name": "iadsr", "info_weight": 1.0}, seed, 0.20, 0.09))
        rows.append(_store_row("iadsr-paper", {"name": "iadsr"}, seed, 0.10, 0.02 + seed / 1000))
    sections = build_sections(rows)["ml-100k"]
    ref = next(r for r in PAPER_RESULTS if r.dataset == "ml-100k" and r.ours == ("sasrec", "iadsr"))
    ours = ours_by_preset(ref, sections)
    assert ours["benchmark"].config["denoiser.info_weight"] == 0.1
    assert ours["iadsr-paper"].values("test_ndcg@10") == {0: 0.02, 1: 0.021, 2: 0.022}
    table = "\n".join(render_paper_by_preset("ml-100k", sections))
    paper = ref.metrics["ndcg@10"]
    assert f"iadsr-paper: 0.0210 (3) | {(0.021 - paper) / paper:+.1%} | 0.0500 (3) |" in table
