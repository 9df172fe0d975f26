"""Text encoders behind one protocol, with an on-disk cache.

``make_text_encoder(name, **config)`` builds a registered backend (``minilm``: sentence-
transformers, default all-MiniLM-L6-v2 offline; ``llm2vec``: the IADSR encoder);
``CachedEncoder(encoder)`` stores every vector on disk keyed by (encoder id, text hash).
"""
from benchmark.text.base import TextEncoder, encode_nonblank, make_text_encoder
from benchmark.text.cache import CachedEncoder
from benchmark.text.llm2vec_encoder import LLM2VecConfig, LLM2VecEncoder
from benchmark.text.sentence import SentenceEncoderConfig, SentenceTransformerEncoder

__all__ = [
    "CachedEncoder",
    "LLM2VecConfig",
    "LLM2VecEncoder",
    "SentenceEncoderConfig",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "cached_text_encoder",
    "encode_nonblank",
    "make_text_encoder",
]


def cached_text_encoder(name: str, cache_root=None, **config) -> CachedEncoder:
    """``make_text_encoder(name, **config)`` wrapped in a ``CachedEncoder`` under ``cache_root``
    (default ``benchmark.config.cache_dir() / 'text'``)."""
    return CachedEncoder(make_text_encoder(name, **config), cache_root)
