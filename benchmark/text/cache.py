"""On-disk cache of text vectors keyed by (encoder id, SHA-1 of the text).

Layout, one directory per encoder id under the cache root (default
``benchmark.config.cache_dir() / 'text'``)::

    <slug>-<sha1(encoder_id)[:16]>/
        encoder.json               {"encoder_id": ..., "dim": ...}
        <shard>.vecs.npy           [m, dim] float32 (or float16), memory-mapped on read
        <shard>.sum.json           {"encoder_id": ..., "vecs": {"sha256", "bytes"}, "keys": {...}}
        <shard>.keys.npy           [m] S40, hex SHA-1 of each text (UTF-8)

Every encode call appends shards (one per chunk of ``chunk_size`` new texts) and never
rewrites old ones. Each file is written to a hidden temporary name, fsynced and renamed into
place; the keys file is renamed last and is the shard's commit mark, so an interrupted run
leaves either a complete shard or files the reader ignores (temporaries, a vectors file with
no keys). Finished chunks are kept: rerunning encodes only what is still missing. Several
processes may write the same directory (shard names are unique; a text stored twice is
harmless), and they share the work: each claims a chunk before encoding it
(``benchmark.text.claims``), skips texts claimed by others and reads their shards once stored.

The cache stores whatever the wrapped encoder returns for a chunk, so a text's stored vector is
the one a fresh call gives only if the encoder's output for a text does not depend on the other
texts of its call: the default ``minilm`` encodes each text alone on one thread for that reason.

Reading a shard checks both files against the checksums and the encoder id in its
``.sum.json`` (shards written before checksums only for readable, consistent shapes). A shard
that fails is deleted with a warning line and its texts are encoded again: the cache rebuilds
itself and never serves corrupted vectors. An unreadable ``encoder.json``, or one naming
another encoder, empties the directory the same way.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from benchmark.config import ConfigError, cache_dir
from benchmark.integrity import atomic_write_bytes, atomic_write_text, bytes_record, npy_bytes, record_problem
from benchmark.text.claims import KEY_DTYPE, ClaimBoard

log = logging.getLogger(__name__)

STORE_DTYPES = ("float32", "float16")
_STALE_SECONDS = 24 * 3600  # temporaries and orphan vector files older than this are removed


def text_keys(texts: list[str]) -> np.ndarray:
    """Hex SHA-1 of each text's UTF-8 bytes → ``S40`` array ``[n]``."""
    return np.array([hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts], dtype=KEY_DTYPE)


