"""``bench results``: query the result store (filter, group with mean ± std over seeds, export CSV)."""
from __future__ import annotations

import difflib
import shutil
from pathlib import Path

from benchmark.commands.grid import DEFAULT_STORE

ALIASES = {"dataset": "dataset.name", "backbone": "backbone.name", "denoiser": "denoiser.name",
           "noise": "noise_setting", "noise_kind": "dataset.noise.kind", "alpha": "dataset.noise.alpha"}
DEFAULT_METRICS = ["test_hr@10", "test_ndcg@10"]
DEFAULT_LABELS = ["dataset.name", "noise_setting", "backbone.name", "denoiser.name", "seed"]


def register(sub) -> None:
    p = sub.add_parser("results", help="query the result store: filter, group (mean ± std over seeds), CSV")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"result store directory (default: {DEFAULT_STORE})")
    p.add_argument("--where", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="keep rows whose column equals the value (compared as text), e.g. dataset=ml-100k seed=0; "
                        "repeated --where options add up")
    p.add_argument("--group-by", default=None, help="comma-separated columns, e.g. backbone,denoiser")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric columns")
    p.add_argument("--failed", action="store_true", help="list failure records (run id, labels, error)")
    p.add_argument("--not-applicable", action="store_true",
                   help="list cells recorded as not applicable (run id, labels, reason)")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")
    p.add_argument("--columns", action="store_true", help="list the store's columns and exit")
    p.add_argument("--drop", nargs="+", default=None, metavar="RUN_ID",
                   help="invalidate these runs so that the next `bench grid` reruns them: delete their store "
                        "file, their run directory (a finished run's result.json would be re-imported) and, for "
                        "a transfer run, the shared native phase it made or read (runs/_native)")
    p.add_argument("--runs-dir", default="runs", help="run directories, for --drop (default: runs)")
    p.set_defaults(func=main)


def resolve(name: str, columns: list[str]) -> str:
    """A column name (aliases: dataset, backbone, denoiser, noise, noise_kind, alpha)."""
    from benchmark.cli import UserError

    col = ALIASES.get(name, name)
    if col not in columns:
        close = difflib.get_close_matches(col, columns, n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `bench results --columns`"
        raise UserError(f"unknown column '{name}'{hint}")
    return col


def query(lf, where: list[str], group_by: list[str] | None, metrics: list[str], status: str = "ok"):
    """Filter ``lf`` (a store LazyFrame) and aggregate; returns a polars DataFrame.

    Grouped: one row per group with ``n`` (runs), ``<metric>_mean`` and ``<metric>_std``
    (sample std over the group's runs, i.e. over seeds when the other keys are fixed)."""
    import polars as pl

    from benchmark.cli import UserError

    columns = list(lf.collect_schema().names())
    lf = lf.filter(pl.col("status") == status)
    for cond in where:
        key, sep, value = cond.partition("=")
        if not sep:
            raise UserError(f"--where {cond!r}: expected KEY=VALUE")
        col = resolve(key, columns)
        lf = lf.filter(pl.col(col).cast(pl.String) == value)
    metric_cols = [resolve(m, columns) for m in metrics]
    if group_by:
        keys = [resolve(g, columns) for g in group_by]
        aggs = [pl.len().alias("n")]
        for m in metric_cols:
            aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std(ddof=1).alias(f"{m}_std")]
        return lf.group_by(keys).agg(aggs).sort(keys).collect()
    labels = [c for c in DEFAULT_LABELS if c in columns]
    return lf.select(["run_id", *labels, *metric_cols]).sort(["run_id"]).collect()


def drop_runs(run_ids: list[str], store, runs_dir: Path) -> list[str]:
    """Delete each run's store file and run directory; returns what was deleted.

    Checks every id first and deletes nothing if one is unknown (in neither place) or is
    running right now (another process holds its run directory's lock)."""
    from benchmark.cli import UserError
    from benchmark.runlock import lock_holder

    for rid in run_ids:
        if not (store.path(rid).exists() or (runs_dir / rid).is_dir()):
            raise UserError(f"--drop {rid}: no such run (neither {store.path(rid)} nor {runs_dir / rid} exists)")
        holder = lock_holder(runs_dir / rid)
        if holder is not None:
            raise UserError(f"--drop {rid}: the run is executing in process {holder.get('pid', '?')} on "
                            f"{holder.get('host', '?')}; stop it first (nothing was deleted)")
    deleted = [str(path) for path in _drop_native_phases(run_ids, store, runs_dir)]
    for rid in run_ids:
        if store.path(rid).exists():
            store.path(rid).unlink()
            deleted.append(str(store.path(rid)))
        if (runs_dir / rid).is_dir():
            shutil.rmtree(runs_dir / rid)
            deleted.append(str(runs_dir / rid))
    return deleted


def _drop_native_phases(run_ids: list[str], store, runs_dir: Path) -> list[Path]:
    """Delete the shared native phases (:mod:`benchmark.native_cache`) of the transfer runs
    among ``run_ids``: a run is dropped because its numbers are in doubt, and the phase it made
    or read would otherwise be read again by its rerun."""
    import json

    import polars as pl

    from benchmark.native_cache import CACHE_DIR, native_key, native_of_mode

    rows = [row for rid in run_ids if store.path(rid).exists() for row in pl.read_parquet(store.path(rid)).to_dicts()]
    out = []
    for row in rows:
        native = native_of_mode(row.get("mode"))
        if native is None or not row.get("config_json"):
            continue
        phase = runs_dir / CACHE_DIR / native_key(json.loads(row["config_json"]), native)
        if phase.is_dir():
            shutil.rmtree(phase)
            out.append(phase)
    return out


def main(args) -> int:
    import polars as pl

    from benchmark.cli import UserError
    from benchmark.store import STATUS_FAILED, STATUS_NOT_APPLICABLE, ResultStore

    store = ResultStore(args.store)
    if args.failed and args.not_applicable:
        raise UserError("--failed and --not-applicable: choose one")
    if args.drop:
        for path in drop_runs(args.drop, store, Path(args.runs_dir)):
            print(f"deleted {path}")
        return 0
    if not store.files():
        raise UserError(f"--store {args.store}: no results (*.parquet) there")
    lf = store.scan()
    columns = list(lf.collect_schema().names())
    if args.columns:
        print("\n".join(columns))
        return 0
    if args.failed or args.not_applicable:
        status = STATUS_FAILED if args.failed else STATUS_NOT_APPLICABLE
        df = query(lf, args.where, None, [], status=status)
        errors = lf.filter(pl.col("status") == status).select("run_id", "error").collect()
        df = df.join(errors, on="run_id", how="left")
    else:
        metrics = [m for m in args.metrics.split(",") if m]
        group = [g for g in args.group_by.split(",") if g] if args.group_by else None
        df = query(lf, args.where, group, metrics)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=120, tbl_width_chars=240, float_precision=4):
        print(df)
    if args.csv:
        df.write_csv(args.csv, float_precision=6)
        print(f"wrote {args.csv}")
    return 0
