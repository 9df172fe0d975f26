"""Name -> class registries for backbones, denoisers, datasets and text encoders.

Built-in classes register themselves with a decorator when their package is imported;
third-party packages add classes through Python entry points in the groups
``dsr_bench.backbones``, ``dsr_bench.denoisers``, ``dsr_bench.datasets`` and
``dsr_bench.text_encoders``, so adding a method never means editing the harness.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """A typed name -> object map with lazy discovery of built-ins and entry points."""

    def __init__(self, kind: str, builtin_package: str | None, entry_point_group: str) -> None:
        self.kind = kind
        self.builtin_package = builtin_package
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, origin=getattr(obj, "__module__", "?"))
            return obj

        return decorator

    def add(self, name: str, obj: T, origin: str = "?") -> None:
        key = name.lower()
        if key in self._items and self._items[key] is not obj:
            raise ValueError(f"{self.kind} '{name}' is registered twice ({self._origin[key]} and {origin})")
        self._items[key] = obj
        self._origin[key] = origin
        if hasattr(obj, "registry_name"):
            return
        try:
            setattr(obj, "registry_name", key)
        except (AttributeError, TypeError):
            pass

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self.builtin_package:
            importlib.import_module(self.builtin_package)
        for ep in entry_points(group=self.entry_point_group):
            obj = ep.load()
            if ep.name.lower() not in self._items:
                self.add(ep.name, obj, origin=f"entry point {ep.value}")

    def get(self, name: str) -> T:
        self.discover()
        key = name.lower()
        if key not in self._items:
            raise UnknownNameError(self.unknown_message(name))
        return self._items[key]

    def unknown_message(self, name: str, more: list[str] | None = None) -> str:
        """``unknown <kind> 'name'; did you mean ...? available: ...`` (``more``: other accepted names)."""
        from benchmark.config import closest  # imported late: config is imported by plugin modules

        names = sorted({*self.names(), *(more or [])})
        guess = closest(name.lower(), names)
        hint = f"; did you mean '{guess}'?" if guess else "."
        return (f"unknown {self.kind} '{name}'{hint} Available: {', '.join(names)}. "
                f"Third-party {self.kind}s register through the entry point group '{self.entry_point_group}'.")

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._items)

    def origin(self, name: str) -> str:
        self.discover()
        return self._origin[name.lower()]


BACKBONES: Registry = Registry("backbone", "models", "dsr_bench.backbones")
DENOISERS: Registry = Registry("denoiser", "denoisers", "dsr_bench.denoisers")
DATASETS: Registry = Registry("dataset", "benchmark.data.catalog", "dsr_bench.datasets")
TEXT_ENCODERS: Registry = Registry("text encoder", "benchmark.text", "dsr_bench.text_encoders")
