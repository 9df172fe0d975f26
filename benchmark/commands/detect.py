"""``bench detect``: noise detection of methods that decide without a trained recommender.

    bench detect --denoisers semantic-outlier,said,said-hard --dataset beauty \\
        --noise-seeds 0,1,2 dataset.noise.kind=replace dataset.noise.alpha=0.1 \\
        --out leaderboards/detection-beauty

Prints (and with ``--out`` writes as Markdown + JSON) precision / recall / F1 against the
injected labels, the random remover's F1 at the same flag rate, ROC-AUC and the removal ratio
per popularity bucket, mean ± std over the noise draws. See ``benchmark/detection_bench.py``.
"""
from __future__ import annotations

import shlex
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("detect", help="noise detection of data-level / text-weighting denoisers, no training")
    p.add_argument("--denoisers", required=True, help="comma-separated, e.g. semantic-outlier,said,said-hard")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--noise-seeds", default="",
                   help="comma-separated dataset.noise.seed values, one noise draw each (default: the config's, "
                        "the draw every run of that config sees)")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json (path without suffix)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every config, e.g. dataset.noise.alpha=0.2")
    p.set_defaults(func=main)


def _ints(text: str, option: str) -> list[int]:
    from benchmark.cli import UserError

    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise UserError(f"{option} {text!r}: expected comma-separated integers") from exc


def main(args) -> int:
    from benchmark.cli import UserError
    from benchmark.config import compose, to_dict
    from benchmark.detection_bench import NeedsTraining, detect, render, write
    from benchmark.grid import noise_label

    names = [n.strip() for n in args.denoisers.split(",") if n.strip()]
    base = compose(dataset=args.dataset, overrides=list(args.overrides)).dataset.noise
    seeds = _ints(args.noise_seeds, "--noise-seeds") or [int(base.seed)]
    if not names:
        raise UserError("bench detect: give --denoisers NAME[,NAME...]")
    try:
        results = detect(args.dataset, names, seeds, list(args.overrides))
    except NeedsTraining as exc:
        raise UserError(str(exc)) from exc
    noise = noise_label({k: v for k, v in to_dict(base).items() if k != "seed"})
    command = shlex.join(["bench", "detect", "--denoisers", ",".join(names), "--dataset", args.dataset,
                          "--noise-seeds", ",".join(map(str, seeds)), *(["--out", args.out] if args.out else []),
                          *args.overrides])
    if args.out:
        md, js = write(results, Path(args.out), args.dataset, noise, command)
        print(md.read_text())
        print(f"written: {md}, {js}")
    else:
        from benchmark.provenance import git_commit

        print(render(results, args.dataset, noise, command, git_commit()))
    return 0
