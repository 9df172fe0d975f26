"""``bench list backbones|denoisers|datasets|encoders``."""
from __future__ import annotations

from benchmark import registry

_KINDS = {"backbones": registry.BACKBONES, "denoisers": registry.DENOISERS, "datasets": registry.DATASETS,
          "encoders": registry.TEXT_ENCODERS}


def register(sub) -> None:
    p = sub.add_parser("list", help="list registered backbones, denoisers, datasets or text encoders")
    p.add_argument("kind", choices=sorted(_KINDS))
    p.set_defaults(func=main)


def main(args) -> int:
    reg = _KINDS[args.kind]
    for name in reg.names():
        obj = reg.get(name)
        doc = (obj.__doc__ or "").strip().splitlines()
        needs = sorted(getattr(obj, "requires", ()) or ())
        extra = f"; level {obj.level}" if args.kind == "denoisers" else ""
        extra += f"; needs {', '.join(needs)}" if needs else ""
        print(f"{name:14s} {doc[0] if doc else ''}  [{reg.origin(name)}{extra}]")
    return 0
