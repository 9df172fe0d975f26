"""Text encoders (MiniLM, LLM2Vec on a tiny local Llama), the on-disk cache and `bench embed`."""
from __future__ import annotations

import hashlib
import os
import threading
import time

import numpy as np
import pytest

from benchmark.config import ConfigError
from benchmark.text import CachedEncoder, TextEncoder, encode_nonblank, make_text_encoder
from benchmark.text.base import model_fingerprint, resolve_encoder
from benchmark.text.cache import encoder_directory, text_keys
from benchmark.text.llm2vec_encoder import keep_last_words
from tests.tiny_llama import HIDDEN_SIZE, build_tiny_llama

LONG_TEXT = " ".join(f"cream{i % 7} lotion{i % 5} kaka lolo" for i in range(30))  # ≫ 16 tokens


class CountingEncoder:
    """Fake encoder: a fixed random vector per text (seeded by its hash); records every call."""

    def __init__(self, encoder_id: str = "fake:v1", dim: int = 4, fail_on_call: int | None = None) -> None:
        self.encoder_id = encoder_id
        self.dim = dim
        self.fail_on_call = fail_on_call
        self.calls: list[list[str]] = []

    @property
    def n_texts(self) -> int:
        return sum(len(c) for c in self.calls)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail_on_call == len(self.calls):
            raise KeyboardInterrupt("simulated kill")
        seeds = [int(hashlib.sha1(t.encode()).hexdigest()[:8], 16) for t in texts]
        return np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds]).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- cache
def test_cache_second_encode_sends_nothing_and_returns_identical_vectors(tmp_path):
    fake = CountingEncoder()
    texts = ["red lipstick", "face cream", "hair gel", "face cream"]
    cache = CachedEncoder(fake, tmp_path, progress=False)
    first = cache.encode(texts)
    assert fake.n_texts == 3 and cache.n_encoded == 3  # the duplicate is encoded once
    second = cache.encode(texts)
    assert cache.n_encoded == 0 and cache.n_cached == 3 and fake.n_texts == 3
    np.testing.assert_array_equal(first, second)
    again = CachedEncoder(fake, tmp_path, progress=False).encode(texts)  # a new process, in effect
    assert fake.n_texts == 3
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, CountingEncoder().encode(texts))
    assert first.dtype == np.float32 and first.shape == (4, 4)


def test_cache_encodes_only_missing_texts_and_keeps_input_order(tmp_path):
    fake = CountingEncoder()
    cache = CachedEncoder(fake, tmp_path, progress=False)
    cache.encode(["a", "b"])
    out = cache.encode(["c", "b", "a", "c"])
    assert fake.calls[-1] == ["c"] and cache.n_encoded == 1 and cache.n_cached == 2
    np.testing.assert_array_equal(out, CountingEncoder().encode(["c", "b", "a", "c"]))


def test_cache_is_keyed_by_encoder_id(tmp_path):
    CachedEncoder(CountingEncoder("fake:v1"), tmp_path, progress=False).encode(["a"])
    other = CountingEncoder("fake:v2")
    CachedEncoder(other, tmp_path, progress=False).encode(["a"])
    assert other.n_texts == 1
    assert encoder_directory(tmp_path, "fake:v1") != encoder_directory(tmp_path, "fake:v2")


