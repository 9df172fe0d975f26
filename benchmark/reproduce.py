"""Re-run a stored cell from its recorded config and compare the outcome with the stored row.

The store keeps each finished cell's resolved config (``config_json``). Re-composing it over the
current configs (so keys added since then take the defaults those runs used, see
``OMIT_AT_DEFAULT``) must give the same run id; the cell then trains again in a scratch run
directory and every recorded outcome column (validation and test metrics, pessimistic and
optimistic ties, per-bucket metrics, noise detection, epochs) is compared with the stored value.
On a CPU with the same seed the two agree exactly; timings and provenance columns are not
compared.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import ConfigError, compose, run_id
from benchmark.store import STATUS_OK, ResultStore, result_row

COMPARED_PREFIXES = ("valid_", "test_", "det_")
COMPARED_COLUMNS = ("epochs", "best_epoch", "mode", "native_epochs", "native_best_epoch")


class ReproduceError(ValueError):
    """The run id is not a finished cell of the store, or its config no longer composes to it."""


@dataclass
class Difference:
    column: str
    stored: Any
    rerun: Any


@dataclass
class Comparison:
    run_id: str
    compared: list[str]  # the outcome columns both rows hold
    differences: list[Difference]
    only_stored: list[str]  # outcome columns the stored row has and the rerun lacks
    only_rerun: list[str]
    torch_threads: int = 0  # the rerun's torch threads, those of the stored run (0: not recorded, process setting)
    stored_data: str | None = None  # data digests (benchmark.data.digest) of the stored run and the rerun
    rerun_data: str | None = None
    stored_cpu: str | None = None  # CPU model names (benchmark.provenance.cpu_model) of both runs
    rerun_cpu: str | None = None

    @property
    def cpu_changed(self) -> bool:
        """Both runs record their CPU and it differs: other kernels, so last digits may differ."""
        return bool(self.stored_cpu and self.rerun_cpu and self.stored_cpu != self.rerun_cpu)

    @property
    def data_changed(self) -> bool:
        """Both runs record a data digest and they differ: the files changed since the stored run."""
        return bool(self.stored_data and self.rerun_data and self.stored_data != self.rerun_data)

    @property
    def identical(self) -> bool:
        return not (self.differences or self.only_stored or self.only_rerun)


def stored_row(store: ResultStore, rid: str) -> dict:
    """The store's row for ``rid``; a finished cell only."""
    path = store.path(rid)
    if not path.exists():
        raise ReproduceError(f"run {rid}: no {path} (list stored runs with `bench results`)")
    import polars as pl

    row = pl.read_parquet(path).to_dicts()[0]
    if row.get("status") != STATUS_OK:
        raise ReproduceError(f"run {rid}: {path} records a failed cell ({row.get('error_kind')}), nothing to compare")
    return row


def config_of(row: dict):
    """The stored config re-composed over today's configs; raises if its run id changed."""
    rid = row["run_id"]
    raw = row.get("config_json")
    if not raw:
        raise ReproduceError(f"run {rid}: the stored row has no config_json")
    stored = json.loads(raw)
    try:
        cfg = compose(base=stored)
    except ConfigError as exc:
        raise ReproduceError(f"run {rid}: its stored config no longer composes: {exc}") from exc
    now = run_id(cfg)
    if now != rid:
        raise ReproduceError(f"run {rid}: its stored config now hashes to {now}: the config schema changed without "
                             "keeping old run ids (a key added without an OMIT_AT_DEFAULT entry, or a default changed)")
    return cfg


def _outcome_columns(row: dict) -> dict[str, Any]:
    return {k: v for k, v in row.items()
            if (k.startswith(COMPARED_PREFIXES) or k in COMPARED_COLUMNS) and v is not None}


def _equal(a: Any, b: Any, atol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= atol
    return a == b


def compare_rows(stored: dict, rerun: dict, atol: float = 0.0) -> Comparison:
    """Outcome columns of two store rows; floats equal within ``atol`` (0: exactly)."""
    a, b = _outcome_columns(stored), _outcome_columns(rerun)
    both = sorted(a.keys() & b.keys())
    diffs = [Difference(c, a[c], b[c]) for c in both if not _equal(a[c], b[c], atol)]
    return Comparison(str(stored["run_id"]), both, diffs, sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys()))


def stored_threads(row: dict) -> int:
    """The torch thread count the stored run trained with (0 when the row does not record it)."""
    value = row.get("torch_threads")
    return 0 if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def rerun_and_compare(row: dict, cfg, runs_dir: Path, atol: float = 0.0) -> Comparison:
    """Train the stored cell ``row`` again from ``cfg`` (:func:`config_of` of it) in ``runs_dir``
    (a fresh directory: a finished run directory there would be reused, not re-run) with the
    stored run's torch thread count (a grid cell run with ``--threads 1`` sums in a different
    order than a process using every core), and compare with the stored row."""
    from benchmark.run import execute
    from benchmark.threads import torch_threads

    cfg.logging.wandb = "disabled"  # not part of the run id; a rerun is no new W&B run
    threads = stored_threads(row)
    with torch_threads(threads):
        result = execute(cfg, runs_dir=runs_dir, force=True)
    rerun = result_row(result.to_json())
    comparison = compare_rows(row, rerun, atol)
    comparison.torch_threads = threads
    comparison.stored_data, comparison.rerun_data = row.get("data_digest"), rerun.get("data_digest")
    comparison.stored_cpu, comparison.rerun_cpu = row.get("cpu"), rerun.get("cpu")
    return comparison


STALE_TEXT_NOTE = ("  the stored row predates rows that name their text encoders: its text vectors were encoded in "
                   "batches and depended on what the text cache held then, so exact agreement was expected only "
                   "against that cache; `bench grid GRID --redo-stale-text` re-runs such cells with exact vectors")


def render(comparison: Comparison, stale_text: bool = False) -> str:
    """A plain-text report: the verdict, then each differing column; ``stale_text``: the stored
    row is one of ``ResultStore.stale_text_ids`` (said after a failed comparison)."""
    c = comparison
    threads = (f" (rerun with {c.torch_threads} torch thread{'s' if c.torch_threads != 1 else ''}, as the stored run)"
               if c.torch_threads else "")
    data = (f"  the data differs from the stored run's: data digest {c.stored_data} then, {c.rerun_data} now (the "
            "dataset files changed since; the run id names the dataset, not its bytes)") if c.data_changed else None
    if c.identical:
        head = f"run {c.run_id}: reproduced; all {len(c.compared)} outcome columns equal the stored ones{threads}"
        return "\n".join([head, data] if data else [head])
    lines = [f"run {c.run_id}: NOT reproduced; {len(c.differences)} of {len(c.compared)} outcome columns differ{threads}"]
    if data:
        lines.append(data)
    if c.cpu_changed:
        lines.append(f"  the stored run finished on CPU '{c.stored_cpu}', this rerun on '{c.rerun_cpu}': CPU families have "
                     "other floating-point kernels, so last digits may differ (--atol relaxes the comparison)")
    if stale_text:
        lines.append(STALE_TEXT_NOTE)
    lines += [f"  {d.column}: stored {d.stored!r}, rerun {d.rerun!r}" for d in c.differences]
    if c.only_stored:
        lines.append(f"  only in the stored row: {', '.join(c.only_stored)}")
    if c.only_rerun:
        lines.append(f"  only in the rerun: {', '.join(c.only_rerun)}")
    return "\n".join(lines)
