"""The result store: one Parquet file per run, ``<store_dir>/<run_id>.parquet``.

Each file holds one row (see :func:`result_row` / :func:`failure_row`): run id, grid, grid
file, command, status (``ok`` | ``failed`` | ``not_applicable``), error text, every config
field as a flattened dotted column (``dataset.name``, ``dataset.noise.alpha``,
``denoiser.ratio``, ``seed`` ...), the derived ``noise_setting`` label, metrics (``valid_*``,
``test_*``, ``test_optimistic_*``), noise detection (``det_*``, per popularity bucket
``det_removal_ratio_b<k>``), timings (``*_seconds``), mode, epochs, library versions
(``version.<package>``), git commit, and the full config / protocol / detection as JSON
strings (``*_json``).

Writes are atomic: the row goes to a hidden temporary file in the same directory, is
fsync'ed, then renamed over ``<run_id>.parquet``; readers only look at ``*.parquet``, so they
never see a partial file, and a successful run replaces an earlier failure record of the same
run id. Reading concatenates every file with polars ``scan_parquet`` (diagonal, relaxed
types: files written by different versions may have different columns).
"""
from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any

import polars as pl

from benchmark.config import NotApplicableError
from benchmark.grid import noise_label

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_NOT_APPLICABLE = "not_applicable"  # the combination cannot run by design (NotApplicableError)


def monitor_column(monitor: str) -> str:
    """Store column of a ``train.monitor`` value: ``valid/ndcg@10`` -> ``valid_ndcg@10``."""
    stage, _, metric = monitor.partition("/")
    return f"{stage}_{metric}"


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> flat dict with dotted keys. Lists and empty dicts become JSON strings so
    every column is a scalar."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple, dict)):
            out[name] = json.dumps(value, sort_keys=True)
        else:
            out[name] = value
    return out


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=float)


def _provenance(grid: str | None, grid_file: str | None, command: str | None) -> dict[str, Any]:
    return {"grid": grid or "adhoc", "grid_file": grid_file, "command": command}


def _config_columns(config: dict) -> dict[str, Any]:
    row = flatten(config)
    row["noise_setting"] = noise_label(config.get("dataset", {}).get("noise", {}) or {})
    row["config_json"] = _json(config)
    return row


def detection_columns(detection: dict | None) -> dict[str, Any]:
    """``det_<key>`` for every scalar of a detection report; per bucket
    ``det_removal_ratio_b<k>`` and ``det_noise_share_b<k>``; STEAM insertion recall."""
    if not detection:
        return {}
    out: dict[str, Any] = {}
    for key, value in detection.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[f"det_{key}"] = value
    for bucket in detection.get("buckets", []) or []:
        k = bucket["bucket"]
        out[f"det_removal_ratio_b{k}"] = bucket.get("removal_ratio")
        if "noise_share" in bucket:
            out[f"det_noise_share_b{k}"] = bucket["noise_share"]
    insertion = detection.get("insertion")
    if isinstance(insertion, dict):
        out["det_insertion_recall"] = insertion.get("recall")
        out["det_insertion_precision"] = insertion.get("precision")
    return out


def result_row(result: dict, grid: str | None = None, grid_file: str | None = None,
               command: str | None = None) -> dict[str, Any]:
    """The store row of a finished run; ``result`` is ``RunResult.to_json()``."""
    row: dict[str, Any] = {"run_id": result["run_id"], "status": STATUS_OK, "error": None, "error_kind": None}
    row.update(_provenance(grid, grid_file, command))
    row.update(_config_columns(result["config"]))
    row["mode"] = result.get("mode")
    row["epochs"] = result.get("epochs")
    row["best_epoch"] = result.get("best_epoch")
    # the native phase's stopping point: a behaviour change that moves it is visible in the row
    native = result.get("native") or {}
    for key in ("epochs", "best_epoch"):
        if native.get(key) is not None:
            row[f"native_{key}"] = int(native[key])
    for prefix in ("valid", "test", "test_optimistic"):
        for key, value in sorted((result.get(prefix) or {}).items()):
            row[f"{prefix}_{key}"] = float(value)
    row.update(detection_columns(result.get("detection")))
    for key, value in sorted((result.get("timings") or {}).items()):
        row[key] = float(value)
    for key, value in sorted((result.get("versions") or {}).items()):
        row[f"version.{key}"] = value
    row["git_commit"] = result.get("git_commit")
    row["cpu"] = result.get("cpu")
    if len(result.get("attempt_commits") or []) > 1:  # resumed: the earlier attempts' commits count too
        row["attempt_commits"] = _json(result["attempt_commits"])
    row["text_encoders"] = _json(result.get("text_encoders", []))
    row["protocol_json"] = _json(result.get("protocol"))
    row["data_digest"] = (result.get("protocol") or {}).get("data_digest")
    row["detection_json"] = _json(result.get("detection"))
    row["denoiser_report_json"] = _json(result.get("denoiser_report"))
    return row


