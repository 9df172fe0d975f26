"""Inputs a denoiser may declare in ``requires``, prepared lazily and once per run.

``item_text`` (list ``[N+1]``, '' for padding), ``text_embeddings`` (float32 ``[N+1, D]``,
row 0 and untitled items zero; computed through the on-disk text cache), the training
split and the run's seed."""
from __future__ import annotations

from functools import cached_property

import numpy as np

from benchmark.config import NotApplicableError
from benchmark.data.sequences import SplitData


class Resources:
    def __init__(self, split: SplitData, seed: int = 0, text_encoder: str = "minilm",
                 text_encoder_cfg: dict | None = None, progress: bool = True):
        self.split = split
        self.progress = progress  # tqdm bar while the text cache encodes missing texts
        self.seed = seed
        self.text_encoder_name = text_encoder
        self.text_encoder_cfg = dict(text_encoder_cfg or {})
        self.encoder_calls = 0

    @property
    def item_text(self) -> list[str]:
        return self.split.item_text

    @property
    def n_items(self) -> int:
        return self.split.n_items

    def require_text(self, method: str) -> None:
        if not any(t for t in self.item_text[1:]):
            raise NotApplicableError(
                f"{method} needs item text, but dataset '{self.split.name}' has none "
                f"(e.g. 'sports' has no titles in this suite); choose a dataset with titles"
            )

    def text_encoder(self, name: str | None = None, **cfg):
        """A cached text encoder (``encode(list[str]) -> float32 [n, D]``)."""
        from benchmark.text import CachedEncoder, make_text_encoder

        name = name or self.text_encoder_name
        merged = {**(self.text_encoder_cfg if name == self.text_encoder_name else {}), **cfg}
        key = (name, tuple(sorted(merged.items())))
        cache = self.__dict__.setdefault("_encoders", {})
        if key not in cache:
            cache[key] = CachedEncoder(make_text_encoder(name, **merged), progress=self.progress)
        return cache[key]

    def text_encoder_ids(self) -> list[str]:
        """Sorted ids of the text encoders this run built (recorded in its result row)."""
        return sorted({enc.encoder_id for enc in self.__dict__.get("_encoders", {}).values()})

    def encode_texts(self, texts: list[str], name: str | None = None, **cfg) -> np.ndarray:
        """Vectors ``[n, D]``; empty texts get zero vectors and are never sent to the encoder."""
        encoder = self.text_encoder(name, **cfg)
        texts = list(texts)
        nonempty = np.array([bool(t.strip()) for t in texts], dtype=bool)
        out = None
        if nonempty.any():
            vecs = encoder.encode([t for t, ok in zip(texts, nonempty) if ok])
            out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
            out[nonempty] = vecs
        else:
            out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
        return out

    @cached_property
    def text_embeddings(self) -> np.ndarray:
        """Item text embeddings ``[N+1, D]`` with the run's default encoder."""
        return self.encode_texts(self.item_text)

    @cached_property
    def item_train_frequency(self) -> np.ndarray:
        """int64 ``[N+1]``: occurrences of each item in the training sequences."""
        return np.bincount(self.split.train.items, minlength=self.split.n_items + 1)
