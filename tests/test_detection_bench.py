"""`bench detect`: detection of methods that decide without training, over noise draws."""
from __future__ import annotations

import json

import pytest

from benchmark.detection_bench import NeedsTraining, detect

SMALL = ["dataset.synthetic.n_users=120", "dataset.noise.kind=replace", "dataset.noise.alpha=0.1"]
FIELDS = ("n_flagged", "n_noise", "tp", "precision", "recall", "f1", "random_expected_f1", "roc_auc")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


def test_detect_equals_the_detection_recorded_by_a_run_on_the_same_noisy_data(tmp_path):
    from benchmark.config import compose
    from benchmark.run import execute

    cfg = compose(backbone="gru4rec", denoiser="semantic-outlier", dataset="synthetic", profile="smoke",
                  overrides=[*SMALL, "train.max_epochs=1", "dataset.max_len=10"])
    run = execute(cfg, runs_dir=tmp_path / "runs").detection
    (got,) = detect("synthetic", ["semantic-outlier"], [int(cfg.dataset.noise.seed)], [*SMALL, "dataset.max_len=10"])
    mine = got.per_seed[int(cfg.dataset.noise.seed)]
    assert {k: mine[k] for k in FIELDS} == pytest.approx({k: run[k] for k in FIELDS})
    assert [b["removal_ratio"] for b in mine["buckets"]] == pytest.approx([b["removal_ratio"] for b in run["buckets"]])


def test_each_noise_draw_is_scored_on_its_own_labels_and_beats_random():
    results = detect("synthetic", ["semantic-outlier", "said"], [1, 2, 3], SMALL)
    assert [r.denoiser for r in results] == ["semantic-outlier", "said"]
    for r in results:
        assert sorted(r.per_seed) == [1, 2, 3]
        assert len({(d["n_noise"], d["tp"]) for d in r.per_seed.values()}) > 1  # independent draws
        assert all(d["f1"] > d["random_expected_f1"] for d in r.per_seed.values())
        assert len(r.values("f1")) == 3


def test_methods_that_flag_with_a_trained_model_are_refused():
    with pytest.raises(NeedsTraining, match="denoiser 'iadsr'.*trained model"):
        detect("synthetic", ["iadsr"], [0], SMALL)


def test_data_without_injected_noise_is_a_clear_error(capsys):
    from benchmark.cli import main

    code = main(["detect", "--denoisers", "semantic-outlier", "--dataset", "synthetic",
                 "dataset.synthetic.n_users=40", "dataset.synthetic.noise_rate=0.0"])
    err = capsys.readouterr().err
    assert code == 2 and "no injected noise to detect" in err


def test_cli_writes_markdown_and_json_that_name_the_command(tmp_path, capsys):
    from benchmark.cli import main

    out = tmp_path / "detection-synthetic"
    args = ["detect", "--denoisers", "semantic-outlier", "--dataset", "synthetic", "--noise-seeds", "1,2",
            "--out", str(out), *SMALL]
    assert main(args) == 0
    text = out.with_suffix(".md").read_text()
    assert "| semantic-outlier | 2 |" in text and "replace α=0.1" in text
    assert f"`bench detect --denoisers semantic-outlier --dataset synthetic --noise-seeds 1,2 --out {out}" in text
    payload = json.loads(out.with_suffix(".json").read_text())
    assert sorted(payload["results"][0]["per_noise_seed"]) == ["1", "2"]
    assert main(args) == 0 and out.with_suffix(".md").read_text() == text  # same inputs, same bytes
