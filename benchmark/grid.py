"""Grid files: datasets × noise settings × backbones × denoisers (× hyperparameters) × seeds.

A grid file (``configs/grids/<name>.yaml``) is plain YAML::

    name: ml100k                 # optional; default: the file's stem (also the W&B group)
    description: ...             # optional, free text
    profile: quick               # optional, a configs/profiles/ file applied to every cell
    protocol: iadsr-paper        # optional, a configs/protocols/ preset (default: benchmark)
    overrides: [train.lr=0.001]  # optional, key=value applied to every cell
    datasets: [ml-100k]          # names, or {name: beauty, overrides: [dataset.max_len=32]}
    noise:                       # optional; default [{kind: none}]
      - {kind: none}
      - {kind: replace, alpha: 0.1}
    backbones: [gru4rec, sasrec]
    denoisers: [none, hsd, said]
    denoiser_params:             # optional: lists of values per denoiser key (cartesian product)
      said: {a: [0.2, 0.4]}
    denoiser_overrides:          # optional: key=value applied to one denoiser's cells only
      hsd: [train.prefix_epoch_share=0.1]   # (e.g. a labelled budget for costly methods)
    backbone_overrides:          # optional: key=value applied to one backbone's cells only
      bert4rec: [train.patience=20]         # (e.g. a training schedule a backbone needs)
    seeds: [0, 1, 2]
    tune_seeds: [0]              # optional: every denoiser_params setting runs at these seeds, the
                                 # other seeds only the setting chosen on validation (benchmark.tuning)
    include:                     # optional: extra (backbone, denoiser) pairs, crossed with
      - {backbone: dcrec, denoiser: none}   # datasets × noise × seeds unless they name them;
      - {backbone: fmlp, denoiser: none, overrides: [train.prefix_epoch_share=0.1]}  # (own key=value)
    exclude:                     # optional: drop cells matching every given field
      - {backbone: caser, denoiser: steam}

:func:`load_grid` validates the file (errors name the file and the key); :func:`expand` turns
it into :class:`Cell` s, each a composition recipe for :func:`benchmark.config.compose` plus its
run id. Cells are ordered dataset → noise → seed → backbone → denoiser, so a partly finished
grid already holds a complete first seed.
"""
from __future__ import annotations

import itertools
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.config import ConfigError, compose, run_id
from benchmark.metrics import monitor_mode
from benchmark.protocols import protocol_names

_TOP_KEYS = {"name", "description", "profile", "protocol", "overrides", "datasets", "noise", "backbones", "denoisers",
             "denoiser_params", "denoiser_overrides", "backbone_overrides", "seeds", "tune_seeds", "include",
             "exclude"}
_NOISE_KEYS = {"kind", "alpha", "protect_valid", "keep", "delete", "insert", "seed"}
_NOISE_KINDS = {"none", "replace", "steam", "target_flip"}
_MATCH_KEYS = {"dataset", "noise", "backbone", "denoiser", "seed"}


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    overrides: tuple[str, ...] = ()


@dataclass
class GridSpec:
    """A validated grid file."""

    name: str
    path: str
    datasets: list[DatasetEntry]
    noise: list[dict]
    backbones: list[str]
    denoisers: list[str]
    seeds: list[int]
    profile: str | None = None
    overrides: list[str] = field(default_factory=list)
    denoiser_params: dict[str, dict[str, list]] = field(default_factory=dict)
    denoiser_overrides: dict[str, list[str]] = field(default_factory=dict)
    backbone_overrides: dict[str, list[str]] = field(default_factory=dict)
    include: list[dict] = field(default_factory=list)
    exclude: list[dict] = field(default_factory=list)
    description: str = ""
    tune_seeds: list[int] = field(default_factory=list)  # benchmark.tuning: empty = run every setting at every seed


