"""Typed run configuration: dataclasses + OmegaConf composition of ``configs/`` and overrides.

A run config is composed, in order, from ``configs/defaults.yaml``, the dataset file
``configs/datasets/<name>.yaml``, the backbone file ``configs/backbones/<name>.yaml``, the
denoiser file ``configs/denoisers/<name>.yaml``, an optional profile ``configs/profiles/<p>.yaml``
and finally ``key=value`` overrides from the command line. Backbone and denoiser sections are
free-form here and validated by the class that consumes them (its ``Config`` dataclass).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from benchmark.protocols import DEFAULT_PROTOCOL, ProtocolError, load_protocol

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration problem, with the offending key and what was expected."""


class NotApplicableError(ValueError):
    """A combination that cannot run by design: the data lack an input the method needs (item
    text), or the backbone cannot train the way the method asks (its loss). Grids record such a
    cell as not applicable, not as failed, and do not retry it (``bench results --drop RUN_ID``
    clears the record after the data changed)."""


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
    split: str = "loo"  # loo | loo_valid_in_train (reproduction: validation target also trained on) | window
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
    # Lightning strategy: "auto", or "ddp_spawn" / "ddp" for several processes (each rank trains
    # on its share of the batches; evaluation counts every user exactly once)
    strategy: str = "auto"
    gradient_clip: float = 0.0
    monitor: str = "valid/ndcg@10"
    limit_train_batches: Any = 1.0
    # budget for methods trained on one instance per target (train_instances=prefix: HSD, SSDRec),
    # whose epoch costs a full sequence pass per target: each epoch trains on this share of the
    # (reshuffled) batches; phases on other instance kinds, such as the plain backbone of a
    # transfer run, train on every batch
    prefix_epoch_share: float = 1.0
    # speed only (the loss is unchanged): drop all-padding leading slots of a batch, and group
    # training instances of similar length into batches (runs of this many batches are sorted)
    trim_padding: bool = True
    bucket_batches: int = 50
    # transfer runs that differ only in the target backbone share one native phase
    # (benchmark.native_cache; results unchanged, not part of run ids)
    share_native: bool = True


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
    epoch_lines: bool = False  # one line per epoch on stderr (time, valid metric, best): for logs without bars
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


# path -> (its text, parsed): a grid composes every cell from the same few files; reading a
# file is cheap, parsing it is not
_YAML: dict[Path, tuple[str, DictConfig]] = {}


def _load_yaml(path: Path) -> DictConfig:
    """The parsed file, shared between calls while its text is unchanged: callers only pass it
    to ``OmegaConf.merge``, which copies what it takes, so it must not be modified."""
    try:
        text = Path(path).read_text()
        hit = _YAML.get(path)
        if hit is None or hit[0] != text:
            stream = io.StringIO(text)
            stream.name = str(path)  # yaml's error messages name the file
            hit = (text, OmegaConf.load(stream))
            _YAML[path] = hit
        return hit[1]
    except Exception as exc:  # yaml errors carry the line
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from exc


def _section_file(kind: str, name: str) -> Path | None:
    path = CONFIG_DIR / kind / f"{name}.yaml"
    return path if path.exists() else None


_UNSET = object()


def _last_set(layers: list[DictConfig], key: str) -> Any:
    """``key``'s value in the last layer that sets it (None when none does): what
    ``OmegaConf.select`` would read from the layers merged, without merging them."""
    for layer in reversed(layers):
        value = OmegaConf.select(layer, key, default=_UNSET)
        if value is not _UNSET:
            return value
    return None


@lru_cache(maxsize=1)
def _schema() -> DictConfig:
    """The structured schema of :class:`RunConfig`: built once (the costliest step of a compose,
    ~60% of a grid's expand); ``OmegaConf.merge`` copies its first config, so sharing it is safe."""
    return OmegaConf.structured(RunConfig)


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
    layers: list[Any] = [_schema(), _load_yaml(CONFIG_DIR / "defaults.yaml")]
    if base is not None:
        layers.append(OmegaConf.create(base) if isinstance(base, dict) else base)
    override_cfg = OmegaConf.from_dotlist(list(overrides or []))
    # names: explicit argument > override > base > defaults
    named = [*layers[1:], override_cfg]
    ds_name = dataset or _last_set(named, "dataset.name") or "ml-100k"
    bb_name = backbone or _last_set(named, "backbone.name") or "sasrec"
    dn_name = denoiser or _last_set(named, "denoiser.name") or "none"
    prof = profile or _last_set(named, "profile")
    proto_name = protocol or _last_set(named, "protocol") or DEFAULT_PROTOCOL
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
        raise config_error(exc) from exc
    validate_ranges(cfg)
    return cfg


