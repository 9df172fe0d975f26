"""LLM4DSR on a tiny randomly initialised Llama: units, instruction data, LoRA resume, batched
first-token scoring, thresholds, b, grounding, completion modes and the end-to-end export."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from benchmark.config import compose
from benchmark.data.sequences import Sequences
from benchmark.registry import TEXT_ENCODERS
from denoisers.llm4dsr import LLM4DSR, LLM4DSRConfig
from denoisers.llm4dsr import data as D
from denoisers.llm4dsr.finetune import LoraSettings, finetune_lora
from denoisers.llm4dsr.grounding import clean_suggestion, ground
from denoisers.llm4dsr.model import last_position_logprobs, left_pad, load_causal_lm, tokenize
from denoisers.llm4dsr.uncertainty import first_token_ids, quantile_threshold, score_units, select_top_b
from tests.test_said import bow_vectors, fake_resources, synthetic_split
from tests.tiny_llama import build_tiny_llama


@dataclass
class BowConfig:
    dim: int = 128


class BowEncoder:
    """Bag-of-words test encoder (registered as ``test-bow``): no model download or load."""

    Config = BowConfig

    def __init__(self, config: BowConfig | None = None) -> None:
        self.config = config or BowConfig()
        self.encoder_id = f"test-bow:{self.config.dim}"

    @property
    def dim(self) -> int:
        return self.config.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        return bow_vectors(list(texts), self.config.dim)


if "test-bow" not in TEXT_ENCODERS._items:
    TEXT_ENCODERS.add("test-bow", BowEncoder, origin=__name__)

SMALL = dict(sft_samples=6, sft_epochs=1, batch_size=3, micro_batch_size=3, warmup_steps=1, lr=1e-3, cutoff=1024,
             max_new_tokens=4, score_batch_size=4, gen_batch_size=4)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


def small_split(n_users: int = 8):
    return synthetic_split(n_users, **{"synthetic.min_len": 5, "synthetic.max_len": 9})


def test_chunk_units_cover_every_position_once_within_rows():
    seqs = Sequences.from_lists([list(range(1, 26)), [3, 4], [], list(range(1, 12))])
    units = D.chunk_units(seqs, 11)
    assert np.array_equal(units.flat, np.arange(len(seqs.items)))
    assert units.lengths.tolist() == [3, 11, 11, 2, 11]  # row 0 cut from its end: 3 + 11 + 11
    rows = seqs.row_of_position[units.flat]
    assert all(len(set(rows[s:e])) == 1 for s, e in zip(units.offsets[:-1], units.offsets[1:]))
    last = D.last_window_units(seqs, 4)
    assert last.lengths.tolist() == [4, 2, 4]
    assert seqs.items[last.flat].tolist() == [22, 23, 24, 25, 3, 4, 8, 9, 10, 11]


def test_instruction_data_replaces_one_item_and_answers_with_noise_and_original():
    split = small_split()
    units = D.chunk_units(split.train, 11)
    sft = D.instruction_data(units, split.train.items, split.item_text, split.n_items, samples=5, seed=42)
    assert len(sft.prompts) == 5 and len(set(sft.unit.tolist())) == 5
    titles = split.item_text
    for k in range(5):  # five examples
        unit = split.train.items[units.flat[units.offsets[sft.unit[k]]:units.offsets[sft.unit[k] + 1]]]
        assert sft.original_item[k] == unit[sft.slot[k]]
        listed = unit.copy()
        listed[sft.slot[k]] = sft.noise_item[k]
        assert D.input_texts(D.Units(np.arange(len(listed)), np.array([0, len(listed)])), listed, titles)[0] in sft.prompts[k]
        assert sft.answers[k] == f'Noise Items: "{titles[sft.noise_item[k]]}"\nSuggested Replacements: "{titles[sft.original_item[k]]}"'
    again = D.instruction_data(units, split.train.items, titles, split.n_items, samples=5, seed=42)
    assert again.prompts == sft.prompts


def test_batched_scores_equal_single_prompt_log_softmax_at_the_answer_position(llama):
    split = small_split(6)
    model, tok, device = load_causal_lm(llama)
    units = D.chunk_units(split.train, 11)
    prompts = [D.prompt(x, D.scoring_prefix("single")) for x in D.input_texts(units, split.train.items, split.item_text)]
    first = first_token_ids(tok, split.item_text)
    scores = score_units(model, tok, prompts, units, split.train.items, first, batch_size=4, device=device)
    assert scores.shape == (len(units.flat),) and np.isfinite(scores).all()
    ids = tokenize(tok, prompts)
    for u in range(units.n_units):  # reference: one unpadded forward per prompt
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids[u]])).logits[0, -1], -1).numpy()
        entries = np.arange(units.offsets[u], units.offsets[u + 1])
        expected = logp[first[split.train.items[units.flat[entries]]]]
        assert np.allclose(scores[entries], expected, atol=1e-4)
        distinct = np.unique(first[split.train.items[units.flat[entries]]])
        assert np.exp(logp[distinct]).sum() <= 1.0 + 1e-6
        assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-4)


def test_first_token_is_index_one_of_the_bos_prefixed_tokenisation(llama):
    _, tok, _ = load_causal_lm(llama)
    titles = ["", "tent lantern Kovaremi", "Gloss foundation"]
    first = first_token_ids(tok, titles)
    assert first[0] == -1
    for i in (1, 2):
        assert first[i] == tok(titles[i]).input_ids[1]


def test_left_padding_does_not_change_the_last_position_distribution(llama):
    model, tok, device = load_causal_lm(llama)
    ids = tokenize(tok, ["a short prompt", "a much longer prompt with several more words in it"])
    batched = last_position_logprobs(model, *left_pad(ids, tok.pad_token_id, device))
    alone = last_position_logprobs(model, *left_pad(ids[:1], tok.pad_token_id, device))
    assert torch.allclose(batched[0], alone[0], atol=1e-5)


def test_quantile_threshold_flags_the_top_share_of_scores():
    scores = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    for q in (0.6, 0.9, 0.95):
        eta = quantile_threshold(scores, q)
        assert abs(int((scores > eta).sum()) - int(np.ceil((1 - q) * 1000))) <= 1
    assert quantile_threshold(np.array([-np.inf, 1.0, 2.0, 3.0], np.float32), 0.5) == pytest.approx(2.0)


def test_at_most_b_entries_per_unit_and_only_above_eta():
    rng = np.random.default_rng(1)
    units = D.Units(np.arange(40), np.array([0, 3, 11, 11 + 11, 40]))
    scores = rng.normal(size=40).astype(np.float32)
    for b in (0, 1, 2, 3):
        chosen = select_top_b(units, scores, eta=-0.5, b=b)
        per_unit = np.bincount(units.unit_of[chosen], minlength=units.n_units)
        assert per_unit.max(initial=0) <= b
        assert (scores[chosen] > -0.5).all()
        for u in range(units.n_units):  # the chosen are the unit's best
            seg = slice(units.offsets[u], units.offsets[u + 1])
            if chosen[seg].any() and (~chosen[seg]).any():
                assert scores[seg][chosen[seg]].min() >= scores[seg][~chosen[seg]].max() or per_unit[u] == b


def test_grounding_prefers_exact_titles_and_returns_real_items():
    titles = ["", "red tent", "blue kettle", "red tent", "green guitar"]
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return bow_vectors(texts)

    ids, exact = ground(["red tent", "blue kettle deluxe", "", "guitar"], titles, embed, bow_vectors(titles))
    assert ids.tolist()[:2] == [1, 2] and ids[2] == 0 and ids[3] == 4
    assert exact.tolist() == [True, False, False, False]
    assert calls == [["blue kettle deluxe", "guitar"]]  # exact matches bypass the encoder
    assert clean_suggestion('"blue kettle"\nNoise Items: x') == "blue kettle"


def _fitted(llama, split, **cfg):
    res = fake_resources(split)
    den = LLM4DSR(LLM4DSRConfig(model_path=llama, **{**SMALL, **cfg}), res)
    den.fit(split.train, res)
    return den


def test_llm_completion_replaces_at_most_b_items_per_unit_with_grounded_ids(llama):
    split = small_split(8)
    den = _fitted(llama, split, q_train=0.5, b_train=1)
    dec = den.denoise(split.train)
    units = D.chunk_units(split.train, 11)
    changed = dec.flagged
    assert np.bincount(units.unit_of[changed[units.flat]], minlength=units.n_units).max() <= 1
    assert changed.sum() == den.stats["train"]["selected"] > 0
    assert ((dec.replacement[changed] >= 1) | ~dec.keep[changed]).all() and dec.replacement.max() <= split.n_items
    assert np.isfinite(dec.score).all()
    rewritten = dec.apply()
    assert rewritten.n_rows == split.train.n_rows


def test_delete_completion_removes_exactly_the_selected_positions(llama):
    split = small_split(8)
    den = _fitted(llama, split, completion="delete", q_train=0.7, b_train=2)
    dec = den.denoise(split.train)
    assert (~dec.keep).sum() == den.stats["train"]["selected"] and (dec.replacement == 0).all()
    assert len(dec.apply().items) == len(split.train.items) - den.stats["train"]["selected"]
    test = den.denoise_eval(split.test.history, "test")
    last = D.last_window_units(split.test.history, 11)
    assert (~test.keep).sum() <= last.n_units  # b_test = 1 per history
    assert np.isneginf(np.delete(test.score, last.flat)).all()
    assert den.model is None  # released after the last split in denoise_splits
    assert len(list(den.parameters())) == 0  # the LLM was never a submodule of the denoiser


def test_lora_training_resumes_from_the_epoch_checkpoint(llama, tmp_path):
    split = small_split(6)
    units = D.chunk_units(split.train, 11)
    sft = D.instruction_data(units, split.train.items, split.item_text, split.n_items, 4, 42)
    settings = LoraSettings(epochs=2, batch_size=2, micro_batch_size=1, warmup_steps=1, lr=1e-2, cutoff=1024, dropout=0.0)

    def run(directory, stop=None):
        model, tok, device = load_causal_lm(llama)
        return finetune_lora(model, tok, sft.prompts, sft.answers, settings, directory, device, stop_after_epoch=stop)

    straight, hist = run(tmp_path / "a")
    run(tmp_path / "b", stop=0)
    assert not (tmp_path / "b" / "DONE").exists()
    resumed, hist_b = run(tmp_path / "b")
    assert [h["epoch"] for h in hist_b] == [0, 1] and (tmp_path / "b" / "DONE").exists()
    a = {k: v for k, v in straight.state_dict().items() if "lora_" in k}
    b = {k: v for k, v in resumed.state_dict().items() if "lora_" in k}
    assert a and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert hist[0]["loss"] == pytest.approx(hist_b[0]["loss"], rel=1e-5)


def test_pipeline_exports_denoised_data_that_sasrec_trains_on(llama, tmp_path):
    from benchmark.export import load_denoised_split
    from benchmark.run import execute

    cfg = compose(backbone="sasrec", denoiser="llm4dsr", dataset="synthetic", profile="smoke", overrides=[
        "dataset.synthetic.n_users=12", "dataset.synthetic.min_len=5", "dataset.synthetic.max_len=9",
        f"denoiser.model_path={llama}", "denoiser.grounding_encoder=test-bow", "train.max_epochs=1",
        "logging.csv=false"] + [f"denoiser.{k}={v}" for k, v in SMALL.items()])
    result = execute(cfg, runs_dir=tmp_path / "runs")
    assert result.mode == "data" and "ndcg@10" in result.test
    assert result.detection["n_flagged"] == result.denoiser_report["train"]["selected"]
    assert result.protocol["denoised_eval_histories"] == "valid,test"
    out = tmp_path / "runs" / result.run_id / "denoised"
    assert (out / "decisions.npz").exists() and (out / "test" / "decisions.npz").exists()
    from benchmark.data.build import build_split_data
    from omegaconf import OmegaConf

    split = build_split_data(OmegaConf.to_object(cfg.dataset))
    reloaded = load_denoised_split(out, split)
    assert reloaded.train.n_rows == split.train.n_rows
    assert not np.array_equal(reloaded.test.history.items, split.test.history.items) or \
        result.denoiser_report["test"]["selected"] == 0


def test_llm_last_token_grounding_uses_base_model_states_and_exact_titles(llama):
    split = small_split(6)
    den = _fitted(llama, split, grounding="llm_last_token")
    title = split.item_text[7]
    ids, exact = den.ground([title, "some unknown gadget"])
    first_with_title = split.item_text.index(title)
    assert ids[0] == first_with_title and exact.tolist() == [True, False]
    assert 1 <= ids[1] <= split.n_items


def test_popularity_completion_samples_items_seen_in_training(llama):
    split = small_split(8)
    den = _fitted(llama, split, completion="popularity", q_train=0.5, b_train=1)
    dec = den.denoise(split.train)
    replaced = dec.replacement[dec.replacement > 0]
    assert len(replaced) == den.stats["train"]["selected"] and dec.keep.all()
    assert (den.resources.item_train_frequency[replaced] > 0).all()
