"""``bench denoise``: run a denoiser once and export its cleaned training data.

    bench denoise --denoiser iadsr --backbone gru4rec --dataset beauty
    bench denoise --denoiser steam --dataset ml-100k dataset.noise.kind=replace

Runs the configuration exactly like ``bench run`` (``benchmark.run.execute``; a finished run
is reused), then prints the run id, the RecBole atomic file of the rewritten training
sequences (``runs/<id>/denoised/<dataset>.inter``), the per-position mask file
(``masks.tsv``: user, position, item, keep, replacement, score) and the command that trains
another backbone on the exported data (``bench run --data denoised:<id>``).
Works for data-level denoisers and for joint methods that export (IADSR: exported mask 0 =
removed; see ``bench list denoisers``).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from benchmark.commands.run import add_config_arguments, config_from_args, execute_reporting_stops


def register(sub) -> None:
    p = sub.add_parser("denoise", help="run a denoiser and export its denoised training data (RecBole .inter + masks)")
    add_config_arguments(p)
    p.add_argument("--force", action="store_true", help="re-run even if runs/<run_id>/result.json exists")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--next-backbone", default="sasrec", help="backbone named in the printed follow-up command")
    p.set_defaults(func=main)


def follow_up_command(args, run_id: str, runs_dir: Path, dataset: str) -> str:
    """``bench run`` on the exported data, with the same dataset options (noise, split, ...)."""
    parts = ["bench", "run", "--data", f"denoised:{run_id}", "--backbone", args.next_backbone, "--dataset", dataset]
    parts += [o for o in args.overrides if o.startswith("dataset.")]
    if args.runs_dir:
        parts += ["--runs-dir", str(runs_dir)]
    return shlex.join(parts)


def main(args) -> int:
    from benchmark.cli import UserError
    from benchmark.config import run_id
    from benchmark.registry import DENOISERS
    from denoisers.base import Denoiser

    cfg = config_from_args(args)
    name = cfg.denoiser.name
    if name == "none":
        raise UserError("bench denoise: give --denoiser NAME (bench list denoisers)")
    cls = DENOISERS.get(name)
    if cls.level != "data" and cls.export is Denoiser.export:
        raise UserError(f"denoiser '{name}' does not export denoised sequences (level '{cls.level}', no export())")
    runs_dir = Path(args.runs_dir or cfg.logging.runs_dir)
    rid = run_id(cfg)
    print(f"run {rid}: denoiser={name} backbone={cfg.backbone.name} dataset={cfg.dataset.name} seed={cfg.seed}")
    result = execute_reporting_stops(cfg, runs_dir, force=args.force)
    out = runs_dir / rid / "denoised"
    inter = next(iter(sorted(out.glob("*.inter"))), None)
    if inter is None:
        raise UserError(f"{out}: no exported data was written (mode '{result.mode}')")
    print(f"mode: {result.mode}")
    if result.detection:
        d = result.detection
        keys = [k for k in ("flag_rate", "precision", "recall", "f1", "random_expected_f1") if isinstance(d.get(k), (int, float))]
        print("removed / noise detection: " + ", ".join(f"{k}={d[k]:.4f}" for k in keys))
    print(f"run id:      {rid}")
    print(f"atomic file: {inter}")
    print(f"mask file:   {out / 'masks.tsv'}")
    print(f"next:        {follow_up_command(args, rid, runs_dir, cfg.dataset.name)}")
    return 0