def describe_exception(exc: BaseException) -> tuple[str, str, str]:
    """(kind, one-line text, last frames of the traceback) of an exception."""
    kind = type(exc).__name__
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-8:])
    return kind, f"{kind}: {exc}", tb


def failure_status(error_kind: str) -> str:
    """``not_applicable`` for a run stopped by :class:`~benchmark.config.NotApplicableError`
    (matched by name: the outcome may come from another process), else ``failed``."""
    return STATUS_NOT_APPLICABLE if error_kind == NotApplicableError.__name__ else STATUS_FAILED


def failure_row(run_id: str, config: dict, error: str, error_kind: str = "Error", error_traceback: str | None = None,
                grid: str | None = None, grid_file: str | None = None, command: str | None = None,
                data_digest: str | None = None) -> dict[str, Any]:
    """The store row of a run that stopped with an error: config columns, the error text and kind,
    and status ``not_applicable`` or ``failed`` (:func:`failure_status`); ``data_digest``: of the
    data the run had loaded (:mod:`benchmark.data.digest`), when it got that far."""
    from benchmark.provenance import git_commit

    row: dict[str, Any] = {"run_id": run_id, "status": failure_status(error_kind), "error": error,
                           "error_kind": error_kind, "error_traceback": error_traceback}
    row.update(_provenance(grid, grid_file, command))
    row.update(_config_columns(config))
    row["git_commit"] = git_commit()
    if data_digest:
        row["data_digest"] = data_digest
    return row


def text_vector_denoisers() -> set[str]:
    """Registered denoisers that use text vectors (``text_embeddings`` in their ``requires``)."""
    import denoisers  # noqa: F401 - registers the built-in denoisers
    from benchmark.registry import DENOISERS

    return {name for name in DENOISERS.names() if "text_embeddings" in DENOISERS.get(name).requires}


def is_stale_text_row(row: dict, text_denoisers: set[str]) -> bool:
    """One stored row (dict) by the rule of :func:`_stale_text_filter`: a finished run of a
    text-vector denoiser (``text_denoisers``) without ``text_encoders``."""
    return (row.get("status", STATUS_OK) == STATUS_OK and row.get("denoiser.name") in text_denoisers
            and row.get("text_encoders") is None)


def _stale_text_filter(lf: pl.LazyFrame) -> pl.LazyFrame:
    columns = lf.collect_schema().names()
    if "denoiser.name" not in columns:
        return lf.filter(pl.lit(False))
    stale = (pl.col("status") == STATUS_OK) & pl.col("denoiser.name").is_in(sorted(text_vector_denoisers()))
    if "text_encoders" in columns:
        stale &= pl.col("text_encoders").is_null()
    return lf.filter(stale)


# per-process caches of what was read from store directories: file -> ((inode, mtime_ns, size), its row)
# and directory -> (signature of its files, every row)
_FILE_ROWS: dict[Path, tuple[tuple[int, int, int], pl.DataFrame]] = {}
_FRAMES: dict[Path, tuple[tuple, pl.DataFrame]] = {}


