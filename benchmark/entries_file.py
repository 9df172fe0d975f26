"""Reading a YAML file that holds a list of checked mappings (``configs/paper_gaps.yaml``,
``configs/superseded.yaml``): every problem is a :class:`ConfigError` naming the file, the entry
(``gaps[2]``) and the key."""
from __future__ import annotations

from pathlib import Path

import yaml

from benchmark.config import ConfigError


def read_entries(path: Path, list_key: str, required: dict[str, type],
                 optional: dict[str, type] | None = None) -> list[tuple[str, dict]]:
    """``(where, entry)`` for each mapping under ``list_key``, its keys type-checked; a missing
    file reads as no entries. ``where`` (``"<path>: <list_key>[i]"``) prefixes further errors."""
    optional = optional or {}
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get(list_key, []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a mapping with a list under '{list_key}'")
    names = ", ".join([*required, *optional])
    out = []
    for i, entry in enumerate(entries):
        where = f"{path}: {list_key}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping with keys {names}")
        for key, kind in required.items():
            if not isinstance(entry.get(key), kind):
                raise ConfigError(f"{where}: key '{key}' must be a {kind.__name__}, got {entry.get(key)!r}")
        for key, kind in optional.items():
            if key in entry and not isinstance(entry[key], kind):
                raise ConfigError(f"{where}: key '{key}' must be a {kind.__name__}, got {entry[key]!r}")
        unknown = sorted(set(entry) - set(required) - set(optional))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; expected {names}")
        out.append((where, entry))
    return out
