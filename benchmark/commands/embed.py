"""``bench embed``: encode a dataset's item texts through the on-disk text cache.

    bench embed --dataset beauty --encoder minilm
    bench embed --dataset beauty --encoder llm2vec model=/models/llama truncate=tail dtype=bfloat16
    bench embed --dataset beauty --encoder llm2vec-llama31-8b dataset.k_core=5 --output beauty.npy

``--encoder`` is a registered backend (``bench list encoders``) or a preset in
``configs/text/``. Overrides starting with ``dataset.`` change the dataset config; every
other ``key=value`` is an encoder option. Items with blank text (and the padding item 0)
get zero vectors and are never sent to the encoder.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def register(sub) -> None:
    p = sub.add_parser("embed", help="encode a dataset's item texts into the text-vector cache")
    p.add_argument("--dataset", required=True, help="dataset name (bench list datasets)")
    p.add_argument("--encoder", default="minilm", help="text encoder or configs/text preset (default minilm)")
    p.add_argument("--cache-dir", default=None, help="cache root (default <BENCH_CACHE>/text)")
    p.add_argument("--output", default=None, help="also save the [n_items+1, dim] float32 matrix as .npy")
    p.add_argument("--chunk-size", type=int, default=2048, help="texts per encoder call and cache shard")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("overrides", nargs="*", help="encoder options key=value; dataset.<key>=value for the dataset")
    p.set_defaults(func=main)


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split ``key=value`` strings into dataset overrides (``dataset.*``) and encoder options."""
    from benchmark.cli import UserError

    dataset, encoder = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}': expected key=value")
        if key.startswith("dataset."):
            dataset.append(item)
        else:
            encoder[key] = value
    return dataset, encoder


def load_item_text(dataset: str, dataset_overrides: list[str]) -> list[str]:
    """Item texts of a dataset after its preprocessing; index 0 is the padding item ('')."""
    from omegaconf import OmegaConf

    from benchmark.config import compose
    from benchmark.data.catalog import load_interactions

    cfg = compose(dataset=dataset, overrides=dataset_overrides)
    return list(load_interactions(OmegaConf.to_object(cfg.dataset)).item_text)


def embed_texts(texts: list[str], encoder_name: str, options: dict, cache_root=None, chunk_size: int = 2048,
                progress: bool = True) -> tuple[np.ndarray, dict]:
    """Encode ``texts`` (blank → zero row) through the cache; returns (``[n, dim]`` float32, stats)."""
    from benchmark.text.base import encode_nonblank, is_blank, make_text_encoder, resolve_encoder
    from benchmark.text.cache import CachedEncoder

    backend, config = resolve_encoder(encoder_name, options)
    cached = CachedEncoder(make_text_encoder(backend, **config), cache_root, chunk_size=chunk_size, progress=progress)
    start = time.perf_counter()
    vectors = encode_nonblank(cached, texts)
    stats = {
        "texts": len(texts),
        "blank": int(is_blank(texts).sum()),
        "encoded": cached.n_encoded,
        "cached": cached.n_cached,
        "dim": int(vectors.shape[1]),
        "seconds": time.perf_counter() - start,
        "cache_dir": str(cached.directory),
        "encoder_id": cached.encoder_id,
    }
    return vectors, stats


def main(args) -> int:
    dataset_overrides, options = split_overrides(args.overrides)
    item_text = load_item_text(args.dataset, dataset_overrides)
    vectors, stats = embed_texts(item_text, args.encoder, options, args.cache_dir, args.chunk_size,
                                 progress=not args.no_progress)
    from benchmark.text.base import is_blank

    n_items, n_blank = len(item_text) - 1, int(is_blank(item_text[1:]).sum())
    print(f"dataset {args.dataset}: {n_items} items, {n_blank} without text (zero vectors)")
    print(f"encoder {stats['encoder_id']}")
    print(f"vectors: {len(vectors)} x {stats['dim']} (row 0 = padding); "
          f"encoded now {stats['encoded']}, from cache {stats['cached']} distinct texts")
    print(f"cache: {stats['cache_dir']}")
    print(f"seconds: {stats['seconds']:.2f}")
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, vectors)
        print(f"saved {out}")
    return 0