# ------------------------------------------------------------------------------ validation
# Names people write for a key -> the key (matched with the same fuzziness as a misspelling).
KEY_SYNONYMS = {
    "dataset.noise": {"ratio": "alpha", "rate": "alpha", "noise_ratio": "alpha"},
    "train": {"learning_rate": "lr", "epochs": "max_epochs"},
    "eval": {"k": "ks", "topk": "ks", "top_k": "ks"},
}


def closest(word: str, candidates: list[str], synonyms: dict[str, str] | None = None) -> str | None:
    """The candidate ``word`` most likely stands for (difflib similarity ≥ 0.6, also against the
    ``synonyms`` keys, which map to candidates), or None."""
    synonyms = synonyms or {}
    match = difflib.get_close_matches(word, [*candidates, *synonyms], n=1, cutoff=0.6)
    return synonyms.get(match[0], match[0]) if match else None


def unknown_key_message(key: str, section: str, valid: list[str]) -> str:
    """``unknown key 'train.lrr'; did you mean 'train.lr'? Valid keys of train: ...``."""
    prefix = f"{section}." if section else ""
    guess = closest(key, valid, KEY_SYNONYMS.get(section))
    hint = f"; did you mean '{prefix}{guess}'?" if guess else "."
    return f"unknown key '{prefix}{key}'{hint} Valid keys of {section or 'the run config'}: {', '.join(sorted(valid))}"


_CONVERSION = re.compile(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", re.S)


def config_error(exc: OmegaConfBaseException, section: str = "") -> ConfigError:
    """One line from an OmegaConf error: the dotted key and what was expected (an unknown key
    also gets the closest valid key). ``section`` prefixes keys of a free-form section
    (``backbone``) whose schema OmegaConf saw as the root."""
    full_key = str(getattr(exc, "full_key", None) or "")
    key = ".".join(p for p in (section, full_key) if p)
    schema = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(schema):
        parent, _, name = key.rpartition(".")
        return ConfigError(unknown_key_message(name, parent, [f.name for f in dataclasses.fields(schema)]))
    message = str(getattr(exc, "msg", None) or exc).splitlines()[0]
    conversion = _CONVERSION.fullmatch(message)
    if conversion:
        value, kind = conversion.groups()
        message = f"{value!r} is not {'an' if kind[0] in 'AEIOU' else 'a'} {kind.lower()}"
    elif "is not a ListConfig" in message:
        message = "expected a list, e.g. [5, 10, 20]"
    return ConfigError(f"{key}: {message}" if key else f"invalid configuration: {message}")


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low}"


_PROBABILITY = ((lambda v: 0 <= v <= 1), "a probability in [0, 1]")
_SEED = ((lambda v: 0 <= v < 2**32), "an integer in [0, 2**32)")  # what NumPy's generators accept


# Typed keys with a range: dotted key -> (check, what is expected). Checked once, in compose.
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _SEED,
    "dataset.k_core": _at_least(0),
    "dataset.max_len": _at_least(1),
    "dataset.window_size": _at_least(2),
    "dataset.noise.alpha": _PROBABILITY,
    "dataset.noise.keep": _PROBABILITY,
    "dataset.noise.delete": _PROBABILITY,
    "dataset.noise.insert": _PROBABILITY,
    "dataset.noise.seed": _SEED,
    "train.lr": ((lambda v: v >= 0), "a learning rate >= 0 (0 freezes the weights)"),
    "train.weight_decay": _at_least(0),
    "train.batch_size": _at_least(1),
    "train.max_epochs": _at_least(1),
    "train.patience": _at_least(0),
    "train.min_epochs": _at_least(0),
    "train.num_negatives": _at_least(1),
    "train.num_workers": _at_least(0),
    "train.gradient_clip": _at_least(0),
    "train.bucket_batches": _at_least(0),
    "train.limit_train_batches": (
        (lambda v: not isinstance(v, bool) and (0 < v <= 1 if isinstance(v, float) else isinstance(v, int) and v >= 1)),
        "a share in (0, 1] or a number of batches >= 1",
    ),
    "train.prefix_epoch_share": ((lambda v: not isinstance(v, bool) and 0 < v <= 1), "a share in (0, 1]"),
    "eval.batch_size": _at_least(1),
    "eval.ks": ((lambda v: len(v) > 0 and all(k >= 1 for k in v)), "a non-empty list of cut-offs K >= 1"),
}