def encoder_directory(cache_root: str | Path, encoder_id: str) -> Path:
    """The cache directory of one encoder id: a readable slug plus a hash of the full id."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id)[:60].strip("_")
    return Path(cache_root) / f"{slug}-{hashlib.sha1(encoder_id.encode()).hexdigest()[:16]}"


class ShardError(Exception):
    """A committed shard that must not be used (message: why)."""


class CachedEncoder:
    """Wrap a ``TextEncoder`` so that each distinct text is encoded once, ever.

    ``encode(texts)`` hashes the texts, deduplicates them, reads the vectors already on disk,
    sends only the missing texts to the wrapped encoder (longest first, in chunks of
    ``chunk_size``, with a tqdm bar), stores each chunk as a shard, and returns float32
    ``[len(texts), dim]`` in input order. Vectors come back exactly as stored, so a first
    and a later call return identical arrays (with ``store_dtype='float16'`` both are the
    float16-rounded values). Texts that another process has claimed are not encoded here: the
    call polls every ``wait_seconds`` until their shards are stored (or the claim's owner is
    gone, and then encodes them itself).

    Counters (per the last ``encode`` call): ``n_encoded`` texts sent to the encoder,
    ``n_cached`` distinct texts found on disk (including those another process stored during
    the call); ``total_encoded`` over the object's life.
    It satisfies the ``TextEncoder`` protocol itself (same ``encoder_id``).
    """

    def __init__(
        self,
        encoder,
        cache_root: str | Path | None = None,
        chunk_size: int = 2048,
        store_dtype: str = "float32",
        progress: bool = True,
        wait_seconds: float = 1.0,
    ) -> None:
        if store_dtype not in STORE_DTYPES:
            raise ConfigError(f"text cache: store_dtype must be float32 or float16, got '{store_dtype}'")
        if chunk_size < 1:
            raise ConfigError(f"text cache: chunk_size must be >= 1, got {chunk_size}")
        self.encoder = encoder
        self.encoder_id: str = encoder.encoder_id
        root = Path(cache_root) if cache_root is not None else cache_dir() / "text"
        self.directory = encoder_directory(root, self.encoder_id)
        self.chunk_size = chunk_size
        self.store_dtype = store_dtype
        self.progress = progress
        self.wait_seconds = wait_seconds
        self.claims = ClaimBoard(self.directory)
        self.n_encoded = 0
        self.n_cached = 0
        self.total_encoded = 0
        self._dim: int | None = None
        self._shards: list[str] = []  # shard names, in load order
        self._vectors: list[np.ndarray] = []  # memory-mapped [m, dim] per shard
        self._keys = np.empty(0, dtype=KEY_DTYPE)  # sorted keys of all stored vectors
        self._where = np.empty((0, 2), dtype=np.int64)  # (shard index, row) aligned with _keys
        self._read_meta()
        self._sweep()

    # ------------------------------------------------------------------ store
    def _read_meta(self) -> None:
        """Take ``dim`` from ``encoder.json``; a file that is unreadable or names another
        encoder makes every vector in the directory suspect: it is emptied (rebuilt)."""
        meta_path = self.directory / "encoder.json"
        if not meta_path.exists():
            return
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("encoder_id") != self.encoder_id:
                raise ValueError(f"it names encoder '{meta.get('encoder_id')}', expected '{self.encoder_id}'")
            self._dim = int(meta["dim"])
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("%s: unusable text-cache metadata (%s); removing the directory's vectors to rebuild them",
                        meta_path, exc)
            shutil.rmtree(self.directory)

    def _write_meta(self, dim: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        meta_path = self.directory / "encoder.json"
        if not meta_path.exists():
            atomic_write_text(meta_path, json.dumps({"encoder_id": self.encoder_id, "dim": dim}, indent=1))

    def _sweep(self) -> None:
        """Remove temporaries and uncommitted shard files (no keys file) left by runs killed
        over a day ago."""
        if not self.directory.exists():
            return
        now = time.time()
        for path in self.directory.iterdir():
            stem = next((path.name[: -len(s)] for s in (".vecs.npy", ".sum.json") if path.name.endswith(s)), None)
            orphan = stem is not None and not (self.directory / f"{stem}.keys.npy").exists()
            if (path.name.startswith(".tmp-") or orphan) and now - path.stat().st_mtime > _STALE_SECONDS:
                path.unlink(missing_ok=True)

    def _read_shard(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Keys ``[m]`` and memory-mapped vectors ``[m, dim]`` of a committed shard, checked
        against its ``.sum.json`` (checksums, encoder id) and for consistent shapes; raises
        ShardError saying what is wrong."""
        keys_path, vecs_path = self.directory / f"{name}.keys.npy", self.directory / f"{name}.vecs.npy"
        sum_path = self.directory / f"{name}.sum.json"
        if sum_path.exists():
            try:
                sums = json.loads(sum_path.read_text())
                records = {"keys": (keys_path, sums["keys"]), "vecs": (vecs_path, sums["vecs"])}
                encoder_id = sums["encoder_id"]
            except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
                raise ShardError(f"{sum_path}: unreadable checksum file ({exc})") from exc
            if encoder_id != self.encoder_id:
                raise ShardError(f"{sum_path}: written by encoder '{encoder_id}', expected '{self.encoder_id}'")
            for path, record in records.values():
                problem = record_problem(path, record, sum_path)
                if problem is not None:
                    raise ShardError(problem)
        try:
            keys = np.load(keys_path, allow_pickle=False)
            vecs = np.load(vecs_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ShardError(f"{keys_path}: unreadable shard ({exc})") from exc
        if keys.ndim != 1 or vecs.ndim != 2 or len(keys) != len(vecs) or (self._dim and vecs.shape[1] != self._dim):
            raise ShardError(f"{keys_path}: shard shapes keys {keys.shape} / vectors {vecs.shape} do not match "
                             f"(dim {self._dim})")
        return keys, vecs

    def _drop_shard(self, name: str, reason: str) -> None:
        """Delete a bad shard (keys first: it stops being committed) so its texts are encoded again."""
        log.warning("%s; deleted the shard, its texts will be encoded again", reason)
        for suffix in (".keys.npy", ".vecs.npy", ".sum.json"):
            (self.directory / f"{name}{suffix}").unlink(missing_ok=True)

    def refresh(self) -> None:
        """Index shards written since the last look (by this or another process)."""
        if not self.directory.exists():
            return
        known = set(self._shards)
        new_keys, new_where = [], []
        for keys_path in sorted(self.directory.glob("*.keys.npy")):
            name = keys_path.name[: -len(".keys.npy")]
            if name in known or name.startswith(".tmp-"):
                continue
            try:
                keys, vecs = self._read_shard(name)
            except ShardError as exc:
                self._drop_shard(name, str(exc))
                continue
            shard = len(self._shards)
            self._shards.append(name)
            self._vectors.append(vecs)
            new_keys.append(keys.astype(KEY_DTYPE, copy=False))
            new_where.append(np.stack([np.full(len(keys), shard), np.arange(len(keys))], axis=1))
        if new_keys:
            keys = np.concatenate([self._keys, *new_keys])
            where = np.concatenate([self._where, *new_where])
            order = np.argsort(keys, kind="stable")
            self._keys, self._where = keys[order], where[order]

    def _store(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Write one shard: vectors, then their checksums, then keys (the commit mark)."""
        self._write_meta(vectors.shape[1])
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        vecs, keys = npy_bytes(vectors), npy_bytes(keys)
        sums = {"encoder_id": self.encoder_id, "vecs": bytes_record(vecs), "keys": bytes_record(keys)}
        atomic_write_bytes(self.directory / f"{name}.vecs.npy", vecs)
        atomic_write_text(self.directory / f"{name}.sum.json", json.dumps(sums, indent=1))
        atomic_write_bytes(self.directory / f"{name}.keys.npy", keys)

    def __len__(self) -> int:
        """Number of stored vectors (after ``refresh``)."""
        return len(self._keys)

    # ---------------------------------------------------------------- encoding
    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encoder.dim)
        return self._dim

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``S40`` keys ``[n]``: (found mask ``[n]``, (shard, row) ``[n, 2]``, -1 where missing)."""
        where = np.full((len(keys), 2), -1, dtype=np.int64)
        if len(self._keys) == 0:
            return np.zeros(len(keys), dtype=bool), where
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        found = self._keys[pos] == keys
        where[found] = self._where[pos[found]]
        return found, where

    def _gather(self, where: np.ndarray, out: np.ndarray, rows: np.ndarray) -> None:
        """``out[rows] = stored vectors at where[rows]``, one fancy-index read per shard."""
        shards = where[rows, 0]
        for shard in np.unique(shards):
            sel = rows[shards == shard]
            out[sel] = self._vectors[shard][where[sel, 1]]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors for ``texts``: float32 ``[len(texts), dim]``, row i for ``texts[i]``."""
        texts = list(texts)
        self.n_encoded = self.n_cached = 0
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = text_keys(texts)
        unique_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        self.refresh()
        found, where = self.lookup(unique_keys)
        self.n_cached = int(found.sum())
        missing = np.flatnonzero(~found)
        if len(missing) and self._dim is None:
            self._dim = int(self.encoder.dim)
        out = np.empty((len(unique_keys), self.dim), dtype=np.float32)
        self._gather(where, out, np.flatnonzero(found))
        if len(missing):
            lengths = np.fromiter((len(texts[first[u]]) for u in missing), dtype=np.int64, count=len(missing))
            missing = missing[np.argsort(-lengths, kind="stable")]  # similar lengths share a chunk
            with tqdm(total=len(missing), desc="encoding texts", unit="text", disable=not self.progress) as bar:
                self._encode_missing(texts, first, unique_keys, missing, out, bar)
        return out[inverse.reshape(-1)]

    def _encode_missing(self, texts, first, unique_keys, missing, out, bar) -> None:
        """Fill ``out[missing]`` (rows of ``unique_keys``), ``chunk_size`` texts at a time in
        ``missing`` order. Each chunk is claimed first (``ClaimBoard``): texts that other workers
        claimed are left to them, and their shards are read once stored. Alone, a worker
        encodes exactly the chunks ``missing[i : i + chunk_size]``."""
        where = np.full((len(unique_keys), 2), -1, dtype=np.int64)
        remaining = missing
        while len(remaining):
            with self.claims.locked():
                others = self.claims.claimed_by_others()
                self.refresh()  # after reading the claims: a released claim's shard is already stored
                found, found_where = self.lookup(unique_keys[remaining])
                where[remaining] = found_where
                if found.any():  # stored meanwhile by another worker
                    self._gather(where, out, remaining[found])
                    self.n_cached += int(found.sum())
                    bar.update(int(found.sum()))
                    remaining = remaining[~found]
                free = remaining[~np.isin(unique_keys[remaining], others)] if len(others) else remaining
                chunk = free[: self.chunk_size]
                claim = self.claims.claim(unique_keys[chunk]) if len(chunk) else None
            if claim is None:
                if len(remaining):
                    time.sleep(self.wait_seconds)  # everything left is being encoded elsewhere
                continue
            try:
                vectors = np.asarray(self.encoder.encode([texts[first[u]] for u in chunk]))
                if vectors.shape != (len(chunk), self.dim):
                    raise ValueError(
                        f"text encoder '{self.encoder_id}' returned shape {vectors.shape} for "
                        f"{len(chunk)} texts; expected ({len(chunk)}, {self.dim})"
                    )
                stored = vectors.astype(self.store_dtype)
                self._store(unique_keys[chunk], stored)
            finally:
                self.claims.release(claim)
            out[chunk] = stored
            self.n_encoded += len(chunk)
            self.total_encoded += len(chunk)
            bar.update(len(chunk))
            remaining = remaining[~np.isin(remaining, chunk)]
