"""Result-store rows grouped for leaderboards, with per-seed statistics.

Rows are grouped into *sections* — one per dataset, noise setting and training budget/data
setting (:data:`SETTING_KEYS`) — and, inside a section, into *variants*: runs whose configs
agree on everything but the seed and non-semantic fields (:data:`IGNORED_KEYS`). A variant's
label is its backbone and denoiser, plus whatever keys set it apart from other variants of the
same backbone and denoiser (e.g. ``semantic-outlier (ratio=0.05)``). Statistics: mean ± sample
std (ddof 1) over seeds, relative gain over the backbone's ``none`` variant, and a paired
t-test over the seeds both share (``scipy.stats.ttest_rel``). Where a backbone and denoiser ran
with several hyperparameter settings, :func:`chosen_on_validation` picks one by the validation
metric the runs early-stopped on (never by a test metric).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import ttest_rel

from benchmark.config import fill_added_keys
from benchmark.metrics import monitor_mode
from benchmark.store import flatten, is_stale_text_row, text_vector_denoisers, monitor_column as store_monitor_column

SIGNIFICANCE = 0.05
SETTING_PREFIXES = ("dataset.",)
SETTING_KEYS = ("protocol", "train.max_epochs", "train.min_epochs", "train.patience", "train.monitor", "eval.ks", "eval.exclude_history", "data_source")
IGNORED_KEYS = ("seed", "profile", "dataset.name", "dataset.root", "train.num_workers", "train.pin_memory",
                "train.share_native", "eval.batch_size", "eval.optimistic_ties")
IGNORED_PREFIXES = ("logging.",)
# ignored when a dataset's rows are grouped into variants, but part of which cell a run is
CELL_KEYS = ("seed", "dataset.name")
# Budget keys named in a variant's label whenever they differ from their default, even when no
# peer differs: a row trained on part of each epoch must say so.
BUDGET_DEFAULTS = {"train.limit_train_batches": 1.0, "train.prefix_epoch_share": 1.0}


@dataclass
class Variant:
    backbone: str
    denoiser: str
    config: dict[str, Any]  # variant-defining config (flat)
    runs: dict[int, dict] = field(default_factory=dict)  # seed -> store row
    label: str = ""

    @property
    def seeds(self) -> list[int]:
        return sorted(self.runs)

    def values(self, column: str) -> dict[int, float]:
        """seed -> value of ``column`` for the seeds where it is a number."""
        out = {}
        for seed, row in self.runs.items():
            v = row.get(column)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[seed] = float(v)
        return out

    def capped_seeds(self) -> list[int]:
        """Seeds whose run trained all ``train.max_epochs`` epochs: early stopping never fired,
        so the monitored metric had improved within the last ``patience`` epochs when the epoch
        budget ran out, and the row may be undertrained."""
        capped = []
        for seed, row in self.runs.items():
            cap, ran = row.get("train.max_epochs"), row.get("epochs")
            if isinstance(cap, (int, float)) and isinstance(ran, (int, float)) and cap > 0 and ran >= cap:
                capped.append(seed)
        return sorted(capped)

    def stale_text_seeds(self) -> list[int]:
        """Seeds whose row is a text-vector denoiser's run stored before rows named their text
        encoders (``ResultStore.stale_text_ids``): it reproduces only against the text cache
        that made it."""
        text = text_vector_denoisers()
        return sorted(seed for seed, row in self.runs.items() if is_stale_text_row(row, text))

    @property
    def mode(self) -> str:
        modes = sorted({str(r.get("mode") or "plain") for r in self.runs.values()})
        return ", ".join(modes)


@dataclass
class Section:
    dataset: str
    noise: str
    setting: dict[str, Any]
    variants: list[Variant]
    protocols: list[dict]

    @property
    def ks(self) -> list[int]:
        raw = self.setting.get("eval.ks", "[5, 10, 20]")
        return sorted(json.loads(raw) if isinstance(raw, str) else list(raw))

    @property
    def metrics(self) -> list[str]:
        return [f"{m}@{k}" for m in ("hr", "ndcg") for k in self.ks]


# ----------------------------------------------------------------------------- statistics
def mean_std(values: list[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def mean_of(v: "Variant", column: str) -> float | None:
    """Mean over ``v``'s seeds (in seed order) of a numeric store column; None without values."""
    vals = v.values(column)
    return mean_std([vals[s] for s in sorted(vals)])[0] if vals else None


