"""``bench run``: train and evaluate one backbone (+ denoiser) configuration."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmark.config import compose, run_id


def add_config_arguments(p) -> None:
    p.add_argument("--backbone", help="gru4rec | sasrec | caser | bert4rec | fmlp | ... (bench list backbones)")
    p.add_argument("--denoiser", help="none | iadsr | hsd | ... (bench list denoisers)")
    p.add_argument("--dataset", help="ml-100k (default) | beauty | ... (bench data list)")
    p.add_argument("--seed", type=int)
    p.add_argument("--profile", help="a file in configs/profiles/, e.g. quick")
    p.add_argument("--protocol", help="a protocol preset in configs/protocols/: benchmark (default) | iadsr-paper | "
                                      "llm4dsr-paper (bench list protocols)")
    p.add_argument("--config", action="append", default=[], help="extra YAML file(s) merged before overrides")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=0.0005 dataset.max_len=32")


def config_from_args(args):
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if getattr(args, "data", None):
        overrides.append(f"data_source={args.data}")
    return compose(args.backbone, args.denoiser, args.dataset, args.profile, overrides, args.config,
                   protocol=getattr(args, "protocol", None))


def register(sub) -> None:
    p = sub.add_parser("run", help="train and test one configuration; prints HR/NDCG and writes runs/<run_id>/")
    add_config_arguments(p)
    p.add_argument("--data", help="train on exported data: denoised:<run_id>")
    p.add_argument("--force", action="store_true", help="re-run even if runs/<run_id>/result.json exists")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last checkpoint (without it, an unfinished run starts over)")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for this run (default 0: torch's own count, one per core). CPU kernels sum "
                        "in a thread-dependent order, so the last digits of the metrics depend on it; result.json "
                        "records it and `bench reproduce` re-uses it")
    p.set_defaults(func=main)


def execute_reporting_stops(cfg, runs_dir: Path, force: bool = False, resume: bool = False):
    """``benchmark.run.execute`` for a command: Ctrl-C or SIGTERM stops it with a note on what
    was kept and how to continue (then ``KeyboardInterrupt``: exit code 130); a non-finite loss
    becomes :class:`~benchmark.cli.RunFailedError` naming the failure record."""
    from benchmark.cli import RunFailedError
    from benchmark.interrupt import stop_on_signals
    from benchmark.run import FAILURE_FILE, execute
    from models.base import NonFiniteLossError

    rid = run_id(cfg)
    with stop_on_signals() as stop:
        try:
            return execute(cfg, runs_dir=runs_dir, force=force, resume=resume)
        except NonFiniteLossError as exc:
            raise RunFailedError(f"run {rid} failed: {exc}\nfailure record: {runs_dir / rid / FAILURE_FILE}") from exc
        except (KeyboardInterrupt, SystemExit) as exc:  # Lightning turns an interrupt into SystemExit(1)
            if isinstance(exc, SystemExit) and not stop.is_set():
                raise
            print(interrupted_note(runs_dir / rid), file=sys.stderr)
            raise KeyboardInterrupt from None


def interrupted_note(out_dir: Path) -> str:
    """What an interrupted run kept in ``out_dir`` and how to continue it."""
    from benchmark.run import LAST_CHECKPOINT

    kept = sorted(out_dir.glob(f"checkpoints/*/{LAST_CHECKPOINT}"))
    if not kept:
        return (f"run {out_dir.name} interrupted before its first training epoch ended: nothing to resume "
                f"(rerunning starts it over)")
    return (f"run {out_dir.name} interrupted; kept {', '.join(str(p) for p in kept)} (written after the last "
            f"finished epoch). Continue with the same command plus --resume")


def _baseline(cfg, runs_dir: Path):
    """The plain backbone's result with otherwise identical config, if it was run."""
    if cfg.denoiser.name == "none":
        return None
    from benchmark.config import to_dict

    base = to_dict(cfg)
    base["denoiser"] = {"name": "none"}
    plain = compose(base=base)
    path = runs_dir / run_id(plain) / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def main(args) -> int:
    from benchmark.cli import UserError
    from benchmark.report import describe_resumed, metric_table, protocol_lines
    from benchmark.threads import torch_threads

    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: expected >= 0 (0 = torch's own count, one per core)")
    cfg = config_from_args(args)
    runs_dir = Path(args.runs_dir or cfg.logging.runs_dir)
    print(f"run {run_id(cfg)}: backbone={cfg.backbone.name} denoiser={cfg.denoiser.name} "
          f"dataset={cfg.dataset.name} seed={cfg.seed}")
    with torch_threads(args.threads):
        result = execute_reporting_stops(cfg, runs_dir, force=args.force, resume=args.resume)
    ks = list(cfg.eval.ks)
    rows = {"valid (best epoch)": result.valid, "test": result.test}
    base = _baseline(cfg, runs_dir)
    if base is not None:
        rows[f"test, plain {cfg.backbone.name} ({base['run_id']})"] = base["test"]
    print()
    print(metric_table(rows, ks))
    print(f"\nmode: {result.mode}; epochs: {result.epochs} (best {result.best_epoch}); "
          f"seconds/epoch: {result.timings.get('epoch_seconds_mean', 0):.2f}; "
          f"torch threads: {int(result.timings.get('torch_threads', 0))}")
    if result.detection:
        d = result.detection
        keys = [k for k in ("precision", "recall", "f1", "flag_rate", "random_f1") if k in d]
        print("noise detection: " + ", ".join(f"{k}={d[k]:.4f}" for k in keys if isinstance(d[k], (int, float))))
    if result.resumed_from:
        print("resumed: " + describe_resumed(result.resumed_from))
        if len(set(result.attempt_commits)) > 1:
            print("trained by commits (oldest first): " + ", ".join(result.attempt_commits))
    print("protocol:\n" + protocol_lines(result.protocol))
    print(f"\nrun directory: {runs_dir / result.run_id}")
    return 0
