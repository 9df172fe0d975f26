"""``bench perf``: speed report (Markdown + JSON, and a scaling plot)."""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("perf", help="measure training/evaluation throughput and denoiser cost ratios")
    p.add_argument("--dataset", default="ml-100k", help="a dataset name, or several comma-separated (one report)")
    p.add_argument("--backbones", default="sasrec,gru4rec,caser,bert4rec")
    p.add_argument("--denoisers", default="", help="comma-separated; each timed beside the plain backbone")
    p.add_argument("--standalone", default="", help="comma-separated standalone models (fmlp, dcrec), each timed beside "
                   "the backbone it is compared with (which --backbones must list)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-batches", type=int, default=None, help="time only this many batches per epoch")
    p.add_argument("--scaling", action="store_true", help="also time synthetic data at 1x, 2x, 4x, 8x users")
    p.add_argument("--scaling-users", type=int, default=500)
    p.add_argument("--out", default=None, help="report path without suffix (default leaderboards/perf)")
    p.add_argument("--recbole", default="", metavar="NAME=N,...",
                   help="RecBole 1.2.1's ML-100K training instances/s measured on this machine (e.g. "
                        "sasrec=1200,gru4rec=8000,caser=2500,bert4rec=900) for the throughput targets; "
                        "default: the performance issue's figures for SASRec and GRU4Rec")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    p.set_defaults(func=main)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(args) -> int:
    from benchmark.cli import UserError
    from benchmark.config import compose
    from benchmark.data.build import build_split_data
    from benchmark.perf import check_standalone, measure, parse_recbole, plot_scaling, scaling, write_report

    try:
        recbole = parse_recbole(args.recbole) if args.recbole else None
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    backbones, standalone = _names(args.backbones), _names(args.standalone)
    try:
        check_standalone(backbones, standalone)  # before any dataset loads
    except ValueError as exc:
        raise UserError(f"--standalone: {exc}") from exc
    reports = []
    for dataset in _names(args.dataset):
        cfg = compose(dataset=dataset, overrides=list(args.overrides) + ["logging.wandb=disabled"])
        start = time.perf_counter()
        split = build_split_data(cfg.dataset)
        load_seconds = time.perf_counter() - start
        report = measure(cfg, split, backbones, _names(args.denoisers), args.reps, args.max_batches, standalone)
        report["load_seconds"] = load_seconds
        reports.append(report)
    out = Path(args.out or "leaderboards/perf")
    if args.scaling:
        reports[-1]["scaling"] = scaling(backbones, base_users=args.scaling_users, max_batches=args.max_batches)
        plot_scaling(reports[-1]["scaling"], out.with_name(out.name + "-scaling.png"))
    command = "bench perf " + " ".join(shlex.quote(a) for a in (sys.argv[2:] if sys.argv[1:2] == ["perf"] else sys.argv[1:]))
    source = "measured on this machine and given as `--recbole` (see the command below)" if recbole else None
    md, js = write_report(reports, out, command, recbole, source)
    print(md.read_text())
    print(f"written: {md}, {js}")
    return 0
