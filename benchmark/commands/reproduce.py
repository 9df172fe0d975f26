"""``bench reproduce``: re-run stored cells from their recorded configs and compare with the store."""
from __future__ import annotations

from benchmark.commands.grid import DEFAULT_STORE


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="re-run stored cells from their recorded configs and compare every "
                                         "outcome column with the store (exit 1 if any differs)",
                       description="Each run trains again in a scratch run directory (the store is not touched) "
                                   "and its validation/test metrics, detection numbers and epochs are compared "
                                   "with the stored row. On a CPU with the same seed they agree exactly.")
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="run ids of finished cells (bench results)")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"result store directory (default: {DEFAULT_STORE})")
    p.add_argument("--runs-dir", default=None,
                   help="where the reruns write their run directories (default: a new temporary directory)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance for floats (default: 0, exact)")
    p.set_defaults(func=main)


def main(args) -> int:
    import tempfile
    from pathlib import Path

    from benchmark.cli import UserError
    from benchmark.reproduce import ReproduceError, config_of, render, rerun_and_compare, stored_row
    from benchmark.store import ResultStore

    store = ResultStore(args.store)
    try:  # check every id before training any
        cells = [(row, config_of(row)) for row in (stored_row(store, rid) for rid in args.run_ids)]
    except ReproduceError as exc:
        raise UserError(str(exc)) from exc
    stale = store.stale_text_ids() & set(args.run_ids)
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="bench-reproduce-"))
    failed = 0
    for row, cfg in cells:
        comparison = rerun_and_compare(row, cfg, runs_dir, atol=args.atol)
        print(render(comparison, stale_text=row["run_id"] in stale), flush=True)
        failed += not comparison.identical
    print(f"{len(args.run_ids) - failed} of {len(args.run_ids)} runs reproduced (run directories under {runs_dir})")
    return 1 if failed else 0
