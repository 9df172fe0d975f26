"""``bench leaderboard``: regenerate leaderboards/*.md (+ CSV) and the index from the result store."""
from __future__ import annotations

from benchmark.commands.grid import DEFAULT_STORE


def register(sub) -> None:
    p = sub.add_parser("leaderboard", help="regenerate leaderboards/*.md and *.csv from the result store",
                       description="Deterministic: the same store gives the same bytes (no timestamps).")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"result store directory (default: {DEFAULT_STORE})")
    p.add_argument("--out", default="leaderboards", help="output directory (default: leaderboards)")
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    from benchmark.cli import UserError
    from benchmark.leaderboard import write_leaderboards

    if not Path(args.store).is_dir():
        raise UserError(f"--store {args.store}: no such directory; run `bench grid ...` first or pass --store DIR")
    for path in write_leaderboards(args.store, args.out):
        print(path)
    return 0
