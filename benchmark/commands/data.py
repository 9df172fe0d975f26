"""``bench data list | fetch NAME | stats [NAME ...]``: the dataset catalog from the command line."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.config import compose, data_root


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="datasets: list the catalog, fetch files, print statistics")
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    ls = sub.add_parser("list", help="catalog entries and whether their files are present")
    ls.add_argument("--root", help="data root (default: $BENCH_DATA, else ~/.cache/dsr-bench/data)")
    ls.set_defaults(func=cmd_list)

    fetch = sub.add_parser("fetch", help="download a dataset's public raw files into the data root")
    fetch.add_argument("name")
    fetch.add_argument("--root", help="data root (default: $BENCH_DATA, else ~/.cache/dsr-bench/data)")
    fetch.add_argument("--force", action="store_true", help="download even if files are present")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=cmd_fetch)

    stats = sub.add_parser("stats", help="statistics beside the published numbers (Markdown)")
    stats.add_argument("names", nargs="*", help="datasets (default: every entry whose files are present)")
    stats.add_argument("--root", help="data root (default: $BENCH_DATA, else ~/.cache/dsr-bench/data)")
    stats.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, e.g. --set dataset.k_core=5 (repeatable)")
    stats.add_argument("--check", action="store_true", help="exit with status 1 if a dataset does not match")
    stats.set_defaults(func=cmd_stats)


def _root(args: argparse.Namespace) -> Path:
    return data_root(args.root)


def _has_files(entry, root: Path) -> bool:
    locate = getattr(entry, "locate", None)
    located = locate(root) if locate else None
    return located is not None and located.kind != "generated"


def _entry(name: str):
    from benchmark.data.catalog import get_entry

    return get_entry(name)


def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.registry import DATASETS

    root = _root(args)
    print(f"data root: {root}\n")
    print("| dataset | files | published (users / items / interactions) | description |")
    print("|---|---|---|---|")
    for name in DATASETS.names():
        entry = DATASETS.get(name)
        locate = getattr(entry, "locate", None)
        located = locate(root) if locate else None
        if located is None:
            files = "missing" + (f" (bench data fetch {name})" if getattr(entry, "fetch_plan", ()) else "")
        elif located.kind == "generated":
            files = "generated"
        else:
            files = f"{located.kind}: " + ", ".join(p.name for p in located.paths if p is not None)
        reference = getattr(entry, "reference", None)
        print(f"| {name} | {files} | {reference if reference else '—'} | {getattr(entry, 'description', '')} |")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from benchmark.cli import UserError
    from benchmark.data.fetch import FetchError, fetch_files

    entry = _entry(args.name)
    plan = getattr(entry, "fetch_plan", None)
    if not plan:
        raise UserError(f"dataset '{args.name}' has nothing to download (generated or no public source)")
    root = _root(args)
    located = entry.locate(root)
    if located is not None and not args.force:
        print(f"{args.name}: already present ({located.kind}: {', '.join(str(p) for p in located.paths if p)}); "
              "use --force to download again")
        return 0
    try:
        written = fetch_files(entry.name, plan, root, progress=not args.no_progress)
    except FetchError as exc:
        raise UserError(f"{exc}\n\n{entry.missing_message(root, suggest_fetch=False)}") from exc
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from benchmark.data.stats import compute_stats, stats_table
    from benchmark.registry import DATASETS

    root = _root(args)
    names = args.names
    if not names:
        names = [n for n in DATASETS.names() if _has_files(DATASETS.get(n), root)]
        if not names:
            print(f"no dataset files under {root}; see 'bench data list'")
            return 1
    rows, sources = [], []
    for name in names:
        entry = _entry(name)
        cfg = compose(dataset=name, overrides=[*args.overrides, f"dataset.root={root}"]).dataset
        data = entry.load(cfg)
        stats = compute_stats(name, data)
        reference_for = getattr(entry, "reference_for", None)
        rows.append((stats, reference_for(stats.source_kind) if reference_for else None))
        sources.append(f"{name}: {data.meta.get('source', stats.source_kind)}; k_core {cfg.k_core}, "
                       f"duplicates {cfg.duplicates}, text {list(cfg.text_columns)}")
    print(stats_table(rows))
    print()
    for line in sources:
        print(f"- {line}")
    mismatch = any(ref is not None and not ref.matches(s.users, s.items, s.interactions) for s, ref in rows)
    return 1 if (args.check and mismatch) else 0
