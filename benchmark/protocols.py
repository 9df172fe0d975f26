"""Protocol presets (``configs/protocols/<name>.yaml``): named evaluation setups.

``benchmark`` is the suite's default; the others reproduce a paper's stated setup and list,
as data, every place they differ from ``benchmark`` (``bench list protocols`` prints them). A
preset file holds::

    name: iadsr-paper
    description: one line
    differences: [..., ...]          # human-readable, one entry per departure from benchmark
    config: {train: {lr: 1.0e-4}}    # applied to every run
    by_dataset: {ml-100k: {...}, default: {...}}   # optional; "default" = any other dataset
    by_backbone: {gru4rec: {...}}                  # optional; other backbones get nothing

Composition order (``benchmark.config.compose``): defaults → dataset/backbone/denoiser sections
→ protocol → grid cell → profile → extra files → command-line overrides. The run config's
``protocol`` key names the preset, so every stored result row carries it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "configs" / "protocols"
DEFAULT_PROTOCOL = "benchmark"
_KEYS = {"name", "description", "differences", "config", "by_dataset", "by_backbone"}


class ProtocolError(ValueError):
    """A missing or malformed protocol preset (names the file and key)."""


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    differences: list[str]
    config: dict
    by_dataset: dict[str, dict] = field(default_factory=dict)
    by_backbone: dict[str, dict] = field(default_factory=dict)

    def layers(self, dataset: str, backbone: str) -> list[dict]:
        """Config layers (nested dicts, merged in order) for a run on ``dataset`` with ``backbone``."""
        out = [self.config]
        ds_layer = self.by_dataset.get(dataset, self.by_dataset.get("default"))
        if ds_layer:
            out.append(ds_layer)
        if self.by_backbone.get(backbone):
            out.append(self.by_backbone[backbone])
        return [layer for layer in out if layer]


def protocol_names() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def _mapping(path: Path, key: str, value, of_mappings: bool = False) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or (of_mappings and not all(isinstance(v, dict) for v in value.values())):
        what = "a mapping of names to config mappings" if of_mappings else "a mapping"
        raise ProtocolError(f"{path}: key '{key}': expected {what}, got {value!r}")
    return value


def load_protocol(name: str) -> Protocol:
    """The preset ``configs/protocols/<name>.yaml``; unknown names list the available ones."""
    path = PROTOCOL_DIR / f"{name}.yaml"
    if not path.exists():
        raise ProtocolError(f"unknown protocol '{name}'; available: {', '.join(protocol_names())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProtocolError(f"{path}: cannot parse YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError(f"{path}: expected a mapping with keys {sorted(_KEYS)}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ProtocolError(f"{path}: unknown key(s) {sorted(unknown)}; accepted: {sorted(_KEYS)}")
    if raw.get("name", name) != name:
        raise ProtocolError(f"{path}: key 'name' is {raw['name']!r} but the file is named '{name}'")
    differences = raw.get("differences") or []
    if not isinstance(differences, list) or not all(isinstance(d, str) for d in differences):
        raise ProtocolError(f"{path}: key 'differences': expected a list of strings")
    return Protocol(
        name=name,
        description=str(raw.get("description", "")),
        differences=list(differences),
        config=_mapping(path, "config", raw.get("config")),
        by_dataset=_mapping(path, "by_dataset", raw.get("by_dataset"), of_mappings=True),
        by_backbone=_mapping(path, "by_backbone", raw.get("by_backbone"), of_mappings=True),
    )
