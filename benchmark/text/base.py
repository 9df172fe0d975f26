"""The text-encoder protocol, the factory, and helpers shared by every backend.

A text encoder turns strings into float32 vectors. Backends register in
``benchmark.registry.TEXT_ENCODERS`` under a short name, declare their options as a
``Config`` dataclass, and are built with ``make_text_encoder(name, **config)``.

Vectors are returned exactly as the model pools them: no L2 normalisation unless the
backend's config has ``normalize: true``. Backends load their model lazily (on the first
``encode`` or ``dim``), so an encoder whose vectors are all cached never loads weights.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from benchmark.config import ConfigError, validate_section
from benchmark.registry import TEXT_ENCODERS

DTYPES = ("float32", "bfloat16", "float16")


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that maps strings to vectors.

    Attributes:
        encoder_id: a stable string naming everything that changes the vectors (backend,
            model identity, pooling, lengths, adapter, dtype, normalisation). Caches key on it.
        dim: vector size.
    """

    encoder_id: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return float32 ``[len(texts), dim]``, row i encoding ``texts[i]``."""
        ...


def make_text_encoder(name: str, **config: Any) -> TextEncoder:
    """Build the registered backend ``name`` from keyword options.

    Options are validated against the backend's ``Config`` dataclass (unknown keys and
    wrong types raise ``ConfigError`` naming the key); strings such as ``"32"`` from the
    command line are converted to the declared type.
    """
    cls = TEXT_ENCODERS.get(name)
    schema = getattr(cls, "Config", None)
    if schema is None:
        return cls(**config)
    cfg = validate_section(config, schema, where=f"text encoder '{name}'")
    return cls(cfg)


def resolve_encoder(name: str, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Turn an encoder name plus options into (registered backend name, options).

    ``name`` is either a registered backend (``minilm``, ``llm2vec``) or a preset file
    ``configs/text/<name>.yaml`` whose key ``backend`` names the backend and whose other keys
    are its options; ``options`` are applied on top.
    """
    from omegaconf import OmegaConf

    from benchmark.config import CONFIG_DIR

    preset = CONFIG_DIR / "text" / f"{name}.yaml"
    if not preset.exists() and name.lower() not in TEXT_ENCODERS.names():
        presets = [p.stem for p in (CONFIG_DIR / "text").glob("*.yaml")]
        raise ConfigError(TEXT_ENCODERS.unknown_message(name, presets))
    merged: dict[str, Any] = {}
    backend = name
    if preset.exists():
        merged = OmegaConf.to_container(OmegaConf.load(preset), resolve=True) or {}
        if "backend" not in merged:
            raise ConfigError(f"{preset}: missing key 'backend' (one of: {', '.join(TEXT_ENCODERS.names())})")
        backend = str(merged.pop("backend"))
    merged.update(options or {})
    return backend, merged


def check_dtype(dtype: str, where: str) -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")


def model_fingerprint(path: str | Path, sample_bytes: int = 1 << 20) -> str:
    """A 12-hex-digit content fingerprint of a local model directory (or file).

    Hashes every file's relative name and size, the full content of small files (≤ 1 MiB:
    configs, tokenizers) and the first and last ``sample_bytes`` of larger ones (weights), so
    a changed checkpoint changes the id while a multi-GB model is fingerprinted in
    milliseconds. Copying the directory elsewhere keeps the fingerprint.
    """
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha1()
    for file in files:
        rel = file.relative_to(root).as_posix() if root.is_dir() else file.name
        if rel.startswith(".") or "/." in rel:
            continue  # .git, .cache, editor files
        size = file.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= 2 * sample_bytes:
                digest.update(handle.read())
            else:
                digest.update(handle.read(sample_bytes))
                handle.seek(size - sample_bytes)
                digest.update(handle.read(sample_bytes))
    return digest.hexdigest()[:12]


def check_model_exists(model: str, where: str) -> None:
    """Raise ``ConfigError`` if ``model`` is written as a path (``/``, ``.``, ``~``) that does not exist.

    Anything else is taken as a hub name and left to the loading library."""
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise ConfigError(f"{where}: model directory '{model}' does not exist")


def model_ref(model: str, label: str | None = None) -> str:
    """How a model appears in an encoder id: ``<label or dir name>@<fingerprint>`` for a
    local directory, the hub name otherwise (hub revisions are pinned by the name the user gives)."""
    path = Path(model).expanduser()
    if path.exists():
        return f"{label or path.resolve().name}@{model_fingerprint(path)}"
    return model


def is_blank(texts: list[str]) -> np.ndarray:
    """Boolean ``[n]``: True where a text is empty or whitespace only."""
    return np.fromiter((not t.strip() for t in texts), dtype=bool, count=len(texts))


def encode_nonblank(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    """Encode ``texts`` but give blank texts (empty / whitespace) a zero vector.

    Blank texts are never sent to the encoder (e.g. item 0, the padding item, and items
    without a title). Returns float32 ``[len(texts), encoder.dim]``.
    """
    blank = is_blank(texts)
    keep = np.flatnonzero(~blank)
    if len(keep) == 0:
        return np.zeros((len(texts), encoder.dim), dtype=np.float32)
    vectors = encoder.encode([texts[i] for i in keep])
    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    out[keep] = vectors
    return out
