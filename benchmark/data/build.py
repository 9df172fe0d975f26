"""Dataset config → ``SplitData``: load, inject noise, split, record the protocol.

``build_split_data(cfg)`` runs ``catalog.load_interactions`` (read + preprocess), the noise
injection of ``cfg.noise`` (protocol.md §5; before the split), the split ``cfg.split``
(protocol.md §3) and, for ``target_flip``, the flips of the training targets. Results are
cached in memory per process, keyed by the whole dataset config plus the resolved data root,
so a grid of runs on one dataset loads it once. The cached ``SplitData`` is shared: treat it
as read-only (``SplitData.with_train`` / ``dataclasses.replace`` make modified copies).

``SplitData.meta`` (arrays, not part of the printed protocol):

* ``valid_target_noise`` int8 ``[n_valid]`` — label of each validation target (1 = injected);
  present whenever the data carries labels.
* ``steam_deleted`` — ``{'items': int64 [k], 'before': int64 [k]}``: every item STEAM noise
  deleted from a training row, with the flat index into ``train.items`` of the kept item its
  run preceded (the same gaps exist in the validation/test histories, which extend the train
  rows under leave-one-out).
* ``target_flip`` int64 ``[len(train.items)]`` — replacement target per training position
  (0 = unchanged); only meaningful for ``train_instances: prefix``.
* ``item_cluster``, ``user_clusters`` — synthetic data only.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from functools import lru_cache

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark.config import ConfigError, DatasetConfig, data_root
from benchmark.data.digest import interactions_digest
from benchmark.data.noise import flip_targets, inject_noise
from benchmark.data.sequences import SplitData
from benchmark.data.splits import (LEAVE_ONE_OUT_SPLITS, VALID_IN_TRAIN_SPLIT, leave_one_out_index, materialize,
                                   occurrences, sliding_window_index)

SPLITS = (*LEAVE_ONE_OUT_SPLITS, "window")
WINDOW_RATIOS = (0.8, 0.1, 0.1)


def as_dataset_config(cfg: DatasetConfig | DictConfig | dict) -> DatasetConfig:
    """A typed ``DatasetConfig`` from a dataclass, an OmegaConf node or a plain dict."""
    if isinstance(cfg, DatasetConfig):
        return cfg
    if isinstance(cfg, (DictConfig, dict)):
        try:
            merged = OmegaConf.merge(OmegaConf.structured(DatasetConfig), cfg)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"dataset: {exc}") from exc
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    raise TypeError(f"build_split_data: expected a DatasetConfig, DictConfig or dict, got {type(cfg).__name__}")


def _cache_key(cfg: DatasetConfig) -> str:
    data = asdict(cfg)
    data["resolved_root"] = str(data_root(cfg.root))
    return json.dumps(data, sort_keys=True, default=str)


def build_split_data(cfg: DatasetConfig | DictConfig | dict) -> SplitData:
    """The split dataset for ``cfg`` (cached per process; see module docstring)."""
    cfg = as_dataset_config(cfg)
    if cfg.split not in SPLITS:
        raise ConfigError(f"dataset.split={cfg.split!r}; expected one of {', '.join(SPLITS)}")
    return _build_cached(_cache_key(cfg))


def data_digest_of(cfg: DatasetConfig | DictConfig | dict) -> str | None:
    """The digest of the data ``cfg`` loads (:mod:`benchmark.data.digest`); None when it cannot
    be loaded. Uses the per-process cache, so it is free after a run on that data."""
    try:
        return build_split_data(cfg).protocol.get("data_digest")
    except Exception:  # noqa: BLE001 - the caller records a digest when there is one, never fails for it
        return None


def clear_cache() -> None:
    """Forget every cached ``SplitData`` (e.g. after the files on disk changed)."""
    _build_cached.cache_clear()


@lru_cache(maxsize=8)
def _build_cached(key: str) -> SplitData:
    data = json.loads(key)
    data.pop("resolved_root")
    return _build(as_dataset_config(data))


def _load_interactions(cfg: DatasetConfig):
    from benchmark.data import catalog  # imported late: catalog imports the synthetic generator

    return catalog.load_interactions(cfg)


def _build(cfg: DatasetConfig) -> SplitData:
    inter = _load_interactions(cfg)
    digest = interactions_digest(inter)  # of the data as read, before any noise
    leave_one_out = cfg.split in LEAVE_ONE_OUT_SPLITS
    noisy = inject_noise(inter, cfg.noise, "loo" if leave_one_out else cfg.split)
    seqs = noisy.sequences
    if leave_one_out:
        index = leave_one_out_index(seqs, valid_in_train=cfg.split == VALID_IN_TRAIN_SPLIT)
    else:
        index = sliding_window_index(seqs, cfg.window_size, WINDOW_RATIOS)
    _require_eval_instances(cfg, seqs, len(index.valid.users), len(index.test.users))
    train, valid, test = materialize(noisy, index)

    meta: dict = {k: noisy.meta[k] for k in ("item_cluster", "user_clusters") if k in noisy.meta}
    if seqs.noise is not None:
        meta["valid_target_noise"] = seqs.noise[index.valid.targets]
    deleted = noisy.meta.get("steam_deleted")
    if deleted is not None:
        which, flat = occurrences(index.train.src, deleted["before"])
        meta["steam_deleted"] = {"items": deleted["items"][which], "before": flat}
    if cfg.noise.kind == "target_flip":
        meta["target_flip"] = flip_targets(train, seqs, noisy.n_items, cfg.noise.alpha, cfg.noise.seed)

    protocol = _protocol(cfg, noisy, index, train, meta)
    protocol["data_digest"] = digest
    return SplitData(
        name=cfg.name, train=train, valid=valid, test=test, n_users=noisy.n_users, n_items=noisy.n_items,
        item_text=list(noisy.item_text), protocol=protocol, item_raw_ids=noisy.item_raw_ids,
        user_raw_ids=noisy.user_raw_ids, meta=meta,
    )


def _require_eval_instances(cfg: DatasetConfig, seqs, n_valid: int, n_test: int) -> None:
    """Raise a ConfigError when the split leaves no validation or no test instance (training
    would stop on a metric that is never computed)."""
    if n_valid and n_test:
        return
    longest = int(seqs.lengths.max()) if len(seqs.lengths) else 0
    need = ("leave-one-out needs users with at least 3 interactions" if cfg.split in LEAVE_ONE_OUT_SPLITS else
            f"the window split cuts the windows of dataset.window_size={cfg.window_size} items 8:1:1 by time and "
            "needs at least 10 of them")
    raise ConfigError(f"dataset '{cfg.name}': the {cfg.split} split leaves {n_valid} validation and {n_test} test "
                      f"instances ({len(seqs.lengths)} users, the longest with {longest} interactions); {need}")


def _protocol(cfg: DatasetConfig, inter, index, train, meta: dict) -> dict:
    """JSON-ready record of how the data was made (printed with every result)."""
    seqs = inter.sequences
    noise = cfg.noise
    p: dict = {
        "dataset": cfg.name, "split": cfg.split, "k_core": cfg.k_core, "max_len": cfg.max_len,
        "duplicates": cfg.duplicates, "text_columns": list(cfg.text_columns),
        "n_users": int(inter.n_users), "n_items": int(inter.n_items), "n_interactions": int(len(seqs.items)),
        "n_train_rows": int(train.n_rows), "n_train_positions": int(len(train.items)),
        "n_valid": int(len(index.valid.users)), "n_test": int(len(index.test.users)),
        "noise": noise.kind,
    }
    if cfg.split in LEAVE_ONE_OUT_SPLITS:
        p["short_users"] = int(((seqs.lengths > 0) & (seqs.lengths < 3)).sum())
        p["short_user_policy"] = "users with 1-2 items: whole sequence in train, no valid/test instance"
        if cfg.split == VALID_IN_TRAIN_SPLIT:
            p["valid_in_train"] = "training rows run through s_{n-1}: validation metrics are in-sample"
    else:
        p.update(window_size=cfg.window_size, window_ratios=list(WINDOW_RATIOS),
                 window_order="stable sort by time of the last item",
                 window_test_targets="restored to their items before noise injection")
    if noise.kind != "none":
        p["noise_seed"] = noise.seed
    if noise.kind == "replace":
        p.update(noise_alpha=noise.alpha, noise_protect_valid=noise.protect_valid if cfg.split in LEAVE_ONE_OUT_SPLITS else None)
    elif noise.kind == "steam":
        p.update(noise_keep=noise.keep, noise_delete=noise.delete, noise_insert=noise.insert,
                 noise_deleted=int(len(inter.meta["steam_deleted"]["items"])))
    elif noise.kind == "target_flip":
        p.update(noise_alpha=noise.alpha, noise_flipped=int((meta["target_flip"] > 0).sum()),
                 noise_note="training targets flipped to never-interacted items; prefix instances only")
    if train.noise is not None:
        p["train_noise_rate"] = float(np.mean(train.noise)) if len(train.noise) else 0.0
    if cfg.name == "synthetic":
        p["synthetic"] = asdict(cfg.synthetic)
    return p
