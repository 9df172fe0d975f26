"""Checksums of the files the suite writes and later reads back.

A directory of artefacts (an export of denoised data, see ``benchmark.export``) carries
``MANIFEST.json``, written after the files it lists::

    {"format": 1,
     "provenance": {...},                       # what produced the files (run id, config)
     "files": {"decisions.npz": {"sha256": "<hex>", "bytes": 1234}, ...}}

:func:`verify_files` compares every listed file with its record; a difference raises
:class:`IntegrityError` naming the file. The fetched raw datasets' ``FETCHED.json``
(``benchmark.data.fetch``) and the text-embedding shards (``benchmark.text.cache``) use the
same ``{"sha256", "bytes"}`` records.

A single cache file (LLM4DSR's scores, suggestions and item table) is written with
:func:`write_checked`: the file, then ``<file>.sum.json`` with its record and provenance.
:func:`read_checked` returns the bytes only if they match; a file that does not is deleted with
a warning line and the caller computes it again (a file with no ``.sum.json``, written before
checksums existed, is returned unverified).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from pathlib import Path

MANIFEST = "MANIFEST.json"
FORMAT = 1
log = logging.getLogger(__name__)


class IntegrityError(ValueError):
    """A file differs from the checksum recorded when it was written, or its manifest is unreadable."""


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | Path) -> dict:
    """``{"sha256": hex, "bytes": size}`` of one file."""
    return {"sha256": sha256_of(path), "bytes": Path(path).stat().st_size}


def bytes_record(data: bytes) -> dict:
    """The :func:`file_record` a file holding ``data`` will have."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def record_problem(path: Path, record: dict, listed_in: Path) -> str | None:
    """Why ``path`` does not match ``record`` (missing, size, digest), or None if it matches."""
    if not path.exists():
        return f"{path}: listed in {listed_in} but missing"
    size = path.stat().st_size
    if size != record.get("bytes", size):
        return f"{path}: {size} bytes, but {listed_in} recorded {record['bytes']} (truncated or changed since written)"
    digest = sha256_of(path)
    if digest != record.get("sha256"):
        return (f"{path}: sha256 {digest[:16]}... differs from {str(record.get('sha256'))[:16]}... recorded in "
                f"{listed_in} (corrupted or changed since written)")
    return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file beside ``path``, fsync it, rename it over ``path``."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sum.json")


def write_checked(path: Path, data: bytes, provenance: dict | None = None) -> None:
    """Cache file ``path`` holding ``data``, plus ``<path>.sum.json`` (checksum and ``provenance``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    atomic_write_text(_sidecar(path), json.dumps({**file_record(path), "provenance": provenance or {}},
                                                 indent=1, sort_keys=True, default=str))


def read_checked(path: Path) -> bytes | None:
    """The bytes of cache file ``path``, or None when it is missing or fails its checksum (then
    it is deleted, with a warning line, for the caller to rebuild)."""
    if not path.exists():
        return None
    sidecar = _sidecar(path)
    if not sidecar.exists():
        return path.read_bytes()  # written before checksums existed
    try:
        problem = record_problem(path, json.loads(sidecar.read_text()), sidecar)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        problem = f"{sidecar}: unreadable checksum file ({exc})"
    if problem is None:
        return path.read_bytes()
    log.warning("%s; deleted the cached file, computing it again", problem)
    path.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    return None


def npy_bytes(array) -> bytes:
    """``array`` in ``.npy`` format (no pickled objects)."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_array(data: bytes):
    """The array of ``.npy`` bytes (pickled objects refused)."""
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def write_manifest(directory: Path, names: list[str], provenance: dict) -> Path:
    """Record ``directory/<name>`` for each of ``names`` and ``provenance`` (JSON-ready) in
    ``directory/MANIFEST.json``; call it after the files are complete."""
    manifest = {"format": FORMAT, "provenance": provenance,
                "files": {name: file_record(directory / name) for name in names}}
    path = directory / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True, default=str))
    return path


def read_manifest(directory: Path) -> dict | None:
    """``directory``'s manifest, None if it has none; IntegrityError if it cannot be read."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise IntegrityError(f"{path}: expected a mapping with a 'files' table of sha256 records")
    return manifest


def verify_files(directory: Path, manifest: dict) -> None:
    """Raise IntegrityError (every mismatch, one per line) unless each file ``manifest`` lists
    matches its record."""
    listed_in = directory / MANIFEST
    problems = [p for name, record in sorted(manifest["files"].items())
                if (p := record_problem(directory / name, record, listed_in)) is not None]
    if problems:
        raise IntegrityError("\n".join(problems))