def paired_pvalue(a: dict[int, float], b: dict[int, float]) -> float | None:
    """Two-sided paired t-test p-value of ``a`` vs ``b`` over the seeds both have (sorted);
    None with fewer than 2 common seeds or when the test is undefined (no variation)."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    x = np.array([a[s] for s in common])
    y = np.array([b[s] for s in common])
    diff = x - y
    if np.ptp(diff) <= 1e-12 * max(1.0, float(np.abs(diff).max())):  # constant: t is 0/0 or infinite
        return None
    p = float(ttest_rel(x, y).pvalue)
    return p if math.isfinite(p) else None


# ----------------------------------------------------------------------------- grouping
def _is_setting(key: str) -> bool:
    return key in SETTING_KEYS or (key.startswith(SETTING_PREFIXES) and key not in IGNORED_KEYS)


def _is_ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _short(key: str) -> str:
    return key[len("denoiser."):] if key.startswith("denoiser.") else key


def fmt_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def section_title(section: Section, sections: list[Section]) -> str:
    """The section's noise setting, followed by the settings that tell it apart from the dataset's
    other sections with that noise setting: ``clean — train.min_epochs=30``."""
    siblings = [s for s in sections if s.noise == section.noise]
    if len(siblings) < 2:
        return section.noise
    keys = sorted({k for s in siblings for k in s.setting})
    varying = [k for k in keys if len({dump(s.setting.get(k)) for s in siblings}) > 1]
    return section.noise + " — " + ", ".join(f"{k}={fmt_value(section.setting.get(k))}" for k in varying)


def cell_identity(row: dict) -> str:
    """The configuration a store row ran, minus logging, with keys added since it ran set to their
    defaults: equal for a failed attempt and a later successful run of the same cell, even when
    the run id changed with the code's config schema."""
    cfg = fill_added_keys(flatten(json.loads(row["config_json"])))
    return dump({k: v for k, v in cfg.items() if not _is_ignored(k) or k in CELL_KEYS})


def build_sections(rows: list[dict]) -> dict[str, list[Section]]:
    """dataset -> sections (sorted: clean first, then by noise label, then by setting)."""
    groups: dict[tuple[str, str, str], dict[str, Variant]] = {}
    settings: dict[tuple[str, str, str], dict] = {}
    protocols: dict[tuple[str, str, str], list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["run_id"]):
        cfg = fill_added_keys(flatten(json.loads(row["config_json"])))
        setting = {k: v for k, v in cfg.items() if _is_setting(k)}
        variant_cfg = {k: v for k, v in cfg.items() if not _is_setting(k) and not _is_ignored(k)}
        key = (str(cfg["dataset.name"]), str(row["noise_setting"]), dump(setting))
        settings[key] = setting
        protocols.setdefault(key, []).append(json.loads(row["protocol_json"]) if row.get("protocol_json") else {})
        vkey = dump(variant_cfg)
        variants = groups.setdefault(key, {})
        if vkey not in variants:
            variants[vkey] = Variant(str(cfg["backbone.name"]), str(cfg["denoiser.name"]), variant_cfg)
        variants[vkey].runs.setdefault(int(cfg["seed"]), row)
    out: dict[str, list[Section]] = {}
    for key in sorted(groups, key=lambda k: (k[0], k[1] != "clean", k[1], k[2])):
        variants = list(groups[key].values())
        _label(variants)
        variants.sort(key=lambda v: (v.backbone, v.denoiser != "none", v.denoiser, v.label))
        out.setdefault(key[0], []).append(Section(key[0], key[1], settings[key], variants, protocols[key]))
    return out


def _label_value(value: Any) -> str:
    """A setting as a variant label shows it; an unset key (null: the denoiser's preset decides,
    e.g. HSD's ``eval_decision``) reads ``default``, not ``null``."""
    return "default" if value is None else fmt_value(value)


def _label(variants: list[Variant]) -> None:
    """Name each variant: denoiser + the keys that differ among its (backbone, denoiser) peers."""
    peers: dict[tuple[str, str], list[Variant]] = {}
    for v in variants:
        peers.setdefault((v.backbone, v.denoiser), []).append(v)
    for group in peers.values():
        keys = sorted({k for v in group for k in v.config})
        varying = [k for k in keys if len({dump(v.config.get(k)) for v in group}) > 1]
        for v in group:
            budget = [k for k, d in BUDGET_DEFAULTS.items() if k not in varying and k in v.config and v.config[k] != d]
            extra = ", ".join(f"{_short(k)}={_label_value(v.config.get(k))}" for k in sorted(varying + budget))
            v.label = f"{v.denoiser} ({extra})" if extra else v.denoiser


