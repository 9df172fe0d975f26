"""Which process encodes which texts, when several share one text-cache directory.

Grid workers started together on one dataset all miss the same texts. Without coordination
each encodes all of them (on Beauty's 137,761 ``iadsr-reference`` prefix texts that is over an
hour of MiniLM per worker, all but one of them wasted). A worker therefore *claims* a chunk
before encoding it, and the others skip claimed texts and wait for their shards instead.

Layout, inside an encoder's cache directory::

    claims/
        .lock                      flock'ed while a worker reads claims and writes its own
        <time_ns>-<pid>-<rand>.claim   the claimed keys (raw S40 bytes); flock'ed by its owner

The owner holds an exclusive ``flock`` on its claim file while it encodes. The kernel drops
that lock however the owner ends (exception, SIGKILL, out of memory), so a claim whose lock
can be taken belongs to nobody: it is removed and its texts are free again. No pid checks or
timeouts are involved, and on NFS Linux maps ``flock`` to byte-range locks that hold across
hosts (as ``benchmark.runlock`` relies on).
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from benchmark.runlock import try_lock

log = logging.getLogger(__name__)

CLAIMS_DIR = "claims"
SUFFIX = ".claim"
KEY_DTYPE = "S40"  # a text's key: the hex SHA-1 of its UTF-8 bytes (benchmark.text.cache.text_keys)
KEY_BYTES = np.dtype(KEY_DTYPE).itemsize


@dataclass
class Claim:
    """A claim this process holds: its file and the open descriptor carrying the flock."""

    path: Path
    fd: int


class ClaimBoard:
    """Claims on texts (by ``S40`` key) in ``<cache dir>/claims``.

    Use ``claimed_by_others`` and ``claim`` inside ``with board.locked():`` so that no two
    workers pick the same texts; ``release`` a claim once its shard is stored.
    """

    def __init__(self, cache_directory: str | Path) -> None:
        self.directory = Path(cache_directory) / CLAIMS_DIR

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the board's lock (blocking) for the body."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def claimed_by_others(self) -> np.ndarray:
        """Keys ``[m]`` under live claims of other workers. Claims whose owner is gone (their
        lock is free) are deleted on the way. Call while holding ``locked()``."""
        keys = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # released between the listing and the open
            try:
                if try_lock(fd):
                    log.info("%s: claim left by a worker that ended before storing it; its texts are free", path)
                    path.unlink(missing_ok=True)
                    continue
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
            if len(data) % KEY_BYTES:  # owners write the whole file before releasing locked()
                raise RuntimeError(f"{path}: claim file of {len(data)} bytes, expected a multiple of {KEY_BYTES}")
            keys.append(np.frombuffer(data, dtype=KEY_DTYPE))
        return np.concatenate(keys) if keys else np.empty(0, dtype=KEY_DTYPE)

    def claim(self, keys: np.ndarray) -> Claim:
        """Claim ``keys`` ``[n]`` for this worker. Call while holding ``locked()``."""
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, np.ascontiguousarray(keys, dtype=KEY_DTYPE).tobytes())
        except BaseException:
            path.unlink(missing_ok=True)
            os.close(fd)
            raise
        return Claim(path, fd)

    def release(self, claim: Claim) -> None:
        """Drop a claim (after its shard is stored, or when encoding failed)."""
        claim.path.unlink(missing_ok=True)
        os.close(claim.fd)