@dataclass
class Cell:
    """One grid cell: the recipe to compose its config, its run id and readable labels."""

    index: int
    run_id: str
    dataset: str
    backbone: str
    denoiser: str
    seed: int
    noise: str  # label, e.g. "clean" or "replace α=0.1"
    params: dict[str, Any]
    profile: str | None
    overrides: list[str]
    own: tuple[str, ...] = ()  # the backbone's, denoiser's and include entry's own overrides, shown in the label
    setting: tuple[str, ...] = ()  # the resolved config's values at _SETTING_KEYS (expand fills it)

    def compose(self):
        """The cell's resolved run config (``DictConfig``)."""
        return compose(backbone=self.backbone, denoiser=self.denoiser, dataset=self.dataset,
                       profile=self.profile, overrides=list(self.overrides))

    @property
    def label(self) -> str:
        params = ",".join([*(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items())), *self.own])
        den = f"{self.denoiser}({params})" if params else self.denoiser
        return f"{self.dataset} | {self.noise} | {self.backbone} | {den} | seed {self.seed}"

    @property
    def monitor(self) -> str:
        """The resolved ``train.monitor``: the metric a tuning choice compares."""
        return setting_value(self.setting, "train.monitor")


def _fmt(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def _dotvalue(value: Any) -> str:
    """A value as the right-hand side of an OmegaConf dotlist override (JSON is valid YAML)."""
    return json.dumps(value)


def noise_label(noise: dict) -> str:
    """Readable label of a noise setting: ``clean``, ``replace α=0.1``, ``steam 0.8/0.1/0.1``,
    ``target_flip ρ=0.1`` (a non-default noise seed or protect_valid is appended)."""
    kind = noise.get("kind", "none")
    if kind == "none":
        base = "clean"
    elif kind == "replace":
        base = f"replace α={_num(noise.get('alpha', 0.1))}"
    elif kind == "steam":
        base = "steam " + "/".join(_num(noise.get(k, d)) for k, d in (("keep", 0.8), ("delete", 0.1), ("insert", 0.1)))
    elif kind == "target_flip":
        base = f"target_flip ρ={_num(noise.get('alpha', 0.1))}"
    else:
        base = str(kind)
    extra = []
    if kind != "none" and noise.get("protect_valid"):
        extra.append("protect_valid")
    if kind != "none" and noise.get("seed") not in (None, 2024):
        extra.append(f"noise seed {noise['seed']}")
    return base + (f" ({', '.join(extra)})" if extra else "")


def _num(x: Any) -> str:
    return f"{float(x):g}"


def _err(path: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: key '{key}': {msg}")


def _is_dotlist(value: Any) -> bool:
    """A list of ``key=value`` override strings."""
    return isinstance(value, list) and all(isinstance(o, str) and "=" in o for o in value)


def _per_name(raw: dict, key: str, path: str, entry: str, kind: str = "denoiser") -> dict:
    """``raw[key]`` (default empty), checked to be a mapping from registered ``kind`` names
    (``denoiser`` or ``backbone``); its entries are the caller's to check (``entry`` describes
    them in the error)."""
    from benchmark.registry import BACKBONES, DENOISERS

    registry = {"denoiser": DENOISERS, "backbone": BACKBONES}[kind]
    table = raw.get(key) or {}
    if not isinstance(table, dict):
        raise _err(path, key, f"expected a mapping {kind} -> {entry}")
    for name in table:
        if name not in registry.names():
            raise _err(path, f"{key}.{name}", f"unknown {kind}; available: {', '.join(registry.names())}")
    return table


def _dotlists_per_name(raw: dict, key: str, path: str, kind: str) -> dict[str, list[str]]:
    """``denoiser_overrides`` / ``backbone_overrides``: name -> list of key=value strings."""
    table = _per_name(raw, key, path, "[key=value, ...]", kind)
    for name, items in table.items():
        if not _is_dotlist(items):
            raise _err(path, f"{key}.{name}", f"expected a list of key=value strings, got {items!r}")
    return {k: list(v) for k, v in table.items()}


def _str_list(raw: dict, key: str, path: str, required: bool = True) -> list[str]:
    value = raw.get(key)
    if value is None:
        if required:
            raise _err(path, key, "missing; expected a non-empty list of names")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _err(path, key, f"expected a non-empty list of names, got {value!r}")
    return list(dict.fromkeys(value))


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid file; raises :class:`ConfigError` naming the file and key."""
    from benchmark.registry import BACKBONES, DATASETS, DENOISERS

    p = Path(path)
    spath = str(p)
    if not p.exists():
        raise ConfigError(f"{spath}: grid file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{spath}: cannot parse YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{spath}: expected a mapping with keys {', '.join(sorted(_TOP_KEYS))}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _err(spath, unknown[0], f"unknown key; accepted keys: {', '.join(sorted(_TOP_KEYS))}")

    datasets = []
    raw_ds = raw.get("datasets")
    if not isinstance(raw_ds, list) or not raw_ds:
        raise _err(spath, "datasets", "expected a non-empty list of dataset names or {name, overrides} mappings")
    for i, entry in enumerate(raw_ds):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or set(entry) - {"name", "overrides"}:
            raise _err(spath, f"datasets[{i}]", f"expected a name or {{name: ..., overrides: [...]}}, got {entry!r}")
        if entry["name"] not in DATASETS.names():
            raise _err(spath, f"datasets[{i}]", f"unknown dataset '{entry['name']}'; available: {', '.join(DATASETS.names())}")
        ov = entry.get("overrides", []) or []
        if not _is_dotlist(ov):
            raise _err(spath, f"datasets[{i}].overrides", f"expected a list of key=value strings, got {ov!r}")
        datasets.append(DatasetEntry(entry["name"], tuple(ov)))

    noise = raw.get("noise") or [{"kind": "none"}]
    if not isinstance(noise, list):
        raise _err(spath, "noise", "expected a list of noise settings such as {kind: replace, alpha: 0.1}")
    for i, n in enumerate(noise):
        if not isinstance(n, dict) or set(n) - _NOISE_KEYS or n.get("kind", "none") not in _NOISE_KINDS:
            raise _err(spath, f"noise[{i}]", f"expected a mapping with kind in {sorted(_NOISE_KINDS)} and keys "
                                              f"from {sorted(_NOISE_KEYS)}, got {n!r}")

    backbones = _str_list(raw, "backbones", spath)
    for i, b in enumerate(backbones):
        if b not in BACKBONES.names():
            raise _err(spath, f"backbones[{i}]", f"unknown backbone '{b}'; available: {', '.join(BACKBONES.names())}")
    denoisers = _str_list(raw, "denoisers", spath)
    for i, d in enumerate(denoisers):
        if d not in DENOISERS.names():
            raise _err(spath, f"denoisers[{i}]", f"unknown denoiser '{d}'; available: {', '.join(DENOISERS.names())}")

    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise _err(spath, "seeds", f"expected a non-empty list of integers, got {seeds!r}")
    tune_seeds = raw.get("tune_seeds")
    tune_seeds = [] if tune_seeds is None else tune_seeds
    if not isinstance(tune_seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in tune_seeds):
        raise _err(spath, "tune_seeds", f"expected a list of integers from seeds, got {tune_seeds!r}")
    if set(tune_seeds) - set(seeds):
        raise _err(spath, "tune_seeds", f"{sorted(set(tune_seeds) - set(seeds))} not in seeds {seeds}")
    if tune_seeds and set(tune_seeds) == set(seeds):
        raise _err(spath, "tune_seeds", "names every seed, so no seed is left to run only the chosen setting; "
                                        "leave some seeds out, or drop the key")

    params = _per_name(raw, "denoiser_params", spath, "{key: [values]}")
    for den, table in params.items():
        fields = set(getattr(DENOISERS.get(den).Config, "__dataclass_fields__", {}))
        if not isinstance(table, dict):
            raise _err(spath, f"denoiser_params.{den}", "expected a mapping key -> list of values")
        for key, values in table.items():
            if key not in fields:
                raise _err(spath, f"denoiser_params.{den}.{key}",
                           f"not a hyperparameter of {den}; accepted: {', '.join(sorted(fields)) or '(none)'}")
            if not isinstance(values, list) or not values:
                raise _err(spath, f"denoiser_params.{den}.{key}", f"expected a non-empty list of values, got {values!r}")

    overrides = raw.get("overrides") or []
    if not _is_dotlist(overrides):
        raise _err(spath, "overrides", f"expected a list of key=value strings, got {overrides!r}")
    den_overrides = _dotlists_per_name(raw, "denoiser_overrides", spath, "denoiser")
    bb_overrides = _dotlists_per_name(raw, "backbone_overrides", spath, "backbone")
    profile = raw.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise _err(spath, "profile", f"expected a profile name, got {profile!r}")
    protocol = raw.get("protocol")
    if protocol is not None:
        if protocol not in protocol_names():
            raise _err(spath, "protocol", f"unknown protocol {protocol!r}; available: {', '.join(protocol_names())}")
        overrides = [f"protocol={protocol}", *overrides]

    blocks = {}
    for key in ("include", "exclude"):
        entries = raw.get(key) or []
        if not isinstance(entries, list):
            raise _err(spath, key, "expected a list of mappings with keys from " + ", ".join(sorted(_MATCH_KEYS)))
        accepted = _MATCH_KEYS | {"overrides"} if key == "include" else _MATCH_KEYS
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not e or set(e) - accepted:
                raise _err(spath, f"{key}[{i}]", f"expected a mapping with keys from {sorted(accepted)}, got {e!r}")
            if not _is_dotlist(e.get("overrides", [])):
                raise _err(spath, f"{key}[{i}].overrides", f"expected a list of key=value strings, got {e['overrides']!r}")
            if key == "include" and not {"backbone", "denoiser"} <= set(e):
                raise _err(spath, f"include[{i}]", "an include entry needs at least backbone and denoiser")
            if "backbone" in e and e["backbone"] not in BACKBONES.names():
                raise _err(spath, f"{key}[{i}].backbone", f"unknown backbone '{e['backbone']}'")
            if "denoiser" in e and e["denoiser"] not in DENOISERS.names():
                raise _err(spath, f"{key}[{i}].denoiser", f"unknown denoiser '{e['denoiser']}'")
        blocks[key] = entries

    name = raw.get("name") or p.stem
    if not isinstance(name, str):
        raise _err(spath, "name", f"expected a string, got {name!r}")
    return GridSpec(name=name, path=spath, datasets=datasets, noise=noise, backbones=backbones, denoisers=denoisers,
                    seeds=list(dict.fromkeys(seeds)), profile=profile, overrides=list(overrides),
                    denoiser_params={k: dict(v) for k, v in params.items()},
                    denoiser_overrides=den_overrides, backbone_overrides=bb_overrides, include=blocks["include"],
                    exclude=blocks["exclude"], description=str(raw.get("description", "")),
                    tune_seeds=list(dict.fromkeys(tune_seeds)))


def _param_grid(spec: GridSpec, denoiser: str) -> list[dict]:
    table = spec.denoiser_params.get(denoiser, {})
    keys = sorted(table)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(table[k] for k in keys))] or [{}]


def _matches(entry: dict, ds: str, noise: str, backbone: str, denoiser: str, seed: int) -> bool:
    actual = {"dataset": ds, "noise": noise, "backbone": backbone, "denoiser": denoiser, "seed": seed}
    for key, want in entry.items():
        if key == "noise" and isinstance(want, dict):
            want = noise_label(want)
        if actual[key] != want:
            return False
    return True


def _profile_override(extra: list[str], default: str | None) -> str | None:
    """The profile an extra ``profile=NAME`` override asks for (``profile=null``: none, i.e. the
    full protocol), else the grid's own. It must replace the grid's profile rather than merge
    under it: an explicit profile wins over the ``profile`` key in ``compose``."""
    profile = default
    for item in extra:
        key, sep, value = item.partition("=")
        if sep and key.strip() == "profile":
            value = value.strip()
            profile = None if value.lower() in ("", "null", "none", "~") else value
    return profile


def _as_overridden(own: list[str], later: list[str]) -> list[str]:
    """``own`` key=value strings with each value replaced by the last of ``later`` that sets the same
    key, so a cell's label shows the value its run used (a command-line override wins)."""
    last = {o.split("=", 1)[0]: o for o in later}
    return [last.get(o.split("=", 1)[0], o) for o in own]


def expand(spec: GridSpec, extra_overrides: list[str] | None = None) -> list[Cell]:
    """Every cell of ``spec`` in run order, de-duplicated by run id.

    ``extra_overrides`` (e.g. from the command line) are applied last to every cell and so
    change run ids. Each cell's ``logging.wandb_group`` is the grid name (not part of the id)."""
    extra = list(extra_overrides or [])
    profile = _profile_override(extra, spec.profile)
    pairs: list[tuple[str, str, dict | None]] = [(b, d, None) for b in spec.backbones for d in spec.denoisers]
    pairs += [(e["backbone"], e["denoiser"], e) for e in spec.include]
    cells: list[Cell] = []
    seen: set[str] = set()
    for ds, noise, seed in itertools.product(spec.datasets, spec.noise, spec.seeds):
        nlabel = noise_label(noise)
        noise_ov = [f"dataset.noise.{k}={_dotvalue(v)}" for k, v in sorted(noise.items())]
        for backbone, denoiser, inc in pairs:
            if inc is not None and not _matches({k: v for k, v in inc.items() if k in _MATCH_KEYS - {"backbone", "denoiser"}},
                                                ds.name, nlabel, backbone, denoiser, seed):
                continue
            own = list(inc.get("overrides", [])) if inc is not None else []
            if any(_matches(e, ds.name, nlabel, backbone, denoiser, seed) for e in spec.exclude):
                continue
            own = _as_overridden([*spec.backbone_overrides.get(backbone, []), *spec.denoiser_overrides.get(denoiser, []), *own],
                                 extra)
            for params in _param_grid(spec, denoiser):
                overrides = [*spec.overrides, *ds.overrides, *noise_ov, *own,
                             *(f"denoiser.{k}={_dotvalue(v)}" for k, v in sorted(params.items())),
                             f"seed={seed}", f"logging.wandb_group={_dotvalue(spec.name)}", *extra]
                cell = Cell(index=len(cells), run_id="", dataset=ds.name, backbone=backbone, denoiser=denoiser,
                            seed=seed, noise=nlabel, params=params, profile=profile, overrides=overrides,
                            own=tuple(own))
                try:
                    cfg = cell.compose()
                    cell.run_id, cell.setting = run_id(cfg), run_setting(cfg)
                    if spec.tune_seeds and monitor_mode(cell.monitor) == "min":
                        raise ConfigError(f"tune_seeds choose settings on train.monitor, here {cell.monitor}; "
                                          "a choice needs a validation metric")
                except ConfigError as exc:
                    raise ConfigError(f"{spec.path}: cell '{cell.label}': {exc}") from exc
                if cell.run_id in seen:
                    continue
                seen.add(cell.run_id)
                cells.append(cell)
    return cells


@dataclass
class Plan:
    """Which cells to run now and which are skipped (already done, not applicable, running in
    another process, or failed with --skip-failed)."""

    todo: list[Cell]
    done: list[Cell]
    failed: list[Cell]  # cells with a failure record (in todo unless skipped or running)
    skipped_failed: list[Cell]
    running: list[Cell] = field(default_factory=list)  # locked by another live process
    not_applicable: list[Cell] = field(default_factory=list)  # never retried: they cannot run by design
    redo: list[Cell] = field(default_factory=list)  # finished, but run again (in todo unless running)


def data_changed_ids(cells: list[Cell], store) -> set[str]:
    """Not-applicable cells whose stored row names a data digest other than that of the data the
    cell loads now (e.g. titles added to an item file since): they may run now, so they run again.
    Loads each such dataset once, without noise: the digest is of the data as read, so the clean
    and noisy settings share it (rows without a digest, stored before rows had one, stay as they are)."""
    recorded = store.not_applicable_digests()
    by_id = {c.run_id: c for c in cells if c.run_id in recorded}
    if not by_id:
        return set()
    from dataclasses import asdict

    from benchmark.config import NoiseConfig, to_dict
    from benchmark.data.build import data_digest_of

    current: dict[str, str | None] = {}
    changed = set()
    for rid, cell in by_id.items():
        dataset = {**to_dict(cell.compose())["dataset"], "noise": asdict(NoiseConfig())}
        key = json.dumps(dataset, sort_keys=True, default=str)
        if key not in current:
            current[key] = data_digest_of(dataset)
        if current[key] is not None and current[key] != recorded[rid]:
            changed.add(rid)
    return changed


def plan(cells: list[Cell], statuses: dict[str, str], skip_failed: bool = False,
         runs_dir: str | Path | None = None, redo: set[str] = frozenset()) -> Plan:
    """Split ``cells`` by their status in the store (``run_id -> 'ok' | 'failed' |
    'not_applicable'``) and, given ``runs_dir``, by whether another process holds their run
    directory's lock right now. Finished cells whose id is in ``redo`` run again."""
    from benchmark.runlock import lock_holder
    from benchmark.store import STATUS_FAILED, STATUS_NOT_APPLICABLE, STATUS_OK

    again = [c for c in cells if c.run_id in redo and statuses.get(c.run_id) == STATUS_OK]
    statuses = {rid: status for rid, status in statuses.items() if rid not in redo}
    done = [c for c in cells if statuses.get(c.run_id) == STATUS_OK]
    failed = [c for c in cells if statuses.get(c.run_id) == STATUS_FAILED]
    not_applicable = [c for c in cells if statuses.get(c.run_id) == STATUS_NOT_APPLICABLE]
    skipped = failed if skip_failed else []
    skip = {c.run_id for c in (*done, *skipped, *not_applicable)}
    running = [] if runs_dir is None else [c for c in cells if c.run_id not in skip
                                             and lock_holder(Path(runs_dir) / c.run_id) is not None]
    skip |= {c.run_id for c in running}
    return Plan([c for c in cells if c.run_id not in skip], done, failed, skipped, running, not_applicable, again)


_TIME_COLUMNS = ("data_seconds", "denoise_seconds", "fit_seconds")


@dataclass(frozen=True)
class TimeEstimate:
    """Expected wall seconds of one grid cell, a planning figure (wall time depends on load).

    ``runs``: finished runs behind the figure; for a scaled one, the plain runs it scales plus
    the number of settings its cost ratio is the median over. ``scaled``: no finished run
    matches the cell, so the figure is the plain backbone's time on this dataset times the
    denoiser's cost ratio (its runs over plain runs) where both finished."""

    seconds: float
    runs: int
    scaled: bool = False


# what sets a run's length besides its dataset, backbone and denoiser: config key (= store column), and the
# value a store row without the column had
_SETTING_KEYS = (("protocol", "benchmark"), ("train.train_instances", "auto"), ("train.monitor", "valid/ndcg@10"),
                 ("train.max_epochs", "300"))


def setting_value(setting: tuple[str, ...], key: str) -> str:
    """The value at ``key`` (one of ``_SETTING_KEYS``) of a ``run_setting`` tuple; its default when empty."""
    index, default = next((i, d) for i, (k, d) in enumerate(_SETTING_KEYS) if k == key)
    return setting[index] if setting else default


def run_setting(cfg) -> tuple[str, ...]:
    """A resolved run config's protocol preset, training instances, stopping metric and epoch budget
    (``_SETTING_KEYS``)."""
    from omegaconf import OmegaConf

    return tuple(str(OmegaConf.select(cfg, key, default=default)) for key, default in _SETTING_KEYS)


def estimate_seconds(cells: list[Cell], frame) -> dict[str, TimeEstimate]:
    """``run_id -> TimeEstimate`` for the cells whose time the store can tell.

    ``frame`` is ``ResultStore.frame("ok")``. A run's time is its data + denoise + fit seconds;
    runs match a cell on dataset, backbone, denoiser, protocol preset, training instances,
    stopping metric and epoch budget (training on the loss runs far longer),
    and the cell's estimate is their median. Failing that, a denoised cell is scaled: the median
    of the matching plain-backbone runs times the median ratio denoiser / plain over the
    settings holding both, those with the cell's backbone first, any backbone when there are
    none (a planning figure: cost ratios shift with data and sequence length). Cells neither
    way are left out."""
    import polars as pl

    names = ["dataset.name", "backbone.name", "denoiser.name"]
    if frame is None or frame.height == 0 or not all(c in frame.columns for c in names):
        return {}
    cols = [c for c in _TIME_COLUMNS if c in frame.columns]
    if not cols:
        return {}
    frame = frame.with_columns(
        pl.sum_horizontal([pl.col(c).fill_null(0.0) for c in cols]).alias("_seconds"),
        *((pl.col(column).cast(pl.Utf8).fill_null(default) if column in frame.columns else pl.lit(default))
          .alias(column) for column, default in _SETTING_KEYS))
    keys = [*names, *(column for column, _ in _SETTING_KEYS)]
    per_key = frame.group_by(keys).agg(pl.col("_seconds").median(), pl.len().alias("_n"))
    # (dataset, backbone, denoiser, *setting) -> (median seconds, runs)
    table = {tuple(r[k] for k in keys): (float(r["_seconds"]), int(r["_n"])) for r in per_key.to_dicts()}
    ratios: dict[tuple[str, str], list[float]] = {}  # (denoiser, backbone) -> denoiser / plain, per setting
    for (dataset, backbone, denoiser, *setting), (seconds, _) in table.items():
        plain = table.get((dataset, backbone, "none", *setting))
        if denoiser != "none" and plain is not None and plain[0] > 0:
            ratios.setdefault((denoiser, backbone), []).append(seconds / plain[0])
    out = {}
    for c in cells:
        setting = c.setting or run_setting(c.compose())
        hit = table.get((c.dataset, c.backbone, c.denoiser, *setting))
        if hit is not None:
            out[c.run_id] = TimeEstimate(*hit)
            continue
        plain = table.get((c.dataset, c.backbone, "none", *setting))
        seen = ratios.get((c.denoiser, c.backbone)) or [
            r for (denoiser, _), rs in ratios.items() if denoiser == c.denoiser for r in rs]
        if plain is not None and seen:
            out[c.run_id] = TimeEstimate(plain[0] * statistics.median(seen), plain[1] + len(seen), scaled=True)
    return out


def format_duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3.4 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class GridSummary:
    ran: list[str] = field(default_factory=list)  # run ids executed in this invocation, in finishing order
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run id -> error
    not_applicable: dict[str, str] = field(default_factory=dict)  # run id -> why the cell cannot run by design
    busy: dict[str, str] = field(default_factory=dict)  # run id -> which process runs it (nothing stored)
    stored_elsewhere: list[str] = field(default_factory=list)  # finished by another process after planning
    skipped_done: int = 0
    skipped_failed: int = 0
    skipped_not_applicable: int = 0
    interrupted: bool = False


def run_grid(
    cells: list[Cell],
    store_dir: str | Path,
    runs_dir: str | Path = "runs",
    grid_name: str | None = None,
    grid_file: str | None = None,
    command: str | None = None,
    launcher: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    cpus_per_cell: float = 1.0,
    gpus_per_cell: float = 0.0,
    skip_failed: bool = False,
    executor: str | None = None,
    progress: bool = True,
    echo: Any = None,
    torch_threads: int = 0,
    redo_stale_text: bool = False,
) -> GridSummary:
    """Run every cell not yet in the store; record each outcome as one atomic store file.

    ``torch_threads`` > 0 sets each cell's torch threads (0: all cores for one worker, an equal
    share for several local workers).

    Ctrl-C and SIGTERM stop the grid after recording what finished (``interrupted=True``);
    the next invocation runs only what is missing, and a cell interrupted after a finished
    training epoch continues from that epoch's checkpoint to the metrics an uninterrupted run
    would have reached (``benchmark.run.execute(..., resume=True)``).

    ``redo_stale_text`` re-runs the cells whose stored rows are
    :meth:`~benchmark.store.ResultStore.stale_text_ids`: a finished run directory is not
    reused, the new row replaces the old one, and a failure leaves the old row in place."""
    import threading

    from tqdm import tqdm

    from benchmark.interrupt import stop_on_signals

    from benchmark.launchers import DEFAULT_EXECUTOR, STATUS_BUSY, CellOutcome, CellTask, launch
    from benchmark.report import describe_resumed
    from benchmark.store import STATUS_NOT_APPLICABLE, ResultStore, failure_row, result_row

    store = ResultStore(store_dir)
    redo = store.stale_text_ids() if redo_stale_text else set()
    redo_na = data_changed_ids(cells, store)
    p = plan(cells, {rid: s for rid, s in store.statuses().items() if rid not in redo_na}, skip_failed, runs_dir, redo)
    again = {c.run_id for c in p.redo}
    summary = GridSummary(skipped_done=len(p.done), skipped_failed=len(p.skipped_failed),
                          skipped_not_applicable=len(p.not_applicable))
    summary.busy.update({c.run_id: "running in another process" for c in p.running})
    bar = tqdm(total=len(cells), initial=len(cells) - len(p.todo), unit="cell", disable=not progress,
               desc=grid_name or "grid", dynamic_ncols=True)
    write = echo or bar.write
    tasks = [CellTask(c, str(runs_dir), executor or DEFAULT_EXECUTOR, torch_threads,
                      redo_stale_text=c.run_id in again)
             for c in p.todo]

    stop = threading.Event()

    def on_done(task: CellTask, out: CellOutcome) -> None:
        if stop.is_set():
            # the stop arrived while this cell ran: library code may have turned the interrupt into
            # an ordinary error, or swallowed it and returned early, so its outcome is not a result
            raise KeyboardInterrupt
        if out.status == STATUS_BUSY:  # the other process will store it; a failure row here would be wrong
            summary.busy[out.run_id] = out.error or ""
            write(f"busy   {out.run_id}  {task.cell.label}: {out.error}")
            bar.update(1)
            return
        replaces = task.redo_stale_text and store.is_stale_text(out.run_id)
        if out.status != "ok" and replaces:  # the finished row stays until a rerun succeeds
            summary.failed[out.run_id] = out.error or ""
            write(f"FAILED {out.run_id}  {task.cell.label}: {out.error} (its earlier row stays in the store)")
            bar.update(1)
            return
        if out.status == "ok" and store.status(out.run_id) == "ok" and not replaces:
            # another grid finished it after this one planned; its run directory answered with that
            # result, and the row already stored (with that grid's provenance) stays as it is
            summary.stored_elsewhere.append(out.run_id)
            write(f"done   {out.run_id}  {task.cell.label}: stored by another process while this grid ran")
            bar.update(1)
            return
        if out.status == "ok":
            row = result_row(out.result or {}, grid_name, grid_file, command)
            summary.ok.append(out.run_id)
            resumed = (out.result or {}).get("resumed_from") or {}
            note = f", resumed {describe_resumed(resumed)}" if resumed else ""
            write(f"ok     {out.run_id}  {task.cell.label}  ({out.seconds:.1f} s{note})")
        else:
            row = failure_row(out.run_id, out.config or {}, out.error or "unknown error", out.error_kind or "Error",
                              out.error_traceback, grid_name, grid_file, command, out.extra.get("data_digest"))
            if row["status"] == STATUS_NOT_APPLICABLE:
                summary.not_applicable[out.run_id] = out.error or ""
                write(f"n/a    {out.run_id}  {task.cell.label}: {out.error}")
            else:
                summary.failed[out.run_id] = out.error or ""
                write(f"FAILED {out.run_id}  {task.cell.label}: {out.error}")
        store.write(row)
        summary.ran.append(out.run_id)
        bar.update(1)

    try:
        with stop_on_signals(stop):  # Ctrl-C and SIGTERM: stop, keep what is stored
            launch(tasks, on_done, launcher, workers, ray_address, cpus_per_cell, gpus_per_cell)
    except (KeyboardInterrupt, SystemExit):  # Lightning turns an interrupt into SystemExit
        summary.interrupted = True
    finally:
        bar.close()
    return summary


def _match_values(cell: Cell, key: str) -> set[str]:
    """The strings an ``--only`` value may use for ``key`` of ``cell``; a noise setting matches
    by its label (``"replace α=0.1"``) or its kind (``replace``; ``none`` or ``clean``); a
    ``denoiser_params`` key by its value (cells without that key match nothing)."""
    if key not in _MATCH_KEYS:
        return {_fmt(cell.params[key])} if key in cell.params else set()
    value = str(getattr(cell, key))
    if key != "noise":
        return {value}
    kind = "none" if value == "clean" else value.split(" ")[0]
    return {value, kind, "clean" if kind == "none" else kind}


def select(cells: list[Cell], only: list[str]) -> list[Cell]:
    """Cells matching every ``key=v1,v2`` filter (keys: dataset, noise, backbone, denoiser, seed,
    or a ``denoiser_params`` key of the grid such as ``info_weight``); lets one grid file be run
    in slices (e.g. seed 0 of every cell first). A value that matches no cell of the grid is an
    error naming the values the grid has (a typo must not silently select nothing)."""
    every = cells
    param_keys = {k for c in every for k in c.params}
    for spec in only:
        key, sep, values = spec.partition("=")
        if not sep or key not in _MATCH_KEYS | param_keys or not values:
            raise ValueError(f"--only {spec!r}: expected KEY=V1[,V2...] with KEY one of "
                             f"{', '.join(sorted(_MATCH_KEYS) + sorted(param_keys))}")
        wanted = set(values.split(","))
        available = set().union(*(_match_values(c, key) for c in every)) if every else set()
        unknown = sorted(wanted - available)
        if every and unknown:
            names = sorted(available if key in param_keys else {str(getattr(c, key)) for c in every})
            raise ValueError(f"--only {spec!r}: {', '.join(unknown)} matches no cell; the grid's {key} values: {', '.join(names)}")
        cells = [c for c in cells if _match_values(c, key) & wanted]
    return cells