def compared_with(backbone: str) -> str | None:
    """The backbone a standalone model (FMLP-Rec, DCRec) is compared with (its class's
    ``compared_with``); None for ordinary backbones and for names no installed package registers."""
    from benchmark.registry import BACKBONES, UnknownNameError

    try:
        return getattr(BACKBONES.get(backbone), "compared_with", None)
    except UnknownNameError:
        return None


def baseline_of(variant: Variant, section: Section) -> Variant | None:
    """The plain row ``variant`` is compared with: the backbone's ``none`` variant matching
    ``variant`` outside the denoiser section (else the only ``none`` variant of the backbone, else
    the one whose ``train.train_instances`` setting is the variant's, else, when none has it, the
    one on the default instances). A
    standalone model's own plain row is compared with the plain row of the backbone it modifies
    (``compared_with``, e.g. FMLP-Rec and DCRec with SASRec); other plain rows have none."""
    backbone, strip_prefixes = variant.backbone, ("denoiser.",)
    if variant.denoiser == "none":
        backbone, strip_prefixes = compared_with(variant.backbone), ("denoiser.", "backbone.", "train.")
        if backbone is None:
            return None
    nones = [v for v in section.variants if v.backbone == backbone and v.denoiser == "none"]
    strip = lambda cfg: {k: x for k, x in cfg.items() if not k.startswith(strip_prefixes)}  # noqa: E731
    exact = [v for v in nones if strip(v.config) == strip(variant.config)]
    if len(exact) == 1:
        return exact[0]
    if len(nones) == 1:
        return nones[0]
    # several plain rows (e.g. a control trained on prefix instances beside the default one): the
    # one whose training instances were chosen the way the variant's were
    key = "train.train_instances"
    same = [v for v in nones if v.config.get(key, "auto") == variant.config.get(key, "auto")]
    if len(same) == 1:
        return same[0]
    # instances no plain row trained on (e.g. iadsr-reference's last_only): the plain row on the
    # default instances, as in a section that holds only that one
    default = [v for v in nones if v.config.get(key, "auto") == "auto" and v.config.get("train.prefix_epoch_share", 1.0) == 1.0]
    return default[0] if not same and len(default) == 1 else None


def trained_instances(variant: Variant) -> str | None:
    """How the variant's runs cut training instances (``windows`` or ``prefix``), as their
    protocol records it after resolving ``train.train_instances=auto``; None when the rows do not
    record it or their seeds disagree."""
    kinds = set()
    for row in variant.runs.values():
        raw = row.get("protocol_json")
        kinds.add(json.loads(raw).get("train_instances") if isinstance(raw, str) else None)
    return kinds.pop() if len(kinds) == 1 else None


def instance_control_of(variant: Variant, section: Section, base: Variant | None) -> Variant | None:
    """A plain row of the variant's backbone, other than its baseline ``base``
    (:func:`baseline_of`), trained on the instances
    the variant trained on with the same ``train.prefix_epoch_share``: the control that separates
    a denoiser's effect from its training instances (HSD and SSDRec train on one instance per
    target, a plain backbone on windows). None when there is no such row or several."""
    if variant.denoiser == "none":
        return None
    kind = trained_instances(variant)
    if kind is None:
        return None
    share = variant.config.get("train.prefix_epoch_share", 1.0)
    matches = [v for v in section.variants
               if v.backbone == variant.backbone and v.denoiser == "none" and v is not base
               and trained_instances(v) == kind and v.config.get("train.prefix_epoch_share", 1.0) == share]
    return matches[0] if len(matches) == 1 else None


@dataclass
class Stat:
    mean: float | None
    std: float | None
    n: int
    gain: float | None = None  # relative to the baseline mean
    p: float | None = None


def metric_stat(variant: Variant, column: str, base: Variant | None) -> Stat:
    vals = variant.values(column)
    if not vals:
        return Stat(None, None, 0)
    mean, std = mean_std([vals[s] for s in sorted(vals)])
    stat = Stat(mean, std, len(vals))
    if base is not None:
        bvals = base.values(column)
        if bvals:
            bmean = mean_std([bvals[s] for s in sorted(bvals)])[0]
            stat.gain = (mean - bmean) / bmean if bmean else None
            stat.p = paired_pvalue(vals, bvals)
    return stat