def test_cache_survives_interrupted_run_and_resumes(tmp_path):
    texts = [f"title number {i}" for i in range(5)]
    dying = CountingEncoder(fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        CachedEncoder(dying, tmp_path, chunk_size=2, progress=False).encode(texts)
    fresh = CountingEncoder()
    cache = CachedEncoder(fresh, tmp_path, chunk_size=2, progress=False)
    out = cache.encode(texts)
    assert cache.n_cached == 2 and cache.n_encoded == 3  # the first chunk was kept
    np.testing.assert_array_equal(out, CountingEncoder().encode(texts))


def test_cache_ignores_partial_files_and_deletes_corrupt_shards(tmp_path, caplog):
    fake = CountingEncoder()
    cache = CachedEncoder(fake, tmp_path, progress=False)
    reference = cache.encode(["a", "b"])
    directory = cache.directory
    # a killed writer: a temporary, a vectors file whose keys never landed; a corrupt keys file
    (directory / ".tmp-0000-x.vecs.npy").write_bytes(b"\x93NUMPY half")
    np.save(directory / "orphan.vecs.npy", np.ones((1, 4), np.float32))
    (directory / "corrupt.keys.npy").write_bytes(b"not numpy at all")
    np.save(directory / "corrupt.vecs.npy", np.ones((1, 4), np.float32))
    with caplog.at_level("WARNING", logger="benchmark.text.cache"):
        reader = CachedEncoder(CountingEncoder(), tmp_path, progress=False)
        out = reader.encode(["b", "a"])
    assert reader.n_encoded == 0
    np.testing.assert_array_equal(out, reference[::-1])
    assert [r.message.count("corrupt.keys.npy") for r in caplog.records] == [1]
    assert not (directory / "corrupt.keys.npy").exists() and not (directory / "corrupt.vecs.npy").exists()
    assert (directory / "orphan.vecs.npy").exists()  # uncommitted files are the sweeper's, after a day


@pytest.mark.parametrize("part", ["vecs", "keys", "sum"])
def test_cache_rebuilds_a_shard_whose_bytes_changed(tmp_path, caplog, part):
    texts = ["red lipstick", "face cream", "hair gel"]
    CachedEncoder(CountingEncoder(), tmp_path, progress=False).encode(texts)
    directory = encoder_directory(tmp_path, "fake:v1")
    (path,) = directory.glob(f"*.{part}.*")
    data = bytearray(path.read_bytes())
    at = data.index(b'"sha256": "') + 12 if part == "sum" else -3  # a recorded digest, a vector, a key
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    fresh = CountingEncoder()
    with caplog.at_level("WARNING", logger="benchmark.text.cache"):
        cache = CachedEncoder(fresh, tmp_path, progress=False)
        out = cache.encode(texts)
    assert len(caplog.records) == 1 and path.name.split(".")[0] in caplog.records[0].message
    assert cache.n_cached == 0 and cache.n_encoded == 3 and not path.exists()  # detected, deleted, encoded again
    np.testing.assert_array_equal(out, CountingEncoder().encode(texts))
    again = CachedEncoder(CountingEncoder(), tmp_path, progress=False)
    again.encode(texts)
    assert again.n_cached == 3  # the rebuilt shard verifies


def test_cache_write_killed_before_commit_leaves_no_visible_shard(tmp_path, monkeypatch):
    import benchmark.text.cache as cache_module

    real_save = np.save

    def save_then_die(handle, array, **kwargs):
        if array.dtype.kind == "S":  # the keys file, written last
            handle.write(b"\x93NUMPY partial")
            raise KeyboardInterrupt("simulated kill")
        real_save(handle, array, **kwargs)

    monkeypatch.setattr(cache_module.np, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        CachedEncoder(CountingEncoder(), tmp_path, progress=False).encode(["a"])
    monkeypatch.setattr(cache_module.np, "save", real_save)
    names = [p.name for p in encoder_directory(tmp_path, "fake:v1").iterdir()]
    assert not any(n.endswith(".keys.npy") for n in names) and not any(n.startswith(".tmp-") for n in names)
    fresh = CountingEncoder()
    cache = CachedEncoder(fresh, tmp_path, progress=False)
    cache.encode(["a"])
    assert cache.n_encoded == 1


class SlowCountingEncoder(CountingEncoder):
    """CountingEncoder that takes a while per call (releasing the GIL), like a real model."""

    def encode(self, texts: list[str]) -> np.ndarray:
        time.sleep(0.02)
        return super().encode(texts)


def test_cache_workers_sharing_a_directory_encode_each_text_once(tmp_path):
    texts = [f"item title {i}" for i in range(30)]
    fakes = [SlowCountingEncoder(), SlowCountingEncoder()]
    caches = [CachedEncoder(fake, tmp_path, chunk_size=3, progress=False, wait_seconds=0.01) for fake in fakes]
    outputs: dict[int, np.ndarray] = {}
    workers = [threading.Thread(target=lambda i=i: outputs.__setitem__(i, caches[i].encode(texts))) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert set(outputs) == {0, 1}
    assert fakes[0].n_texts + fakes[1].n_texts == 30  # without claims each worker encodes all 30
    expected = CountingEncoder().encode(texts)
    np.testing.assert_array_equal(outputs[0], expected)
    np.testing.assert_array_equal(outputs[1], expected)
    assert caches[0].n_encoded + caches[0].n_cached == 30 and caches[1].n_encoded + caches[1].n_cached == 30
    assert not list((encoder_directory(tmp_path, "fake:v1") / "claims").glob("*.claim"))


def test_cache_leaves_claimed_texts_to_their_owner_and_reads_its_shard(tmp_path):
    texts = ["a lipstick", "b face cream", "c hair gel", "d nail polish"]
    owner = CachedEncoder(CountingEncoder(), tmp_path, progress=False)
    with owner.claims.locked():
        claim = owner.claims.claim(text_keys(texts[:2]))
    waiting_fake = CountingEncoder()
    waiting = CachedEncoder(waiting_fake, tmp_path, chunk_size=1, progress=False, wait_seconds=0.01)
    result: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: result.append(waiting.encode(texts)))
    worker.start()
    time.sleep(0.2)
    assert worker.is_alive()  # it cannot finish while the owner holds the claim
    owners_vectors = np.full((2, 4), 7.0, dtype=np.float32)  # unlike anything the fake returns
    owner._store(text_keys(texts[:2]), owners_vectors)
    owner.claims.release(claim)
    worker.join(timeout=30)
    assert sorted(t for call in waiting_fake.calls for t in call) == texts[2:]
    np.testing.assert_array_equal(result[0][:2], owners_vectors)
    np.testing.assert_array_equal(result[0][2:], CountingEncoder().encode(texts[2:]))
    assert waiting.n_cached == 2 and waiting.n_encoded == 2


def test_cache_encodes_texts_whose_claim_owner_died(tmp_path):
    texts = ["a lipstick", "b face cream", "c hair gel"]
    dead = CachedEncoder(CountingEncoder(), tmp_path, progress=False)
    with dead.claims.locked():
        claim = dead.claims.claim(text_keys(texts))
    os.close(claim.fd)  # the kernel drops the flock as when its process is killed; the file stays
    assert claim.path.exists()
    fresh = CountingEncoder()
    cache = CachedEncoder(fresh, tmp_path, progress=False, wait_seconds=0.01)
    np.testing.assert_array_equal(cache.encode(texts), CountingEncoder().encode(texts))
    assert fresh.n_texts == 3 and not claim.path.exists()


def test_cache_float16_store_returns_same_rounded_vectors_each_time(tmp_path):
    cache = CachedEncoder(CountingEncoder(), tmp_path, store_dtype="float16", progress=False)
    first = cache.encode(["x", "y"])
    second = CachedEncoder(CountingEncoder(), tmp_path, store_dtype="float16", progress=False).encode(["x", "y"])
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, second)


def test_cache_rejects_wrong_shape_and_rebuilds_a_mismatched_directory(tmp_path, caplog):
    class Broken(CountingEncoder):
        def encode(self, texts):
            return np.zeros((len(texts), 3), np.float32)

    with pytest.raises(ValueError, match="expected"):
        CachedEncoder(Broken(), tmp_path, progress=False).encode(["a"])
    cache = CachedEncoder(CountingEncoder(), tmp_path, progress=False)
    cache.encode(["a"])
    for meta in ('{"encoder_id": "someone else", "dim": 4}', "{not json"):
        (cache.directory / "encoder.json").write_text(meta)
        caplog.clear()
        with caplog.at_level("WARNING", logger="benchmark.text.cache"):
            rebuilt = CachedEncoder(CountingEncoder(), tmp_path, progress=False)
            rebuilt.encode(["a"])
        assert rebuilt.n_encoded == 1 and "encoder.json: unusable text-cache metadata" in caplog.text
        assert '"fake:v1"' in (cache.directory / "encoder.json").read_text()


def test_cached_encoder_satisfies_protocol_and_blank_texts_get_zero_rows(tmp_path):
    fake = CountingEncoder()
    cache = CachedEncoder(fake, tmp_path, progress=False)
    assert isinstance(cache, TextEncoder) and cache.dim == 4
    out = encode_nonblank(cache, ["", "a", "  ", "b"])
    assert fake.calls == [["a", "b"]] or sorted(fake.calls[0]) == ["a", "b"]
    assert not out[[0, 2]].any() and np.abs(out[[1, 3]]).sum(axis=1).min() > 0


# ---------------------------------------------------------------------- minilm
@pytest.fixture(scope="module")
def minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return make_text_encoder("minilm")


def test_minilm_bundled_model_orders_similar_sentences_first(minilm):
    vectors = minilm.encode(
        ["moisturizing face cream for dry skin", "hydrating facial lotion for dry skin", "remote control toy truck"]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and minilm.dim == 384
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert minilm.encoder_id.startswith("sentence-transformers:all-MiniLM-L6-v2@")


def test_minilm_encodes_texts_with_the_same_token_cut_once(minilm, monkeypatch):
    model = minilm._load()
    cut = minilm.config.max_seq_length or model.max_seq_length
    stem = " ".join(f"lotion{i % 9} cream{i % 4}" for i in range(cut))  # far beyond the word-piece limit
    texts = ["face cream", stem + " red", stem + " blue", "face cream", stem]
    sent: list[list[str]] = []
    real = model.encode
    monkeypatch.setattr(model, "encode", lambda batch, **kw: sent.append(list(batch)) or real(batch, **kw))
    vectors = minilm.encode(texts)
    assert sent == [["face cream", stem + " red"]]  # the three long texts share one cut
    np.testing.assert_array_equal(vectors[1], vectors[2])
    np.testing.assert_array_equal(vectors[1], vectors[4])
    np.testing.assert_array_equal(vectors[0], vectors[3])
    alone = real([stem + " blue", "face cream"], convert_to_numpy=True)
    np.testing.assert_allclose(vectors[[2, 0]], alone, atol=1e-5)


def test_minilm_encoder_id_names_options_that_change_vectors():
    a = make_text_encoder("minilm")
    assert a.encoder_id.endswith("|batch_size=1|threads=1")
    others = [make_text_encoder("minilm", **kw).encoder_id for kw in (
        {"batch_size": 8}, {"threads": 0}, {"threads": 2}, {"max_seq_length": 32}, {"normalize": True})]
    assert len({a.encoder_id, *others}) == 6


def test_minilm_vector_of_a_text_does_not_depend_on_its_batch_mates_or_cores(minilm, tmp_path):
    import torch

    words = "lotion cream serum mask toner brush palette gloss liner powder".split()
    texts = [", ".join(words[: 1 + (i * 7) % 10]) + f" no. {i}" for i in range(24)]
    alone = np.stack([minilm.encode([t])[0] for t in texts])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        together = minilm.encode(texts[::-1])[::-1]
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(together, alone)
    assert torch.get_num_threads() == threads
    # a cache filled in a different order and chunking serves the same bits as a fresh call
    cache = CachedEncoder(minilm, tmp_path, chunk_size=5, progress=False)
    cache.encode(texts[5:17])
    np.testing.assert_array_equal(cache.encode(texts), alone)


# --------------------------------------------------------------------- llm2vec
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def l2v_head(tiny_llama):
    return make_text_encoder("llm2vec", model=tiny_llama, max_length=64, doc_max_length=16, device="cpu")


def test_llm2vec_returns_finite_hidden_size_vectors_and_zero_for_blank(l2v_head):
    vectors = l2v_head.encode(["cream lotion", "red lipstick gloss set", "", LONG_TEXT])
    assert vectors.shape == (4, HIDDEN_SIZE) and vectors.dtype == np.float32 and l2v_head.dim == HIDDEN_SIZE
    assert np.isfinite(vectors).all()
    assert not vectors[2].any() and np.abs(vectors[[0, 1, 3]]).sum(axis=1).min() > 0


def test_llm2vec_mean_pooling_averages_text_tokens_without_bos(tiny_llama, l2v_head):
    import torch
    from transformers import AutoModel, AutoTokenizer

    text = "red lipstick gloss set"
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModel.from_pretrained(tiny_llama).eval()
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tokenizer.bos_token_id
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state[0]
    np.testing.assert_allclose(l2v_head.encode([text])[0], hidden[1:].mean(0).numpy(), rtol=1e-4, atol=1e-5)
    last = make_text_encoder("llm2vec", model=tiny_llama, pooling_mode="last_token", device="cpu")
    np.testing.assert_allclose(last.encode([text])[0], hidden[-1].numpy(), rtol=1e-4, atol=1e-5)
    assert last.encoder_id != l2v_head.encoder_id


def test_llm2vec_tail_keeps_last_words_and_head_keeps_first(tiny_llama, l2v_head):
    tail = make_text_encoder("llm2vec", model=tiny_llama, max_length=64, doc_max_length=16, truncate="tail")
    short = "cream lotion"
    long_text = LONG_TEXT + " gel mask"
    h, t = l2v_head.encode([short, long_text]), tail.encode([short, long_text])
    np.testing.assert_allclose(h[0], t[0], rtol=1e-4, atol=1e-5)  # short texts are not cut
    assert np.abs(h[1] - t[1]).max() > 1e-3
    cut = keep_last_words([long_text], tail.tokenizer, 16)[0]
    assert long_text.endswith(cut) and len(cut.split()) < len(long_text.split())
    assert len(tail.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 16
    np.testing.assert_allclose(t[1], l2v_head.encode([cut])[0], rtol=1e-4, atol=1e-5)
    head_cut = " ".join(long_text.split()[: len(cut.split())])
    assert cosine(h[1], l2v_head.encode([head_cut])[0]) > cosine(h[1], t[1])


def test_llm2vec_bidirectional_instruction_and_dtype_change_vectors(tiny_llama, l2v_head):
    text = ["red lipstick gloss set"]
    base = l2v_head.encode(text)[0]
    bi = make_text_encoder("llm2vec", model=tiny_llama, max_length=64, doc_max_length=16, bidirectional=True)
    instr = make_text_encoder("llm2vec", model=tiny_llama, max_length=64, doc_max_length=16, instruction="Represent:")
    bf16 = make_text_encoder("llm2vec", model=tiny_llama, max_length=64, doc_max_length=16, dtype="bfloat16")
    ids = {l2v_head.encoder_id, bi.encoder_id, instr.encoder_id, bf16.encoder_id}
    assert len(ids) == 4
    for enc in (bi, instr):
        vec = enc.encode(text)[0]
        assert np.isfinite(vec).all() and np.abs(vec - base).max() > 1e-4
    low = bf16.encode(text)[0]
    assert low.dtype == np.float32 and cosine(low, base) > 0.95


def test_llm2vec_merges_peft_adapter(tiny_llama, l2v_head, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        peft_model = get_peft_model(
            AutoModel.from_pretrained(tiny_llama),
            LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )
    peft_model.save_pretrained(tmp_path / "adapter")
    adapted = make_text_encoder("llm2vec", model=tiny_llama, adapter=str(tmp_path / "adapter"),
                                max_length=64, doc_max_length=16)
    assert "adapter=adapter@" in adapted.encoder_id
    text = ["red lipstick gloss set"]
    assert np.abs(adapted.encode(text) - l2v_head.encode(text)).max() > 1e-4


def test_llm2vec_encoder_id_follows_model_content_and_batching(tmp_path):
    a = build_tiny_llama(tmp_path / "a", seed=0)
    b = build_tiny_llama(tmp_path / "b", seed=1)
    assert model_fingerprint(a) != model_fingerprint(b)
    ida = make_text_encoder("llm2vec", model=str(a)).encoder_id
    assert ida == make_text_encoder("llm2vec", model=str(a), device="cpu").encoder_id
    assert ida != make_text_encoder("llm2vec", model=str(a), batch_size=1).encoder_id
    assert ida != make_text_encoder("llm2vec", model=str(a), truncate="tail").encoder_id


def test_llm2vec_encodes_on_cpu_with_the_thread_count_its_id_names(tiny_llama, monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        process = make_text_encoder("llm2vec", model=tiny_llama, max_length=64, doc_max_length=16, device="cpu")
        one = make_text_encoder("llm2vec", model=tiny_llama, max_length=64, doc_max_length=16, device="cpu", threads=1)
        assert process.encoder_id.endswith("|threads=2") and one.encoder_id.endswith("|threads=1")
        l2v = one._load()
        seen = []
        real_encode = l2v.encode
        monkeypatch.setattr(l2v, "encode", lambda *a, **k: (seen.append(torch.get_num_threads()), real_encode(*a, **k))[1])
        vectors = one.encode(["red lipstick gloss set", "garden hose"])
        assert seen == [1] and torch.get_num_threads() == 2  # pinned while encoding, restored after
        assert vectors.shape[0] == 2 and np.isfinite(vectors).all()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "'model' is required"),
        ({"model": "/no/such/dir"}, "does not exist"),
        ({"model": "org/name", "truncate": "middle"}, "truncate"),
        ({"model": "org/name", "pooling_mode": "max"}, "pooling_mode"),
        ({"model": "org/name", "dtype": "int8"}, "dtype"),
        ({"model": "org/name", "doc_max_length": 600}, "doc_max_length"),
        ({"model": "org/name", "threads": -1}, "threads"),
        ({"model": "org/name", "no_such_key": 1}, "no_such_key"),
    ],
)
def test_llm2vec_config_errors_name_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        make_text_encoder("llm2vec", **options)


def test_hub_model_name_is_accepted_without_download():
    enc = make_text_encoder("llm2vec", model="meta-llama/Llama-3.1-8B-Instruct", max_length="512")
    assert enc.encoder_id.startswith("llm2vec:meta-llama/Llama-3.1-8B-Instruct|") and enc._l2v is None


# ----------------------------------------------------------------------- embed
def test_encoder_presets_resolve_to_backends():
    assert resolve_encoder("minilm", {"batch_size": "8"}) == (
        "minilm", {"model": "", "batch_size": "8", "threads": 1, "device": "cpu", "normalize": False}
    )
    backend, options = resolve_encoder("llm2vec-llama31-8b", {"truncate": "tail"})
    assert backend == "llm2vec" and options["truncate"] == "tail" and options["pooling_mode"] == "mean"
    assert resolve_encoder("llm2vec", {"model": "x"}) == ("llm2vec", {"model": "x"})


def test_bench_embed_encodes_item_texts_through_cache(tiny_llama, tmp_path, monkeypatch, capsys):
    import benchmark.commands.embed as embed
    from benchmark.cli import main

    seen = {}

    def fake_items(dataset, overrides):
        seen["args"] = (dataset, overrides)
        return ["", "cream lotion", "", "red lipstick gloss set"]

    monkeypatch.setattr(embed, "load_item_text", fake_items)
    argv = ["embed", "--dataset", "toy", "--encoder", "llm2vec", "--cache-dir", str(tmp_path / "cache"),
            "--output", str(tmp_path / "items.npy"), "--no-progress", f"model={tiny_llama}", "max_length=64", "doc_max_length=16",
            "dataset.k_core=5"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert seen["args"] == ("toy", ["dataset.k_core=5"])
    assert "3 items, 1 without text" in first and "encoded now 2" in first and f"4 x {HIDDEN_SIZE}" in first
    vectors = np.load(tmp_path / "items.npy")
    assert vectors.shape == (4, HIDDEN_SIZE) and not vectors[[0, 2]].any() and np.isfinite(vectors).all()
    assert main(argv) == 0
    assert "encoded now 0, from cache 2" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "items.npy"), vectors)


def test_bench_embed_rejects_malformed_override(capsys):
    from benchmark.cli import main

    assert main(["embed", "--dataset", "toy", "novalue"]) == 2
    assert "expected key=value" in capsys.readouterr().err


def test_load_item_text_reads_the_catalog_dataset():
    from benchmark.commands.embed import load_item_text

    texts = load_item_text("synthetic", ["dataset.synthetic.n_users=20", "dataset.synthetic.n_items=15"])
    assert len(texts) == 16 and texts[0] == "" and all(isinstance(t, str) for t in texts)
