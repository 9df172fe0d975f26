"""The ``bench`` command. Each sub-command lives in ``benchmark/commands/<name>.py`` and
exposes ``register(subparsers)``; this module only discovers and dispatches them."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from benchmark import commands
from benchmark.config import ConfigError
from benchmark.runlock import RunInProgressError


class UserError(Exception):
    """An error caused by input (files, names, keys); printed without a traceback."""


class RunFailedError(Exception):
    """A run stopped on a failure it recorded (e.g. a non-finite loss); printed without a
    traceback, exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="dsr-bench: denoising sequential recommendation benchmark")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{module.name}").register(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` that also accepts ``key=value`` overrides after options
    (``bench grid g.yaml --only seed=0 train.lr=0.01``): argparse alone stops collecting a
    positional list at the first option. Anything else unrecognised is the usual error."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.parse_args(argv)  # exits with argparse's message naming the bad arguments
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    try:
        result = args.func(args)
    except (UserError, ConfigError, RunInProgressError, FileNotFoundError, KeyError, ValueError) as exc:
        if isinstance(exc, (KeyError, ValueError)) and not getattr(exc, "user_facing", True):
            raise
        print(f"bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RunFailedError as exc:
        print(f"bench {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bench {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    # `python -m benchmark.cli`: dispatch through the importable module so that the UserError
    # raised by commands (benchmark.cli.UserError) is the class caught in main().
    from benchmark.cli import main as _main

    sys.exit(_main())
