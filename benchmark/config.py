"""Typed run configuration: dataclasses + OmegaConf composition of ``configs/`` and overrides.

A run config is composed, in order, from ``configs/defaults.yaml``, the dataset file
``configs/datasets/<name>.yaml``, the backbone file ``configs/backbones/<name>.yaml``, the
denoiser file ``configs/denoisers/<name>.yaml``, an optional profile ``configs/profiles/<p>.yaml``
and finally ``key=value`` overrides from the command line. Backbone and denoiser sections are
free-form here and validated by the class that consumes them (its ``Config`` dataclass).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark.protocols import DEFAULT_PROTOCOL, ProtocolError, load_protocol

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration problem, with the offending key and what was expected."""


@dataclass
class NoiseConfig:
    kind: str = "none"  # none | replace | steam | target_flip
    alpha: float = 0.1  # replace: per-interaction replacement probability; target_flip: flip rate
    protect_valid: bool = False  # replace: also spare the validation item
    keep: float = 0.8  # steam: keep / delete / insert probabilities
    delete: float = 0.1
    insert: float = 0.1
    seed: int = 2024  # noise has its own RNG so every backbone/denoiser sees the same noisy data


@dataclass
class SyntheticConfig:
    n_users: int = 300
    n_items: int = 120
    n_clusters: int = 6
    min_len: int = 12
    max_len: int = 30
    noise_rate: float = 0.1  # planted off-cluster items (labelled)
    transition: str = "cluster"  # cluster | deterministic (item i -> i+1 within the cluster)
    seed: int = 0


@dataclass
class DatasetConfig:
    name: str = "ml-100k"
    root: str | None = None  # data root; default $BENCH_DATA, else ~/.cache/dsr-bench
    k_core: int = 0  # iterative user/item k-core (0 = off)
    max_len: int = 50  # model input length (most recent items)
    split: str = "loo"  # loo | window
    window_size: int = 11  # window split: items per window (history + target)
    duplicates: str = "keep"  # keep | drop_consecutive | drop_all (keep the first occurrence)
    text_columns: list[str] = field(default_factory=lambda: ["title"])
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 300
    patience: int = 10
    min_epochs: int = 0  # no early stop before this many epochs (long initial plateaus)
    loss: str = "auto"  # auto (backbone default) | ce | bpr | bce_neg | inbatch | cloze
    num_negatives: int = 1
    exclude_history_negatives: bool = True
    train_instances: str = "auto"  # auto | prefix | all_positions | last_only
    num_workers: int = 0
    pin_memory: bool = False
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: Any = 1
    gradient_clip: float = 0.0
    monitor: str = "valid/ndcg@10"
    limit_train_batches: Any = 1.0
    # speed only (the loss is unchanged): drop all-padding leading slots of a batch, and group
    # training instances of similar length into batches (runs of this many batches are sorted)
    trim_padding: bool = True
    bucket_batches: int = 50


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    exclude_history: bool = False
    batch_size: int = 1024
    optimistic_ties: bool = False  # also report ranks that count only strictly higher scores


@dataclass
class LoggingConfig:
    wandb: str = "offline"  # offline | online | disabled
    wandb_project: str = "dsr-bench"
    wandb_group: str | None = None
    wandb_tags: list[str] = field(default_factory=list)
    csv: bool = True
    progress: bool = True
    runs_dir: str = "runs"


@dataclass
class RunConfig:
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    backbone: dict = field(default_factory=lambda: {"name": "sasrec"})
    denoiser: dict = field(default_factory=lambda: {"name": "none"})
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    data_source: str | None = None  # e.g. "denoised:<run_id>" to train on exported data
    profile: str | None = None
    protocol: str = "benchmark"  # a configs/protocols/ preset (benchmark.protocols); every result row carries it


def _load_yaml(path: Path) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except Exception as exc:  # yaml errors carry the line
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from exc


def _section_file(kind: str, name: str) -> Path | None:
    path = CONFIG_DIR / kind / f"{name}.yaml"
    return path if path.exists() else None


