"""``bench list backbones|denoisers|datasets|encoders|protocols``."""
from __future__ import annotations

from benchmark import registry

_KINDS = {"backbones": registry.BACKBONES, "denoisers": registry.DENOISERS, "datasets": registry.DATASETS,
          "encoders": registry.TEXT_ENCODERS}


def register(sub) -> None:
    p = sub.add_parser("list", help="list registered backbones, denoisers, datasets, text encoders or protocol presets")
    p.add_argument("kind", choices=sorted([*_KINDS, "protocols"]))
    p.set_defaults(func=main)


def _print_protocols() -> None:
    from benchmark.protocols import load_protocol, protocol_names

    for name in protocol_names():
        preset = load_protocol(name)
        print(f"{name:14s} {preset.description}")
        for line in preset.differences or ["(the reference: no differences)"]:
            print(f"{'':14s}   - {line}")


def main(args) -> int:
    if args.kind == "protocols":
        _print_protocols()
        return 0
    reg = _KINDS[args.kind]
    for name in reg.names():
        obj = reg.get(name)
        doc = (obj.__doc__ or "").strip().splitlines()
        needs = sorted(getattr(obj, "requires", ()) or ())
        extra = f"; level {obj.level}" if args.kind == "denoisers" else ""
        extra += f"; needs {', '.join(needs)}" if needs else ""
        print(f"{name:14s} {doc[0] if doc else ''}  [{reg.origin(name)}{extra}]")
    return 0
