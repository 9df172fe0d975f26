"""The dataset catalog: one entry per dataset in ``benchmark.registry.DATASETS``.

An entry says where its files come from, which reader reads them, the published statistics
(protocol.md §1) and the papers' defaults (mirrored in ``configs/datasets/<name>.yaml``).
Files live in ``<data root>/<name>/`` (``benchmark.config.data_root``). Search order:

1. RecBole atomic files ``<name>.inter`` (+ ``<name>.item`` for text; ``.gz`` accepted);
2. raw files from the original source (Amazon review + metadata JSON, MovieLens ``u.data``/``u.item``);
3. for ``toy``/``movie``: LLM4DSR-style sliding-window CSVs (``train.csv``, ``valid.csv``, ``test.csv``).

Raw Amazon files for the LLM4DSR datasets (game, toy, movie) are processed as LLM4DSR did
(llm4dsr.md §1) by the entry's :class:`Recipe` before the usual preprocessing. ``ml-100k`` is
fetched automatically when missing; other missing datasets raise :class:`DatasetMissingError`
saying which files to get and how. Use :func:`load_interactions` to get preprocessed data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import logging
import time

import numpy as np
import polars as pl

from benchmark.config import data_root
from benchmark.data import fetch as fetching
from benchmark.integrity import IntegrityError
from benchmark.data import readers
from benchmark.data.preprocess import factorize, kcore_mask, preprocess
from benchmark.data.raw import Interactions, RawData
from benchmark.registry import DATASETS

log = logging.getLogger(__name__)
SNAP_2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
AMAZON_2014_PAGE = "https://jmcauley.ucsd.edu/data/amazon/index_2014.html"


class DatasetMissingError(FileNotFoundError):
    """No usable files for a dataset; the message names the files and how to get them."""


class DatasetChangedError(IntegrityError):
    """A fetched dataset file no longer matches the checksum recorded when it was fetched."""


@dataclass(frozen=True)
class Reference:
    """Published statistics to compare against."""

    users: int
    items: int
    interactions: int
    label: str

    def matches(self, users: int, items: int, interactions: int) -> bool:
        return (users, items, interactions) == (self.users, self.items, self.interactions)

    def __str__(self) -> str:
        return f"{self.users} / {self.items} / {self.interactions}"


@dataclass(frozen=True)
class Recipe:
    """How the reference built a dataset from raw Amazon files before the common preprocessing
    (LLM4DSR, llm4dsr.md §1): drop items whose title (trailing " VHS" removed, spaces stripped)
    has ≤ 1 character, optionally keep a uniform sample of ``item_sample`` items, then k-core."""

    require_title: bool = False
    item_sample: int = 0
    sample_seed: int = 42
    k_core: int = 0

    def apply(self, raw: RawData) -> RawData:
        inter, items = raw.inter, raw.items
        notes = []
        if self.require_title:
            if items is None or "title" not in items.columns:
                raise DatasetMissingError(f"{raw.source}: titles are required (LLM4DSR keeps titled items only); "
                                          "the metadata file is missing")
            title = pl.col("title").str.strip_suffix(" VHS").str.strip_chars(" ")
            items = items.with_columns(title)
            titled = items.filter(pl.col("title").str.len_chars() > 1)["item_id"]
            inter = inter.filter(pl.col("item_id").is_in(titled.implode()))
            notes.append("titled items only")
        if self.item_sample:
            pool = inter["item_id"].unique(maintain_order=True).to_numpy()
            rng = np.random.default_rng(self.sample_seed)
            chosen = rng.choice(pool, size=min(self.item_sample, len(pool)), replace=False)
            inter = inter.filter(pl.col("item_id").is_in(pl.Series(chosen.tolist(), dtype=pl.Utf8).implode()))
            notes.append(f"{self.item_sample} sampled items (seed {self.sample_seed}; not the reference's draw)")
        if self.k_core:
            users, _ = factorize(inter["user_id"])
            item_codes, _ = factorize(inter["item_id"])
            inter = inter.filter(pl.Series(kcore_mask(users, item_codes, self.k_core)))
            notes.append(f"{self.k_core}-core")
        if not notes:
            return raw
        if inter.height == 0:
            raise ValueError(f"{raw.source}: the dataset's recipe ({', '.join(notes)}) leaves none of its "
                             f"{raw.inter.height} interactions; these files are too small for it or lack item titles")
        return RawData(inter=inter, items=items, source=f"{raw.source} [recipe: {', '.join(notes)}]")


@dataclass(frozen=True)
class RawSource:
    """One set of raw files in ``<root>/<name>/``. ``required``/``optional`` list file slots; each
    slot is a tuple of accepted names (the first present wins)."""

    kind: str  # amazon | movielens | llm4dsr_windows
    description: str
    required: tuple[tuple[str, ...], ...]
    optional: tuple[tuple[str, ...], ...] = ()
    urls: tuple[str, ...] = ()

    def locate(self, folder: Path) -> list[Path | None] | None:
        def first(slot):
            return next((folder / n for n in slot if (folder / n).exists()), None)

        found = [first(slot) for slot in self.required]
        if any(p is None for p in found):
            return None
        return found + [first(slot) for slot in self.optional]

    def read(self, paths: list[Path | None]) -> RawData:
        if self.kind == "amazon":
            return readers.read_amazon(paths[0], paths[1])
        if self.kind == "movielens":
            return readers.read_movielens_100k(paths[0], paths[1])
        if self.kind == "llm4dsr_windows":
            return readers.read_llm4dsr_windows([p for p in paths if p is not None])
        raise ValueError(f"unknown raw source kind {self.kind!r}")

    def wanted(self, folder: Path) -> str:
        req = " + ".join(str(folder / slot[0]) for slot in self.required)
        opt = "".join(f" (+ optional {folder / slot[0]})" for slot in self.optional)
        return f"{self.description}: {req}{opt}"


def _amazon(category: str, label: str, meta_required: bool = False) -> RawSource:
    reviews = (f"reviews_{category}_5.json.gz", f"reviews_{category}_5.json")
    meta = (f"meta_{category}.json.gz", f"meta_{category}.json")
    return RawSource(
        kind="amazon", description=f"{label} reviews + metadata",
        required=(reviews, meta) if meta_required else (reviews,), optional=() if meta_required else (meta,),
        urls=(f"{SNAP_2014}/{reviews[0]}", f"{SNAP_2014}/{meta[0]}"),
    )


def _amazon_plan(category: str) -> tuple:
    return ((fetching.UrlFile(f"{SNAP_2014}/reviews_{category}_5.json.gz", f"reviews_{category}_5.json.gz"),
             fetching.UrlFile(f"{SNAP_2014}/meta_{category}.json.gz", f"meta_{category}.json.gz")),)


WINDOWS = RawSource(
    kind="llm4dsr_windows",
    description="LLM4DSR-style window CSVs with every window (columns user_id, item_ids, item_titles, timestamp)",
    required=(("train.csv", "train.csv.gz"), ("valid.csv", "valid.csv.gz"), ("test.csv", "test.csv.gz")),
)


@dataclass(frozen=True)
class Located:
    kind: str  # atomic | amazon | movielens | llm4dsr_windows
    paths: tuple[Path | None, ...]
    source: RawSource | None = None


@dataclass(frozen=True)
class FileDataset:
    """A dataset read from files under ``<data root>/<name>/``."""

    name: str
    description: str
    reference: Reference | None
    defaults: dict
    raw_sources: tuple[RawSource, ...] = ()
    fetch_plan: tuple = ()
    recipe: Recipe = field(default_factory=Recipe)
    atomic_reference: Reference | None = None  # when the shipped atomic files are a different build
    auto_fetch: bool = False
    notes: str = ""

    def folder(self, root: Path) -> Path:
        return root / self.name

    def locate(self, root: Path) -> Located | None:
        folder = self.folder(root)

        def first(*names: str) -> Path | None:
            return next((folder / n for n in names if (folder / n).exists()), None)

        inter = first(f"{self.name}.inter", f"{self.name}.inter.gz")
        if inter is not None:
            return Located("atomic", (inter, first(f"{self.name}.item", f"{self.name}.item.gz")))
        for source in self.raw_sources:
            paths = source.locate(folder)
            if paths is not None:
                return Located(source.kind, tuple(paths), source)
        return None

    def reference_for(self, kind: str) -> Reference | None:
        return self.atomic_reference if kind == "atomic" and self.atomic_reference else self.reference

    def read_raw(self, located: Located) -> RawData:
        if located.kind == "atomic":
            return readers.read_atomic(*located.paths)
        raw = located.source.read(list(located.paths))
        return self.recipe.apply(raw) if located.kind == "amazon" else raw

    def missing_message(self, root: Path, suggest_fetch: bool = True) -> str:
        folder = self.folder(root)
        lines = [f"dataset '{self.name}': no data files in {folder} (data root {root}; set BENCH_DATA or "
                 "dataset.root to use another). Looked for, in this order:",
                 f"  - RecBole atomic files: {folder / (self.name + '.inter')} (+ {self.name}.item for item text)"]
        lines += [f"  - {source.wanted(folder)}" for source in self.raw_sources]
        if self.fetch_plan and suggest_fetch:
            lines.append(f"Get them with:  bench data fetch {self.name}" + (f" --root {root}" if root != data_root() else ""))
        urls = [u for s in self.raw_sources if s.kind == "amazon" for u in s.urls]
        if urls:
            lines.append(f"or download by hand (Amazon 2014 data, {AMAZON_2014_PAGE}):")
            lines += [f"    {u}" for u in urls]
            lines.append(f"  and put the files (kept as .json.gz or unpacked to .json) into {folder}/")
        if any(s.kind == "llm4dsr_windows" for s in self.raw_sources):
            lines.append(f"LLM4DSR-style window CSVs are accepted too: put the complete train.csv, valid.csv and test.csv "
                         f"(all windows, α = 0 files) into {folder}/")
        if self.notes:
            lines.append(self.notes)
        return "\n".join(lines)

    def find(self, root: Path, fetch_missing: bool = True) -> Located:
        located = self.locate(root)
        if located is not None:
            located = self._unchanged_since_fetch(root, located, fetch_missing)
        if located is None and self.auto_fetch and fetch_missing:
            try:
                fetching.fetch_files(self.name, self.fetch_plan, root)
            except fetching.FetchError as exc:
                raise DatasetMissingError(f"{exc}\n\n{self.missing_message(root, suggest_fetch=False)}") from exc
            located = self.locate(root)
        if located is None:
            raise DatasetMissingError(self.missing_message(root))
        return located

    def _unchanged_since_fetch(self, root: Path, located: Located, fetch_missing: bool) -> Located | None:
        """``located`` if its files match ``FETCHED.json``. Changed files of a dataset that is
        fetched automatically are moved aside (``<name>.changed-<time>``) and None is returned
        (fetch again); otherwise DatasetChangedError names them."""
        problems = fetching.changed_since_fetch(self.folder(root), located.paths)
        if not problems:
            return located
        if not (self.auto_fetch and fetch_missing):
            how = f"bench data fetch {self.name}" if self.fetch_plan else "a fresh copy of the file"
            raise DatasetChangedError("\n".join(problems.values()) + f"\nreplace it with {how}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for path in problems:
            path.rename(path.with_name(f"{path.name}.changed-{stamp}"))
        log.warning("dataset '%s': %s; moved aside, fetching it again", self.name, "; ".join(problems.values()))
        return None

    def load(self, cfg) -> Interactions:
        root = data_root(cfg.root)
        located = self.find(root)
        interactions = preprocess(self.read_raw(located), cfg)
        interactions.meta.update(dataset=self.name, source_kind=located.kind,
                                 files=[str(p) for p in located.paths if p is not None])
        return interactions


@dataclass(frozen=True)
class SyntheticDataset:
    """Generated data with planted, labelled noise (``benchmark.data.synthetic``)."""

    name: str
    description: str
    defaults: dict
    reference: Reference | None = None

    def locate(self, root: Path) -> Located:
        return Located("generated", ())

    def reference_for(self, kind: str) -> Reference | None:
        return None

    def load(self, cfg) -> Interactions:
        from benchmark.data.synthetic import generate  # written alongside; imported lazily

        interactions = generate(cfg.synthetic)
        interactions.meta.update(dataset=self.name, source_kind="generated")
        return interactions


def _entries() -> list:
    ml_plan = (
        (fetching.ZipMembers("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                             {"ml-100k/u.data": "u.data", "ml-100k/u.item": "u.item"}),),
        (fetching.WheelMembers("recbole==1.2.1", {
            "recbole/dataset_example/ml-100k/ml-100k.inter": "ml-100k.inter",
            "recbole/dataset_example/ml-100k/ml-100k.item": "ml-100k.item"}),),
    )
    amazon_defaults = {"max_len": 32, "k_core": 5}
    llm4dsr_note = ("Raw Amazon files are rebuilt as LLM4DSR did (titled items only, then the k-core); "
                    "LLM4DSR's numbers compare only on data built this way (protocol.md §1).")
    return [
        FileDataset(
            "ml-100k", "MovieLens 100K, unfiltered (IADSR, HSD/SSDRec, RecBole)",
            Reference(943, 1682, 100000, "MovieLens 100K"), {"max_len": 50, "k_core": 0},
            raw_sources=(RawSource("movielens", "MovieLens 100K raw files", (("u.data", "ml-100k/u.data"),),
                                   (("u.item", "ml-100k/u.item"),),
                                   ("https://files.grouplens.org/datasets/movielens/ml-100k.zip",)),),
            fetch_plan=ml_plan, auto_fetch=True,
        ),
        FileDataset(
            "beauty", "Amazon 2014 Beauty 5-core, S3Rec/P5 processing",
            Reference(22363, 12101, 198502, "Amazon 2014 Beauty 5-core (S3Rec/P5)"), amazon_defaults,
            raw_sources=(_amazon("Beauty", "Amazon 2014 Beauty 5-core"),), fetch_plan=_amazon_plan("Beauty"),
        ),
        FileDataset(
            "sports", "Amazon 2014 Sports and Outdoors 5-core, S3Rec/P5 processing (no titles in the suite's files)",
            Reference(35598, 18357, 296337, "Amazon 2014 Sports 5-core (S3Rec/P5)"), amazon_defaults,
            raw_sources=(_amazon("Sports_and_Outdoors", "Amazon 2014 Sports and Outdoors 5-core"),),
            fetch_plan=_amazon_plan("Sports_and_Outdoors"),
        ),
        FileDataset(
            "toys", "Amazon 2014 Toys and Games 5-core, S3Rec/P5 processing",
            Reference(19412, 11924, 167597, "Amazon 2014 Toys 5-core (S3Rec/P5)"), amazon_defaults,
            raw_sources=(_amazon("Toys_and_Games", "Amazon 2014 Toys and Games 5-core"),),
            fetch_plan=_amazon_plan("Toys_and_Games"),
        ),
        FileDataset(
            "game", "Amazon Video Games: the suite's files are DEALRec's processing; raw files are rebuilt as LLM4DSR's Game",
            Reference(54955, 17256, 494934, "LLM4DSR Game (Amazon 2014 Video Games 5-core, titled items)"),
            {"max_len": 50, "k_core": 0},
            raw_sources=(_amazon("Video_Games", "Amazon 2014 Video Games 5-core", meta_required=True),),
            fetch_plan=_amazon_plan("Video_Games"), recipe=Recipe(require_title=True, k_core=5),
            atomic_reference=Reference(49156, 17332, 342329, "suite build (DEALRec's Amazon Video Games)"),
            notes=llm4dsr_note,
        ),
        FileDataset(
            "toy", "LLM4DSR Toy: Amazon 2014 Toys and Games 5-core, titled items, re-5-cored",
            Reference(19124, 11758, 165247, "LLM4DSR Toy (Table 2)"), {"max_len": 50, "k_core": 5},
            raw_sources=(_amazon("Toys_and_Games", "Amazon 2014 Toys and Games 5-core", meta_required=True), WINDOWS),
            fetch_plan=_amazon_plan("Toys_and_Games"), recipe=Recipe(require_title=True, k_core=5), notes=llm4dsr_note,
        ),
        FileDataset(
            "movie", "LLM4DSR Movie: Amazon 2014 Movies and TV 5-core, titled items, 20,000 sampled items, 11-core",
            Reference(9329, 5101, 214980, "LLM4DSR Movie (Table 2; random item sample, so only approximately reproducible)"),
            {"max_len": 50, "k_core": 11},
            raw_sources=(_amazon("Movies_and_TV", "Amazon 2014 Movies and TV 5-core", meta_required=True), WINDOWS),
            fetch_plan=_amazon_plan("Movies_and_TV"), recipe=Recipe(require_title=True, item_sample=20000, k_core=11),
            notes=llm4dsr_note + " The 20,000-item sample uses seed 42, not LLM4DSR's draw.",
        ),
        SyntheticDataset("synthetic", "generated sequences with planted, labelled noise (tests and smoke runs)",
                         {"max_len": 50, "k_core": 0}),
    ]


for _entry in _entries():
    DATASETS.add(_entry.name, _entry, origin=__name__)


def get_entry(name: str):
    """The catalog entry registered under ``name`` (raises UnknownNameError listing the names)."""
    return DATASETS.get(name)


def load_interactions(cfg) -> Interactions:
    """Read dataset ``cfg.name`` from ``data_root(cfg.root)`` and preprocess it with ``cfg``.

    ``cfg`` is a DatasetConfig or the ``dataset`` section of a run config. Entries registered by
    plugins only need a ``load(cfg) -> Interactions`` method."""
    entry = DATASETS.get(str(cfg.name))
    return entry.load(cfg)