# ----------------------------------------------------------------------------- model selection
def section_monitor(section: Section) -> str:
    """The ``train.monitor`` the section's runs stopped on (rows stored before the key existed
    stopped on ``valid/ndcg@10``)."""
    return str(section.setting.get("train.monitor") or "valid/ndcg@10")


def monitor_column(section: Section) -> str:
    """Store column of the validation metric the section's runs early-stopped on, e.g.
    ``train.monitor = "valid/ndcg@10"`` -> ``"valid_ndcg@10"``."""
    return store_monitor_column(section_monitor(section))


@dataclass
class Choice:
    chosen: Variant
    candidates: list[Variant]  # every variant of the (backbone, denoiser), chosen included
    eligible: int  # candidates that ran the full seed set and so took part in the choice
    column: str  # validation column the choice maximised
    value: float  # the chosen variant's mean of ``column`` over its seeds


def chosen_on_validation(section: Section) -> list[Choice]:
    """Per (backbone, denoiser, training instances) with at least two variants: the variant with
    the highest mean validation value of the monitored metric. Rows trained on other instances
    (a plain backbone on prefix instances, the control of :func:`instance_control_of`) are another
    protocol, not another setting, so they do not compete. Only variants that ran every seed any
    of them ran compete (a mean over fewer seeds is not comparable); ties go to the first label in
    sort order. Test metrics play no part. A section stopped on the training loss has no choice
    (the grid refuses to tune on it): losses of different settings are not comparable, so every
    variant stands as its own row."""
    if monitor_mode(section_monitor(section)) != "max":
        return []
    column = monitor_column(section)
    groups: dict[tuple[str, str, str | None], list[Variant]] = {}
    for v in section.variants:
        groups.setdefault((v.backbone, v.denoiser, trained_instances(v)), []).append(v)
    out = []
    for group in groups.values():
        if len(group) < 2:
            continue
        seeds = set().union(*(set(v.values(column)) for v in group))
        eligible = [v for v in group if set(v.values(column)) == seeds]
        if not eligible:
            continue
        means = {id(v): float(np.mean([v.values(column)[s] for s in sorted(seeds)])) for v in eligible}
        best = max(sorted(eligible, key=lambda v: v.label), key=lambda v: means[id(v)])
        out.append(Choice(best, group, len(eligible), column, means[id(best)]))
    return out


def matches_cell(variant: Variant, cell: tuple[str, str]) -> bool:
    """Whether a variant is a paper cell's ``(backbone, denoiser)``: the denoiser itself or a
    preset of it (``iadsr-reference`` for ``iadsr``)."""
    backbone, denoiser = cell
    return variant.backbone == backbone and (variant.denoiser == denoiser or variant.denoiser.startswith(denoiser + "-"))


def bucket_count(variants: list[Variant]) -> int:
    """How many popularity buckets (``det_removal_ratio_b0..b<n-1>``) the rows of ``variants``
    record: the most that any row has."""
    n = 0
    for v in variants:
        for row in v.runs.values():
            while f"det_removal_ratio_b{n}" in row and row[f"det_removal_ratio_b{n}"] is not None:
                n += 1
    return n


# a seed whose mask flags at least this share of the training positions as noise has collapsed:
# it no longer tells noise from signal (IADSR's Gumbel-sigmoid gates can all close)
COLLAPSED_FLAG_RATE = 0.99


def collapsed_seeds(variant: Variant) -> list[int]:
    """Seeds of ``variant`` whose flag rate (``det_flag_rate``) is at least COLLAPSED_FLAG_RATE."""
    rates = variant.values("det_flag_rate")
    return [s for s in sorted(rates) if rates[s] >= COLLAPSED_FLAG_RATE]


def representative_variants(section: Section) -> list[Variant]:
    """The section's variants minus those a validation choice passed over (where a backbone and
    denoiser ran with several settings, only :func:`chosen_on_validation`'s pick stays)."""
    passed_over = {id(v) for c in chosen_on_validation(section) for v in c.candidates if v is not c.chosen}
    return [v for v in section.variants if id(v) not in passed_over]