class ResultStore:
    """A directory of one-row Parquet files keyed by run id."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, run_id: str) -> Path:
        return self.directory / f"{run_id}.parquet"

    def files(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(p for p in self.directory.glob("*.parquet") if not p.name.startswith("."))

    def write(self, row: dict[str, Any]) -> Path:
        """Atomically write (or replace) the file of ``row['run_id']``."""
        rid = row.get("run_id")
        if not rid or not isinstance(rid, str):
            raise ValueError(f"store row needs a string run_id, got {rid!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path(rid)
        tmp = self.directory / f".{rid}.parquet.tmp-{os.getpid()}"
        try:
            # no column statistics: a one-row file gains nothing from them, and they are a third of
            # its size (the store is committed beside the leaderboards made from it)
            pl.DataFrame([row], infer_schema_length=None).write_parquet(tmp, statistics=False)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        return final

    def scan(self) -> pl.LazyFrame:
        """Every row of the store (any status) as one LazyFrame; empty store -> no rows."""
        return self._rows().lazy()

    def _rows(self) -> pl.DataFrame:
        """Every row, read through a per-process cache: a file is read again only when its inode,
        modification time or size changed (``write`` replaces a file by a new inode), and the
        whole frame rebuilt only when a file did (a grid's dry run asks the store several
        questions; each used to read every file)."""
        empty = pl.DataFrame(schema={"run_id": pl.String, "status": pl.String})
        root = self.directory.resolve() if self.directory.exists() else self.directory
        keys = []
        for f in self.files():
            try:
                st = f.stat()
            except FileNotFoundError:  # removed since the listing
                continue
            keys.append((root / f.name, (st.st_ino, st.st_mtime_ns, st.st_size)))
        signature = tuple(keys)
        cached = _FRAMES.get(root)
        if cached is not None and cached[0] == signature:
            return cached[1]
        frames = []
        for path, stamp in keys:
            hit = _FILE_ROWS.get(path)
            if hit is None or hit[0] != stamp:
                try:
                    hit = (stamp, pl.read_parquet(path))
                except FileNotFoundError:  # removed since the listing: the next call lists again
                    continue
                _FILE_ROWS[path] = hit
            frames.append(hit[1])
        if not frames:
            return empty
        rows = _fill_keys_added_later(pl.concat(frames, how="diagonal_relaxed").lazy()).collect()
        _FRAMES[root] = (signature, rows)
        return rows

    def frame(self, status: str | None = None) -> pl.DataFrame:
        lf = self.scan()
        if status is not None:
            lf = lf.filter(pl.col("status") == status)
        return lf.collect()

    def statuses(self) -> dict[str, str]:
        """run id -> status of every stored run."""
        df = self.scan().select("run_id", "status").collect()
        return dict(zip(df["run_id"].to_list(), df["status"].to_list()))

    def not_applicable_digests(self) -> dict[str, str]:
        """run id -> data digest of every not-applicable row that records the data it was made on."""
        lf = self.scan()
        if "data_digest" not in lf.collect_schema().names():
            return {}
        df = lf.filter((pl.col("status") == STATUS_NOT_APPLICABLE) & pl.col("data_digest").is_not_null()) \
            .select("run_id", "data_digest").collect()
        return dict(zip(df["run_id"].to_list(), df["data_digest"].to_list()))

    def status(self, run_id: str) -> str | None:
        """The stored status of one run (``ok`` | ``failed`` | ``not_applicable``), None when it has no file."""
        path = self.path(run_id)
        if not path.exists():
            return None
        return pl.read_parquet(path, columns=["status"])["status"][0]

    def stale_text_ids(self) -> set[str]:
        """Finished runs of a text-vector denoiser stored before rows named their text encoders.

        Their text vectors came from an encoding in batches, where a vector's last bits depended
        on which texts shared its batch, i.e. on what the text cache held when the run began; a
        rerun on another machine uses exact per-text vectors and may differ (IADSR's hard masks
        amplify the difference). ``bench grid --redo-stale-text`` re-runs them."""
        return set(_stale_text_filter(self.scan()).select("run_id").collect()["run_id"].to_list())

    def is_stale_text(self, run_id: str) -> bool:
        """Whether the stored row of ``run_id`` is one of :meth:`stale_text_ids` (reads one file)."""
        path = self.path(run_id)
        return path.exists() and _stale_text_filter(pl.scan_parquet(path)).select("run_id").collect().height > 0

    def done_ids(self) -> set[str]:
        return {rid for rid, status in self.statuses().items() if status == STATUS_OK}

    def failed(self) -> dict[str, str]:
        """run id -> error text of every failure record."""
        lf = self.scan().filter(pl.col("status") == STATUS_FAILED)
        df = lf.select("run_id", pl.col("error") if "error" in lf.collect_schema() else pl.lit(None).alias("error")).collect()
        return dict(zip(df["run_id"].to_list(), df["error"].to_list()))


def _fill_keys_added_later(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Rows stored before a config key existed ran with its default (the key is in
    ``config.OMIT_AT_DEFAULT``, their run ids are unchanged): show that default instead of
    null, so old and new rows of one setting group together."""
    from benchmark.config import added_key_defaults

    columns = lf.collect_schema().names()
    fills = [pl.col(name).fill_null(default) if name in columns else pl.lit(default).alias(name)
             for name, default in added_key_defaults().items()]
    return lf.with_columns(fills) if fills else lf

