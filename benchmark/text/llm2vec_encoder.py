"""LLM2Vec backend (registered as ``llm2vec``): the encoder the IADSR paper uses.

Two ways to build the model (config key ``bidirectional``):

- ``false`` (default, as the IADSR interest script): ``AutoModel`` with its native causal
  attention, an optional PEFT adapter merged into it, wrapped as
  ``LLM2Vec(model, tokenizer, pooling_mode, max_length, doc_max_length)``;
- ``true``: ``LLM2Vec.from_pretrained(..., enable_bidirectional=True)``, the library's
  bidirectional model classes (Llama, Mistral, Gemma, Qwen2), as LLM2Vec checkpoints expect.

In both cases the tokenizer pads on the left with ``pad = eos`` (library behaviour) and
returns only ``input_ids`` and ``attention_mask``. Pooling (``mean`` by default) covers the
text tokens only: BOS and the instruction are excluded.

Truncation of long documents (more than ``doc_max_length`` tokens):
``head`` is the library's own rule — keep the first ``int(n_words · doc_max_length / n_tokens)``
words, repeated until short enough; ``tail`` applies the same rule from the front, keeping
the *last* words (for a chronological history: the most recent titles). Texts are cut before
they reach LLM2Vec, whose own check then finds nothing to cut.

Blank texts (empty or whitespace only) give zero vectors: the library would otherwise
mean-pool over the padding.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from benchmark.config import ConfigError
from benchmark.registry import TEXT_ENCODERS
from benchmark.text.base import check_dtype, check_model_exists, is_blank, model_ref
from benchmark.threads import torch_threads

POOLING_MODES = ("mean", "weighted_mean", "eos_token", "last_token", "bos_token")
TRUNCATE_MODES = ("head", "tail")


@dataclass
class LLM2VecConfig:
    model: str = ""  # local model directory or hub name (required)
    adapter: str | None = None  # PEFT adapter directory or hub name, merged into the model
    pooling_mode: str = "mean"  # mean | weighted_mean | eos_token | last_token | bos_token
    max_length: int = 512  # tokens per input (instruction + text)
    doc_max_length: int = 400  # longer texts are cut by words (see `truncate`)
    truncate: str = "head"  # head = keep first words (library) | tail = keep last words
    dtype: str = "float32"  # float32 | bfloat16 | float16 (weights and compute)
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N | mps
    batch_size: int = 8  # part of the id: padded batch-mates move a vector's last bits; 1 = exact per text
    # torch intra-op threads while encoding on CPU (0 = the process's count when the encoder is
    # built); CPU kernels split their sums by thread count, so the count is part of the id there
    threads: int = 0
    instruction: str = ""  # prepended to every text, excluded from pooling
    bidirectional: bool = False
    normalize: bool = False  # L2-normalise outputs


def keep_last_words(texts: list[str], tokenizer, doc_max_length: int) -> list[str]:
    """Cut texts longer than ``doc_max_length`` tokens from the front, by whole words.

    Mirror image of LLM2Vec's head rule: while a text has ``n`` tokens > ``doc_max_length``,
    keep its last ``int(n_words · doc_max_length / n)`` words. Token counts exclude special
    tokens. Returns a new list; short texts are returned unchanged.
    """
    if not texts:
        return []
    counts = np.fromiter(
        (len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]),
        dtype=np.int64,
        count=len(texts),
    )
    out = list(texts)
    for i in np.flatnonzero(counts > doc_max_length):  # only the long texts
        text, n_tokens = texts[i], int(counts[i])
        while n_tokens > doc_max_length:
            words = text.split()
            keep = int(len(words) * doc_max_length / n_tokens)
            text = " ".join(words[len(words) - keep :]) if keep > 0 else ""
            n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        out[i] = text
    return out


@TEXT_ENCODERS.register("llm2vec")
class LLM2VecEncoder:
    """``llm2vec.LLM2Vec`` behind the ``TextEncoder`` protocol; float32 ``[n, hidden]`` output."""

    Config = LLM2VecConfig

    def __init__(self, config: LLM2VecConfig) -> None:
        cfg = self.config = config
        where = "text encoder 'llm2vec'"
        if not cfg.model:
            raise ConfigError(f"{where}: key 'model' is required (a local model directory or a hub name)")
        check_model_exists(cfg.model, where)
        if cfg.adapter:
            check_model_exists(cfg.adapter, f"{where} (adapter)")
        if cfg.pooling_mode not in POOLING_MODES:
            raise ConfigError(f"{where}: pooling_mode must be one of {', '.join(POOLING_MODES)}, got '{cfg.pooling_mode}'")
        if cfg.truncate not in TRUNCATE_MODES:
            raise ConfigError(f"{where}: truncate must be head or tail, got '{cfg.truncate}'")
        check_dtype(cfg.dtype, where)
        if not 0 < cfg.doc_max_length <= cfg.max_length:
            raise ConfigError(
                f"{where}: need 0 < doc_max_length <= max_length, got {cfg.doc_max_length} and {cfg.max_length}"
            )
        if cfg.batch_size < 1:
            raise ConfigError(f"{where}: batch_size must be >= 1, got {cfg.batch_size}")
        if cfg.threads < 0:
            raise ConfigError(f"{where}: threads must be >= 0 (0 = the process setting), got {cfg.threads}")
        instruction = hashlib.sha1(cfg.instruction.encode()).hexdigest()[:8] if cfg.instruction else "none"
        self.encoder_id = (
            f"llm2vec:{model_ref(cfg.model)}|adapter={model_ref(cfg.adapter) if cfg.adapter else 'none'}"
            f"|bidirectional={cfg.bidirectional}|pooling={cfg.pooling_mode}|max_length={cfg.max_length}"
            f"|doc_max_length={cfg.doc_max_length}|truncate={cfg.truncate}|dtype={cfg.dtype}"
            f"|instruction={instruction}|normalize={cfg.normalize}|batch_size={cfg.batch_size}"
        )
        self.cpu_threads = self._cpu_threads()
        if self.cpu_threads:
            self.encoder_id += f"|threads={self.cpu_threads}"
        self._l2v = None
        self._dim: int | None = None

    @property
    def device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _cpu_threads(self) -> int:
        """Threads to encode with on CPU (the configured count, else the process's); 0 off CPU."""
        if not self.device.startswith("cpu"):
            return 0
        import torch

        return self.config.threads or torch.get_num_threads()

    def _load(self):
        if self._l2v is not None:
            return self._l2v
        import torch
        from llm2vec import LLM2Vec

        cfg = self.config
        dtype = getattr(torch, cfg.dtype)
        lengths = dict(pooling_mode=cfg.pooling_mode, max_length=cfg.max_length, doc_max_length=cfg.doc_max_length)
        if cfg.bidirectional:
            l2v = LLM2Vec.from_pretrained(
                cfg.model,
                peft_model_name_or_path=cfg.adapter,
                merge_peft=True,
                enable_bidirectional=True,
                torch_dtype=dtype,
                **lengths,
            )
        else:
            from transformers import AutoModel, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(cfg.model)
            tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "left"
            model = AutoModel.from_pretrained(cfg.model, torch_dtype=dtype)
            if cfg.adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, cfg.adapter).merge_and_unload()
            l2v = LLM2Vec(model, tokenizer, **lengths)
        # Decoder LMs take no token_type_ids; a generic fast tokenizer would emit them.
        l2v.tokenizer.model_input_names = ["input_ids", "attention_mask"]
        l2v.eval()
        l2v.to(self.device)
        self._l2v = l2v
        self._dim = int(l2v.config.hidden_size)
        return l2v

    @property
    def tokenizer(self):
        return self._load().tokenizer

    @property
    def dim(self) -> int:
        if self._dim is None:
            from transformers import AutoConfig

            self._dim = int(AutoConfig.from_pretrained(self.config.model).hidden_size)
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode ``texts`` → float32 ``[len(texts), dim]``; blank texts → zero rows."""
        l2v = self._load()
        cfg = self.config
        texts = list(texts)
        if cfg.truncate == "tail":
            texts = keep_last_words(texts, l2v.tokenizer, cfg.doc_max_length)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        keep = np.flatnonzero(~is_blank(texts))
        if len(keep) == 0:
            return out
        kept = [texts[i] for i in keep]
        sentences = [[cfg.instruction, t] for t in kept] if cfg.instruction else kept
        with torch_threads(self.cpu_threads):
            vectors = l2v.encode(
                sentences, batch_size=cfg.batch_size, show_progress_bar=False, device=self.device
            )  # float32 CPU tensor [len(kept), hidden]
        vectors = vectors.numpy()
        if cfg.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        out[keep] = vectors
        return out
