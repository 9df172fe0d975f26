"""Same config and seed => identical results on CPU, for every registered backbone and every
registered denoiser: two runs into separate run directories give equal validation and test
metrics, per-epoch curves (train losses included) and noise-detection reports, bit for bit."""
from __future__ import annotations

import pytest

from benchmark.config import compose
from benchmark.registry import BACKBONES, DENOISERS, TEXT_ENCODERS
from benchmark.run import execute
from tests.test_iadsr import BagOfWords
from tests.test_llm4dsr import SMALL as LLM4DSR_SMALL
from tests.tiny_llama import build_tiny_llama

TINY = ["dataset.synthetic.n_users=48", "dataset.synthetic.n_items=30", "dataset.synthetic.min_len=6",
        "dataset.synthetic.max_len=12", "dataset.max_len=8", "dataset.noise.kind=replace", "dataset.noise.alpha=0.1",
        "train.batch_size=32", "train.max_epochs=2", "train.patience=5", "logging.csv=false"]

# keys that point a method at the test encoder (no model load) or shrink it for a test
DENOISER_OPTIONS = {
    "iadsr": ["denoiser.text_encoder=test-bow"],
    "iadsr-reference": ["denoiser.text_encoder=test-bow"],
    "said": ["denoiser.encoder=test-bow"],
    "said-hard": ["denoiser.encoder=test-bow"],
    "semantic-outlier": ["denoiser.encoder=test-bow"],
    "llm4dsr": ["denoiser.grounding_encoder=test-bow"] + [f"denoiser.{k}={v}" for k, v in LLM4DSR_SMALL.items()],
}


@pytest.fixture
def test_encoder(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    TEXT_ENCODERS.discover()
    monkeypatch.setitem(TEXT_ENCODERS._items, "test-bow", BagOfWords)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny_llama")))


def _outcome(result) -> dict:
    return {"valid": result.valid, "test": result.test, "test_optimistic": result.test_optimistic,
            "curve": [{k: v for k, v in row.items()} for row in result.curve], "detection": result.detection,
            "best_epoch": result.best_epoch, "mode": result.mode}


def _twice(tmp_path, backbone: str, denoiser: str, options: list[str]) -> tuple[dict, dict]:
    cfg = compose(backbone=backbone, denoiser=denoiser, dataset="synthetic", profile="smoke",
                  overrides=[*TINY, *options])
    first = execute(cfg, runs_dir=tmp_path / "first")
    second = execute(cfg, runs_dir=tmp_path / "second")
    assert first.run_id == second.run_id
    return _outcome(first), _outcome(second)


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_every_backbone_gives_identical_metrics_for_the_same_config_and_seed(tmp_path, backbone):
    first, second = _twice(tmp_path, backbone, "none", [])
    assert first["test"] and first["curve"]
    assert first == second


@pytest.mark.parametrize("denoiser", [name for name in DENOISERS.names() if name != "none"])
def test_every_denoiser_gives_identical_metrics_for_the_same_config_and_seed(tmp_path, test_encoder, denoiser,
                                                                              request):
    options = list(DENOISER_OPTIONS.get(denoiser, []))
    if denoiser == "llm4dsr":
        options.append(f"denoiser.model_path={request.getfixturevalue('llama')}")
    first, second = _twice(tmp_path, "sasrec", denoiser, options)
    assert first["test"] and first["curve"]
    assert first == second


def test_a_different_seed_changes_the_metrics(tmp_path):
    """The comparison above can fail: the seed reaches the results."""
    runs = []
    for seed in (0, 1):
        cfg = compose(backbone="sasrec", denoiser="none", dataset="synthetic", profile="smoke",
                      overrides=[*TINY, f"seed={seed}"])
        runs.append(_outcome(execute(cfg, runs_dir=tmp_path / str(seed))))
    assert runs[0]["curve"] != runs[1]["curve"]