def validate_ranges(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every key of ``RANGES`` whose value is out of range
    (``key=value; expected ...``, several joined by '. ')."""
    problems = []
    for key, (check, expected) in RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        plain = list(value) if OmegaConf.is_list(value) else value
        if not check(plain):
            problems.append(f"{key}={plain}; expected {expected}")
    share, limit = OmegaConf.select(cfg, "train.prefix_epoch_share"), OmegaConf.select(cfg, "train.limit_train_batches")
    if share is not None and limit is not None and share != 1.0 and limit != 1.0:
        problems.append(f"train.prefix_epoch_share={share} and train.limit_train_batches={limit} both shorten the epoch; "
                        "set one of them")
    if problems:
        raise ConfigError(". ".join(problems))


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# Fields that never change results, excluded from the run id.
_NON_SEMANTIC = {("logging",), ("train", "num_workers"), ("train", "pin_memory"), ("train", "share_native"),
                 ("eval", "batch_size"), ("profile",)}
# Keys added after results were stored: at these values they are left out of the hash, so the
# run ids of every earlier config stay valid; any other value changes the id as usual.
OMIT_AT_DEFAULT = {("train", "min_epochs"): 0, ("protocol",): DEFAULT_PROTOCOL, ("train", "strategy"): "auto",
                   ("train", "prefix_epoch_share"): 1.0, ("denoiser", "decision_logits"): "sigmoid"}


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


def validate_against_data(cfg: DictConfig, n_items: int) -> None:
    """Checks that need the built data: every cut-off K of ``eval.ks`` is at most the item count
    (a larger K makes HR@K 1 by construction). Run before any training or data-level denoising."""
    too_large = [k for k in cfg.eval.ks if k > n_items]
    if too_large:
        raise ConfigError(f"eval.ks={list(cfg.eval.ks)}: K={too_large[0]} is larger than the {n_items} items of "
                          f"dataset '{cfg.dataset.name}'; expected cut-offs K <= {n_items}")


# Range rules for free-form sections (backbone, denoiser, text encoder), by field name:
# (pattern of the name, applies to, check, what is expected).
SECTION_RULES: tuple[tuple[str, type, Callable[[Any], bool], str], ...] = (
    (r".*dropout", float, lambda v: 0 <= v < 1, "a dropout probability in [0, 1)"),
    (r"(.*_)?(ratio|prob)", float, lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    (r".*_size", int, lambda v: v >= 1, ">= 1"),
)


def _section_range_problem(name: str, value: Any) -> str | None:
    for pattern, kind, check, expected in SECTION_RULES:
        if re.fullmatch(pattern, name) and isinstance(value, kind) and not isinstance(value, bool) and not check(value):
            return expected
    return None


def validate_section(section: dict | DictConfig, schema: type, where: str, key_prefix: str = "") -> Any:
    """Validate a free-form section (e.g. ``backbone``) against a dataclass; returns the dataclass.

    ``key_prefix`` (e.g. ``"backbone"``) is how its keys are written on the command line. Unknown
    keys raise a ConfigError naming the key, the closest valid key and all valid keys; wrong types
    and values outside the ``SECTION_RULES`` ranges raise one naming the key and the expectation."""
    data = to_dict(section) if isinstance(section, DictConfig) else dict(section)
    data.pop("name", None)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {config_error(exc, key_prefix)}") from exc
    obj = OmegaConf.to_object(merged)
    for f in dataclasses.fields(schema):
        expected = _section_range_problem(f.name, getattr(obj, f.name))
        if expected:
            key = ".".join(p for p in (key_prefix, f.name) if p)
            raise ConfigError(f"{where}: {key}={getattr(obj, f.name)}; expected {expected}")
    return obj