def compose(
    backbone: str | None = None,
    denoiser: str | None = None,
    dataset: str | None = None,
    profile: str | None = None,
    overrides: list[str] | None = None,
    extra_files: list[str | Path] | None = None,
    base: dict | DictConfig | None = None,
    protocol: str | None = None,
) -> DictConfig:
    """Compose a resolved, validated run config (a structured OmegaConf ``DictConfig``).

    Layers, later wins: schema → ``defaults.yaml`` → the dataset/backbone/denoiser section files →
    the protocol preset (``benchmark.protocols``) → ``base`` (e.g. a grid cell) → profile → extra
    files → ``overrides``."""
    schema = OmegaConf.structured(RunConfig)
    layers: list[Any] = [schema, _load_yaml(CONFIG_DIR / "defaults.yaml")]
    if base is not None:
        layers.append(OmegaConf.create(base) if isinstance(base, dict) else base)
    override_cfg = OmegaConf.from_dotlist(list(overrides or []))
    # names: explicit argument > override > base > defaults
    merged_names = OmegaConf.merge(*layers[1:], override_cfg) if len(layers) > 1 else override_cfg
    ds_name = dataset or OmegaConf.select(merged_names, "dataset.name") or "ml-100k"
    bb_name = backbone or OmegaConf.select(merged_names, "backbone.name") or "sasrec"
    dn_name = denoiser or OmegaConf.select(merged_names, "denoiser.name") or "none"
    prof = profile or OmegaConf.select(merged_names, "profile")
    proto_name = protocol or OmegaConf.select(merged_names, "protocol") or DEFAULT_PROTOCOL
    for kind, name in (("datasets", ds_name), ("backbones", bb_name), ("denoisers", dn_name)):
        path = _section_file(kind, name)
        if path is not None:
            layers.append(_load_yaml(path))
    try:
        preset = load_protocol(str(proto_name))
    except ProtocolError as exc:
        raise ConfigError(str(exc)) from exc
    layers += [OmegaConf.create(layer) for layer in preset.layers(ds_name, bb_name)]
    if base is not None:  # the base (e.g. a grid cell) wins over section defaults
        layers.append(OmegaConf.create(base) if isinstance(base, dict) else base)
    if prof:
        path = _section_file("profiles", prof)
        if path is None:
            available = sorted(p.stem for p in (CONFIG_DIR / "profiles").glob("*.yaml"))
            raise ConfigError(f"unknown profile '{prof}'; available: {', '.join(available)}")
        layers.append(_load_yaml(path))
    for extra in extra_files or []:
        layers.append(_load_yaml(Path(extra)))
    layers.append(override_cfg)
    names = OmegaConf.create(
        {"dataset": {"name": ds_name}, "backbone": {"name": bb_name}, "denoiser": {"name": dn_name}, "profile": prof,
         "protocol": preset.name}
    )
    layers.append(names)
    try:
        cfg = OmegaConf.merge(*layers)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid configuration key or value: {exc}") from exc
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# Fields that never change results, excluded from the run id.
_NON_SEMANTIC = {("logging",), ("train", "num_workers"), ("train", "pin_memory"), ("eval", "batch_size"), ("profile",)}
# Keys added after results were stored: at these values they are left out of the hash, so the
# run ids of every earlier config stay valid; any other value changes the id as usual.
OMIT_AT_DEFAULT = {("train", "min_epochs"): 0, ("protocol",): DEFAULT_PROTOCOL}


def added_key_defaults() -> dict:
    """``OMIT_AT_DEFAULT`` as flattened names: ``{"train.min_epochs": 0}``."""
    return {".".join(path): default for path, default in OMIT_AT_DEFAULT.items()}


def fill_added_keys(flat: dict) -> dict:
    """A flattened stored config (``{"train.lr": ...}``) with the ``OMIT_AT_DEFAULT`` keys it
    predates set to their default (the value those runs used)."""
    return {**added_key_defaults(), **flat}


def _parent(data: dict, path: tuple[str, ...]) -> dict:
    for key in path[:-1]:
        data = data.get(key, {})
    return data


def run_id(cfg: DictConfig | dict) -> str:
    """A 12-hex-digit hash of the resolved config (protocol included), minus logging fields
    and the keys of ``OMIT_AT_DEFAULT`` at their default."""
    data = json.loads(json.dumps(to_dict(cfg) if isinstance(cfg, DictConfig) else dict(cfg)))
    for path in _NON_SEMANTIC:
        _parent(data, path).pop(path[-1], None)
    for path, default in OMIT_AT_DEFAULT.items():
        node = _parent(data, path)
        if path[-1] in node and node[path[-1]] == default:
            del node[path[-1]]
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def data_root(cfg_root: str | None = None) -> Path:
    """Where dataset files live: config key, else ``$BENCH_DATA``, else ``~/.cache/dsr-bench``."""
    if cfg_root:
        return Path(cfg_root).expanduser()
    env = os.environ.get("BENCH_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dsr-bench" / "data"


def cache_dir() -> Path:
    """Root for derived caches (text embeddings, denoised data)."""
    env = os.environ.get("BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dsr-bench" / "cache"


def validate_section(section: dict | DictConfig, schema: type, where: str) -> Any:
    """Validate a free-form section (e.g. ``backbone``) against a dataclass; returns the dataclass.

    Unknown keys raise a ConfigError naming the key, the section and the accepted keys."""
    data = to_dict(section) if isinstance(section, DictConfig) else dict(section)
    data.pop("name", None)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data))
    except OmegaConfBaseException as exc:
        accepted = ", ".join(sorted(schema.__dataclass_fields__))
        raise ConfigError(f"{where}: {exc.__class__.__name__}: {exc}. Accepted keys: {accepted}") from exc
    return OmegaConf.to_object(merged)
