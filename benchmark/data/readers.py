"""Readers for the raw dataset formats; each returns a :class:`benchmark.data.raw.RawData`.

Every reader produces the same two frames:

* ``inter``: ``user_id`` (Utf8), ``item_id`` (Utf8), ``timestamp`` (Float64, seconds or a position
  index, whatever the source has), one row per interaction, in the source's row order;
* ``items`` (or None): ``item_id`` (Utf8) plus text columns (Utf8, '' when missing), one row per item.
  Text columns use the suite's names: ``title``, ``categories`` (and ``release_year`` for MovieLens).

Formats:

* RecBole atomic files (:func:`read_atomic`): ``NAME.inter`` / ``NAME.item``, tab-separated, typed
  headers ``name:type``. Field names are matched by the part before ':'; RecBole's own ML-100K names
  ``movie_title`` and ``class`` are read as ``title`` and ``categories``; ``rating`` and any other
  interaction column are dropped.
* Amazon reviews (:func:`read_amazon`): 2014 and 2018 review files (strict JSON lines with
  ``reviewerID``, ``asin``, ``unixReviewTime``) and metadata (2014: Python dict literals, parsed with
  ``ast.literal_eval``, with ``title`` and ``categories``; 2018: JSON with ``title`` and ``category``).
* MovieLens raw (:func:`read_movielens`): 100K ``u.data`` + ``u.item``; 1M ``ratings.dat`` + ``movies.dat``.
* LLM4DSR-style sliding-window CSV (:func:`read_llm4dsr_windows`), rebuilt into per-user sequences.

Plain files and ``.gz`` files are both accepted everywhere. Bad input raises
:class:`DataFormatError` naming the file, the line and what was expected; besides malformed lines
this covers interaction files without interactions, repeated (user, item, timestamp) rows, repeated
item ids, and (RecBole, MovieLens) items of the interactions without a row in the item file. Amazon
metadata may lack reviewed items (its files cover a whole category, and the LLM4DSR recipe drops
items without a title); those get empty text. Parsing is vectorised with
polars; only the 2014 metadata (Python literals) needs one ``literal_eval`` per line.
"""
from __future__ import annotations

import ast
import codecs
import csv
import gzip
import io
import json
import re
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from benchmark.data.raw import RawData

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
# RecBole's names for text fields -> the suite's names.
FIELD_ALIASES = {"movie_title": "title", "class": "categories", "genre": "categories"}
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip


class DataFormatError(ValueError):
    """A data file does not have the expected format (file, 1-based line, what was expected)."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path, self.line = str(path), line
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------------------------------- helpers
def open_bytes(path: str | Path) -> bytes:
    """The file's content, gunzipped when the name ends in ``.gz``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFormatError(path, None, f"not a readable gzip file ({exc})") from exc
    return path.read_bytes()


def _decode(path: Path, data: bytes, encoding: str) -> str:
    """``data`` as text; a UTF-8 byte-order mark (written by some editors) is dropped."""
    if encoding == "utf-8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"bytes are not valid {encoding} ({exc.reason})") from exc


def _lines(path: str | Path, encoding: str = "utf-8") -> pl.Series:
    """All lines of a text file as a Utf8 series (line ``k`` of the file is element ``k - 1``).

    Empty lines at the end of the file are dropped; a trailing CR is removed (CRLF files)."""
    path = Path(path)
    text = _decode(path, open_bytes(path), encoding)
    lines = text.rstrip("\r\n").split("\n") if text.strip("\r\n") else []
    return pl.Series("line", lines, dtype=pl.Utf8).str.strip_suffix("\r")


def _split_fields(path: Path, lines: pl.Series, sep: str, names: Sequence[str], first_line: int) -> pl.DataFrame:
    """Split ``lines`` on the literal ``sep`` into exactly ``len(names)`` Utf8 columns.

    ``first_line`` is the file line number of ``lines[0]``; a line with a different number of
    fields raises a DataFormatError naming it."""
    n = len(names)
    counts = lines.str.count_matches(sep, literal=True).to_numpy()
    bad = np.flatnonzero(counts != n - 1)
    if len(bad):
        k = int(bad[0])
        shown = lines[k] if len(lines[k]) <= 120 else lines[k][:117] + "..."
        raise DataFormatError(
            path, first_line + k,
            f"has {counts[k] + 1} fields separated by {sep!r}, expected {n} ({', '.join(names)}): {shown!r}",
        )
    frame = pl.DataFrame({"line": lines})
    if n == 1:
        return frame.rename({"line": names[0]})
    # split_exact into n - 1 splits gives n fields; with the counts checked above none is null
    return frame.select(
        pl.col("line").str.split_exact(sep, n - 1).struct.rename_fields(list(names))
    ).unnest("line")


def _to_float(path: Path, frame: pl.DataFrame, column: str, first_line: int, what: str) -> pl.Series:
    """Cast a Utf8 column to Float64; an unparsable or non-finite value raises an error naming its line."""
    values = frame[column].str.strip_chars().cast(pl.Float64, strict=False)
    bad = np.flatnonzero(~np.isfinite(values.fill_null(np.nan).to_numpy()))
    if len(bad):
        k = int(bad[0])
        raise DataFormatError(path, first_line + k, f"{what} {frame[column][k]!r} is not a finite number")
    return values


def _require_nonempty(path: Path, frame: pl.DataFrame, columns: Iterable[str], first_line: int) -> None:
    for column in columns:
        empty = np.flatnonzero((frame[column].str.strip_chars().str.len_chars() == 0).to_numpy())
        if len(empty):
            raise DataFormatError(path, first_line + int(empty[0]), f"empty {column}; every row needs one")


def _repeated_row(frame: pl.DataFrame, columns: Sequence[str]) -> tuple[int, int] | None:
    """``(first, second)``: the 0-based row ``second`` is the earliest whose ``columns`` equal
    those of an earlier row, ``first`` that earlier row; None when every row is distinct."""
    keys = frame.select(columns)
    repeats = np.flatnonzero(~keys.select(pl.struct(pl.all()).is_first_distinct()).to_series().to_numpy())
    if not len(repeats):
        return None
    second = int(repeats[0])
    same = np.logical_and.reduce([(keys[c] == keys[c][second]).to_numpy() for c in columns])
    return int(np.flatnonzero(same)[0]), second


def _repeat_message(frame: pl.DataFrame, columns: Sequence[str], row: int, first_line: int, rule: str) -> str:
    shown = ", ".join(f"{c.replace('_', ' ')} {frame[c][row]!r}" for c in columns)
    return f"{shown} repeats line {first_line}; {rule}"


def _reject_repeats(path: Path, frame: pl.DataFrame, columns: Sequence[str], first_line: int, rule: str) -> None:
    """Raise a DataFormatError naming the first row whose ``columns`` repeat an earlier row
    (``first_line`` is the file line of row 0)."""
    found = _repeated_row(frame, columns)
    if found is not None:
        first, second = found
        raise DataFormatError(path, first_line + second,
                              _repeat_message(frame, columns, second, first_line + first, rule))


INTERACTION_ONCE = "each interaction (user, item, timestamp) must appear once; remove the repeated line"
ITEM_ONCE = "item ids must be unique"


def _require_rows(path: Path, frame: pl.DataFrame, line: int, expected: str) -> None:
    """An interaction file without a single interaction is an error, not an empty dataset."""
    if frame.height == 0:
        raise DataFormatError(path, line, f"no interactions; expected {expected}")


def _require_item_rows(inter_path: Path, inter: pl.DataFrame, first_line: int, item_path: Path,
                       items: pl.DataFrame) -> None:
    """Every item id of ``inter`` (its file line ``first_line`` holds row 0) has a row in ``items``."""
    missing = ~inter["item_id"].is_in(items["item_id"].implode())
    bad = np.flatnonzero(missing.to_numpy())
    if len(bad):
        k = int(bad[0])
        count, total = inter["item_id"].filter(missing).n_unique(), inter["item_id"].n_unique()
        raise DataFormatError(
            inter_path, first_line + k,
            f"item id {inter['item_id'][k]!r} has no row in {item_path} ({count} of {total} item ids are missing "
            "there); every item needs a row in the item file, or remove the item file to run without item text",
        )


def clean_text(expr: pl.Expr) -> pl.Expr:
    """Text as stored by the suite: tabs, CR and LF become one space; null becomes ''."""
    return expr.cast(pl.Utf8).fill_null("").str.replace_all(r"[\t\r\n]+", " ")


def _items_frame(frame: pl.DataFrame, text_columns: Sequence[str]) -> pl.DataFrame:
    return frame.select(pl.col("item_id"), *[clean_text(pl.col(c)).alias(c) for c in text_columns])


def _inter_frame(users, items, timestamps) -> pl.DataFrame:
    """Columns (any sequence types) -> the standard inter frame (Utf8, Utf8, Float64)."""
    return pl.DataFrame(
        {"user_id": users, "item_id": items, "timestamp": timestamps},
        schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Float64},
    )


# ------------------------------------------------------------------------------ RecBole atomic
def _atomic_table(path: Path) -> tuple[list[str], pl.DataFrame]:
    """Read a RecBole atomic file: returns the field names (aliases applied) and all columns as Utf8."""
    lines = _lines(path)
    if len(lines) == 0:
        raise DataFormatError(path, 1, "empty file; expected a header line such as 'item_id:token\\ttitle:token_seq'")
    names: list[str] = []
    for field in lines[0].split("\t"):
        name, colon, kind = field.partition(":")
        if not colon or not name or kind not in ATOMIC_TYPES:
            raise DataFormatError(
                path, 1,
                f"header field {field!r} is not 'name:type' with type one of {', '.join(ATOMIC_TYPES)} "
                "(RecBole atomic files start with a typed, tab-separated header)",
            )
        names.append(name)
    present = set(names)
    names = [FIELD_ALIASES[n] if n in FIELD_ALIASES and FIELD_ALIASES[n] not in present else n for n in names]
    if len(set(names)) != len(names):
        raise DataFormatError(path, 1, f"duplicate field names in header {names}")
    return names, _split_fields(path, lines[1:], "\t", names, first_line=2)


def read_atomic_inter(path: str | Path) -> pl.DataFrame:
    """``NAME.inter`` -> inter frame. Without a timestamp field every timestamp is 0 (file order)."""
    path = Path(path)
    names, table = _atomic_table(path)
    missing = [c for c in ("user_id", "item_id") if c not in names]
    if missing:
        raise DataFormatError(path, 1, f"header lacks {', '.join(missing)}; expected user_id:token, item_id:token "
                              "and optionally timestamp:float")
    _require_rows(path, table, 2, "one line per interaction after the header")
    _require_nonempty(path, table, ("user_id", "item_id"), 2)
    if "timestamp" in names:
        timestamps = _to_float(path, table, "timestamp", 2, "timestamp")
    else:
        timestamps = pl.Series(np.zeros(table.height))
    inter = _inter_frame(table["user_id"].str.strip_chars(), table["item_id"].str.strip_chars(), timestamps)
    if "timestamp" in names:  # without times, a repeated (user, item) pair is a repeat consumption
        _reject_repeats(path, inter, ("user_id", "item_id", "timestamp"), 2, INTERACTION_ONCE)
    return inter


def read_atomic_items(path: str | Path) -> pl.DataFrame:
    """``NAME.item`` -> items frame with ``item_id`` and every other field as Utf8 text."""
    path = Path(path)
    names, table = _atomic_table(path)
    if "item_id" not in names:
        raise DataFormatError(path, 1, "header lacks item_id:token")
    table = table.with_columns(pl.col("item_id").str.strip_chars())
    _require_nonempty(path, table, ("item_id",), 2)
    _reject_repeats(path, table, ("item_id",), 2, ITEM_ONCE)
    return _items_frame(table, [n for n in names if n != "item_id"])


def read_atomic(inter_path: str | Path, item_path: str | Path | None = None) -> RawData:
    """RecBole atomic files -> RawData (``item_path`` optional: no text without it; with it,
    every item of the ``.inter`` file needs a row in the ``.item`` file)."""
    inter = read_atomic_inter(inter_path)
    items = None
    if item_path is not None:
        items = read_atomic_items(item_path)
        _require_item_rows(Path(inter_path), inter, 2, Path(item_path), items)
    source = f"RecBole atomic: {inter_path}" + (f", {item_path}" if item_path else "")
    return RawData(inter=inter, items=items, source=source)


# ---------------------------------------------------------------------------------- Amazon
_REVIEW_FIELDS = {"reviewerID": pl.Utf8, "asin": pl.Utf8, "unixReviewTime": pl.Int64}


def _diagnose_json_lines(path: Path, data: bytes, required: dict) -> DataFormatError | None:
    """Find the first line that is not a JSON object with the required fields (error path only)."""
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            return DataFormatError(path, number, f"not valid JSON ({exc}); expected one JSON object per line")
        if not isinstance(obj, dict):
            return DataFormatError(path, number, f"expected a JSON object, found {type(obj).__name__}")
        for key, dtype in required.items():
            value = obj.get(key)
            ok = isinstance(value, int) and not isinstance(value, bool) if dtype == pl.Int64 else isinstance(value, str)
            if not ok:
                kind = "an integer" if dtype == pl.Int64 else "a string"
                return DataFormatError(path, number, f"field {key!r} is {value!r}, expected {kind}")
    return None


def read_amazon_reviews(path: str | Path) -> pl.DataFrame:
    """Amazon review JSON lines (2014 or 2018, 5-core or full) -> inter frame.

    Uses ``reviewerID`` -> user_id, ``asin`` -> item_id, ``unixReviewTime`` -> timestamp (seconds);
    every review is an interaction whatever its rating."""
    path = Path(path)
    data = open_bytes(path)
    try:
        frame = pl.read_ndjson(io.BytesIO(data), schema=_REVIEW_FIELDS)
    except Exception as exc:  # polars reports neither file nor line: find them
        error = _diagnose_json_lines(path, data, _REVIEW_FIELDS)
        raise (error or DataFormatError(path, None, f"cannot parse as JSON lines: {exc}")) from exc
    if frame.null_count().sum_horizontal().item():
        error = _diagnose_json_lines(path, data, _REVIEW_FIELDS)
        raise error or DataFormatError(path, None, "some reviews lack reviewerID, asin or unixReviewTime")
    inter = _inter_frame(frame["reviewerID"], frame["asin"], frame["unixReviewTime"].cast(pl.Float64))
    _require_rows(path, inter, 1, "one JSON review per line with reviewerID, asin and unixReviewTime")
    found = _repeated_row(inter, ("user_id", "item_id", "timestamp"))
    if found is not None:  # rows are the non-blank lines: map them back to line numbers
        lines = [k for k, raw in enumerate(data.split(b"\n"), 1) if raw.strip()]
        first, second = found
        columns = ("user_id", "item_id", "timestamp")
        raise DataFormatError(path, lines[second],
                              _repeat_message(inter, columns, second, lines[first], INTERACTION_ONCE))
    return inter


# Lines of the 2014 metadata start with the asin; the filter only trusts an asin found there.
_ASIN_RE = re.compile(r"""^\s*\{\s*['"]asin['"]\s*:\s*['"]([^'"\\]*)['"]""")
# The 2014 metadata's ``related`` dict (lists of ASINs) is most of each line's syntax tree and is
# not used; parsing a line without it is ~10x faster. Only that exact shape is cut out, and a line
# that does not parse after the cut is parsed whole.
_RELATED_RE = re.compile(r"""'related': \{(?:'\w+': \[(?:'[^'\\]*'(?:, )?)*\](?:, )?)*\}(?:, )?""")


def _literal(line: str):
    short = _RELATED_RE.sub("", line, count=1)
    if short is not line:
        try:
            return ast.literal_eval(short)
        except (ValueError, SyntaxError):
            pass
    return ast.literal_eval(line)


def _category_text(record: dict) -> str:
    """2014 ``categories`` (list of paths) or 2018 ``category`` (one path) -> 'a > b | c > d'."""
    cats = record.get("categories")
    if isinstance(cats, list):
        paths = [p if isinstance(p, list) else [p] for p in cats]
        return " | ".join(" > ".join(str(x) for x in p) for p in paths if p)
    cat = record.get("category")
    if isinstance(cat, list):
        return " > ".join(str(x) for x in cat)
    return str(cat) if isinstance(cat, str) else ""


def read_amazon_meta(path: str | Path, keep_items: set[str] | None = None) -> pl.DataFrame:
    """Amazon metadata -> items frame (``item_id``, ``title``, ``categories``).

    The format is decided by the first non-empty line: strict JSON (2018) or a Python dict literal
    (2014, parsed with ``ast.literal_eval`` — never ``eval``); every line must then follow it.
    With ``keep_items``, lines that begin with the asin of an item not in it are skipped unparsed
    (and so unchecked). The first record of a repeated asin wins."""
    path = Path(path)
    text = _decode(path, open_bytes(path), "utf-8")
    if not text.strip():
        raise DataFormatError(path, 1, "empty file; expected one metadata record per line with 'asin' and 'title'")
    records: dict[str, tuple[str, str]] = {}
    mode = None
    for number, line in enumerate(text.split("\n"), 1):  # one record per line; literal_eval is per line anyway
        if not line.strip():
            continue
        if keep_items is not None:
            found = _ASIN_RE.match(line)
            if found and (found.group(1) not in keep_items or found.group(1) in records):
                continue
        if mode is None:
            try:
                json.loads(line)
                mode = "json"
            except ValueError:
                mode = "literal"
        try:
            record = json.loads(line) if mode == "json" else _literal(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            expected = ("a JSON object (the file's first record is JSON, as in the 2018 metadata)" if mode == "json"
                        else "a Python dict literal (as in the 2014 metadata)")
            raise DataFormatError(path, number, f"cannot parse ({exc.__class__.__name__}: {exc}); expected {expected}") from exc
        if not isinstance(record, dict) or not isinstance(record.get("asin"), str):
            raise DataFormatError(path, number, "expected a record with a string 'asin' field")
        asin = record["asin"]
        if asin in records or (keep_items is not None and asin not in keep_items):
            continue
        title = record.get("title")
        records[asin] = ("" if title is None else str(title), _category_text(record))
    if keep_items and not records:
        raise DataFormatError(path, None, f"holds no record for any of the {len(keep_items)} reviewed items; "
                              "expected the metadata file of the reviews' category")
    frame = pl.DataFrame(
        {"item_id": list(records), "title": [v[0] for v in records.values()],
         "categories": [v[1] for v in records.values()]},
        schema={"item_id": pl.Utf8, "title": pl.Utf8, "categories": pl.Utf8},
    )
    return _items_frame(frame, ["title", "categories"])


def read_amazon(reviews_path: str | Path, meta_path: str | Path | None = None) -> RawData:
    """Amazon reviews (+ optional metadata) -> RawData; metadata is read for reviewed items only."""
    inter = read_amazon_reviews(reviews_path)
    items = None
    if meta_path is not None:
        items = read_amazon_meta(meta_path, keep_items=set(inter["item_id"].unique().to_list()))
    source = f"Amazon reviews: {reviews_path}" + (f", metadata: {meta_path}" if meta_path else "")
    return RawData(inter=inter, items=items, source=source)


# -------------------------------------------------------------------------------- MovieLens
_YEAR_IN_TITLE = r"^(.*?)\s*\((\d{4})\)\s*$"


def _split_title_year(titles: pl.Expr) -> list[pl.Expr]:
    """'Toy Story (1995)' -> title 'Toy Story', year '1995' (RecBole's form); other titles unchanged."""
    stripped = titles.str.strip_chars()
    year = stripped.str.extract(_YEAR_IN_TITLE, 2)
    title = pl.when(year.is_not_null()).then(stripped.str.extract(_YEAR_IN_TITLE, 1)).otherwise(stripped)
    return [title.alias("title"), year.alias("release_year")]


_RATING_FIELDS = ("user_id", "item_id", "rating", "timestamp")


def _read_ratings(path: Path, sep: str) -> pl.DataFrame:
    """MovieLens ratings (user, item, rating, time separated by ``sep``; latin-1) -> inter frame."""
    table = _split_fields(path, _lines(path, "latin-1"), sep, _RATING_FIELDS, 1)
    _require_rows(path, table, 1, f"one line per rating: user, item, rating and timestamp separated by {sep!r}")
    _require_nonempty(path, table, ("user_id", "item_id"), 1)
    inter = _inter_frame(table["user_id"], table["item_id"], _to_float(path, table, "timestamp", 1, "timestamp"))
    _reject_repeats(path, inter, ("user_id", "item_id", "timestamp"), 1, INTERACTION_ONCE)
    return inter


def _read_movies(path: Path, sep: str, names: Sequence[str], inter: pl.DataFrame, inter_path: Path) -> pl.DataFrame:
    """A MovieLens movie table (latin-1, ``sep``-separated ``names``) as Utf8 columns; every item of
    ``inter`` (read from ``inter_path``) needs exactly one row."""
    meta = _split_fields(path, _lines(path, "latin-1"), sep, names, 1)
    _reject_repeats(path, meta, ("item_id",), 1, ITEM_ONCE)
    _require_item_rows(inter_path, inter, 1, path, meta)
    return meta


def read_movielens_100k(data_path: str | Path, item_path: str | Path | None = None) -> RawData:
    """MovieLens 100K ``u.data`` (user, item, rating, time; tab-separated) + ``u.item`` (pipe-separated,
    latin-1: id | title | release date | video date | URL | 19 genre flags).

    Text: ``title`` without the trailing year, ``release_year`` (from the title, else the release
    date), ``categories`` = genre names joined by spaces (as in RecBole's copy)."""
    data_path = Path(data_path)
    inter = _read_ratings(data_path, "\t")
    items = None
    if item_path is not None:
        item_path = Path(item_path)
        names = ["item_id", "raw_title", "release_date", "video_date", "url", *[f"g{k}" for k in range(19)]]
        meta = _read_movies(item_path, "|", names, inter, data_path)
        genres = pl.concat_str(
            [pl.when(pl.col(f"g{k}").str.strip_chars() == "1").then(pl.lit(name)) for k, name in enumerate(ML100K_GENRES)],
            separator=" ", ignore_nulls=True,
        )
        meta = meta.with_columns(*_split_title_year(pl.col("raw_title")), categories=genres)
        meta = meta.with_columns(
            pl.col("release_year").fill_null(pl.col("release_date").str.extract(r"(\d{4})\s*$", 1)).fill_null("")
        )
        items = _items_frame(meta, ["title", "release_year", "categories"])
    return RawData(inter=inter, items=items, source=f"MovieLens 100K: {data_path}" + (f", {item_path}" if item_path else ""))


def read_movielens_1m(ratings_path: str | Path, movies_path: str | Path | None = None) -> RawData:
    """MovieLens 1M ``ratings.dat`` (UserID::MovieID::Rating::Timestamp) + ``movies.dat``
    (MovieID::Title::Genres with '|' between genres; latin-1). Text as for 100K."""
    ratings_path = Path(ratings_path)
    inter = _read_ratings(ratings_path, "::")
    items = None
    if movies_path is not None:
        movies_path = Path(movies_path)
        meta = _read_movies(movies_path, "::", ["item_id", "raw_title", "genres"], inter, ratings_path)
        genres = pl.col("genres").str.replace_all("|", " ", literal=True)
        meta = meta.with_columns(*_split_title_year(pl.col("raw_title")), categories=genres)
        items = _items_frame(meta.with_columns(pl.col("release_year").fill_null("")), ["title", "release_year", "categories"])
    return RawData(inter=inter, items=items, source=f"MovieLens 1M: {ratings_path}" + (f", {movies_path}" if movies_path else ""))


def read_movielens(directory: str | Path) -> RawData:
    """A MovieLens folder: 100K (``u.data``, ``u.item``) or 1M (``ratings.dat``, ``movies.dat``)."""
    directory = Path(directory)
    layouts = (("u.data", "u.item", read_movielens_100k), ("ratings.dat", "movies.dat", read_movielens_1m))
    for data_name, item_name, reader in layouts:
        data = directory / data_name
        if data.exists():
            item = directory / item_name
            return reader(data, item if item.exists() else None)
    raise FileNotFoundError(f"{directory}: neither u.data (MovieLens 100K) nor ratings.dat (MovieLens 1M) found")


# ---------------------------------------------------------------------- LLM4DSR window CSV
def _parse_id_lists(path: Path, column: pl.Series, first_line: int) -> pl.Series:
    """'[1, 2, 3]' -> list of Utf8 ids; anything else raises an error naming the line."""
    text = column.str.strip_chars()
    ok = text.str.contains(r"^\[\s*[^\[\]]*\]$")
    bad = np.flatnonzero(~ok.fill_null(False).to_numpy())
    if len(bad):
        k = int(bad[0])
        raise DataFormatError(path, first_line + k, f"item_ids {column[k]!r} is not a list literal such as '[12, 7, 3]'")
    parts = text.str.strip_chars("[] ").str.split(",").list.eval(pl.element().str.strip_chars(" '\""))
    empty = np.flatnonzero(parts.list.eval(pl.element().str.len_chars() == 0).list.any().to_numpy())
    if len(empty):
        k = int(empty[0])
        raise DataFormatError(path, first_line + k, f"item_ids {column[k]!r} has an empty element (or is an empty list)")
    return parts


_WINDOW_COLUMNS = ("user_id", "item_ids", "timestamp")


def _diagnose_csv(path: Path, data: bytes) -> DataFormatError | None:
    """The first problem of a CSV file that polars could not read (or read with short lines):
    invalid UTF-8, an empty file, an unclosed quote, or a line whose field count differs from
    the header's. None if no such problem is found. Error path only (parses in Python)."""
    text = _decode(path, data, "utf-8")
    if not text.strip():
        return DataFormatError(path, 1, "empty file; expected a header line 'user_id,item_ids,item_titles,timestamp'")
    reader = csv.reader(io.StringIO(text), strict=True)
    start = 1
    try:
        header = next(reader)
        start = reader.line_num + 1
        for record in reader:
            if record and len(record) != len(header):
                return DataFormatError(path, start, f"has {len(record)} fields, expected {len(header)} as in the "
                                       f"header ({', '.join(header)})")
            start = reader.line_num + 1
    except csv.Error as exc:
        return DataFormatError(path, start, f"not valid CSV from this line on ({exc}); is a quote left open?")
    return None


def _read_window_file(path: Path, file_index: int) -> pl.DataFrame:
    """One window CSV -> columns user_id, items (list[str]), titles (the raw item_titles text or
    null), timestamp, file, line. Line numbers assume one window per line (LLM4DSR's files have no
    embedded newlines)."""
    data = open_bytes(path)
    try:
        frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
    except Exception as exc:  # polars reports neither line nor cause in the user's terms: find them
        raise _diagnose_csv(path, data) or DataFormatError(path, None, f"cannot parse as CSV: {exc}") from exc
    missing = [c for c in _WINDOW_COLUMNS if c not in frame.columns]
    if missing:
        raise DataFormatError(path, 1, f"header lacks {', '.join(missing)}; expected columns user_id, item_ids, "
                              f"item_titles, timestamp (found {', '.join(frame.columns)})")
    if frame.height == 0:
        raise DataFormatError(path, 2, "no windows after the header; expected one line per window")
    if frame.select(pl.any_horizontal(pl.col(_WINDOW_COLUMNS).is_null()).any()).item():
        error = _diagnose_csv(path, data)  # a short line reads as trailing nulls; name it as such
        if error is not None:
            raise error
    if "mask" in frame.columns:
        noisy = np.flatnonzero(frame["mask"].fill_null("").str.contains(r"[1-9]").to_numpy())
        if len(noisy):
            raise DataFormatError(path, int(noisy[0]) + 2, "the mask column flags injected noise; use the α = 0 files "
                                  "(e.g. *_noise_user0.0) — the benchmark injects its own labelled noise")
    _require_nonempty(path, frame.with_columns(pl.col("user_id").fill_null("")), ("user_id",), 2)
    items = _parse_id_lists(path, frame["item_ids"].fill_null(""), 2)
    titles = frame["item_titles"] if "item_titles" in frame.columns else pl.Series([None] * frame.height, dtype=pl.Utf8)
    timestamps = _to_float(path, frame.with_columns(pl.col("timestamp").fill_null("")), "timestamp", 2, "timestamp")
    return pl.DataFrame({
        "user_id": frame["user_id"].str.strip_chars(), "items": items, "titles": titles,
        "timestamp": timestamps, "file": pl.Series([file_index] * frame.height, dtype=pl.Int64),
        "line": pl.Series(np.arange(2, frame.height + 2), dtype=pl.Int64),
    })


def _window_titles(windows: pl.DataFrame, paths: Sequence[Path]) -> pl.DataFrame | None:
    """Items frame (item_id, title) from the ``item_titles`` lists. Only the windows holding some
    item's first occurrence are parsed (``ast.literal_eval``, one per such window)."""
    if windows["titles"].null_count() == windows.height:
        return None
    flat = windows.select(pl.int_range(pl.len()).alias("w"), "items").explode("items")
    needed = np.unique(flat.group_by("items").agg(pl.col("w").min())["w"].to_numpy())
    pairs_items, pairs_titles = [], []
    for w in needed.tolist():  # at most one window per item
        text, ids = windows["titles"][w], windows["items"][w].to_list()
        path, line = paths[int(windows["file"][w])], int(windows["line"][w])
        try:
            row = ast.literal_eval(text) if text is not None else None
        except (ValueError, SyntaxError) as exc:
            raise DataFormatError(path, line, f"item_titles is not a Python list literal ({exc})") from exc
        if not isinstance(row, list) or len(row) != len(ids):
            count = len(row) if isinstance(row, list) else "no"
            raise DataFormatError(path, line, f"item_titles has {count} entries, expected one per item id ({len(ids)})")
        pairs_items += ids
        pairs_titles += [str(t) for t in row]
    pairs = pl.DataFrame({"item_id": pairs_items, "title": pairs_titles}, schema={"item_id": pl.Utf8, "title": pl.Utf8})
    return _items_frame(pairs.unique(subset="item_id", keep="first", maintain_order=True), ["title"])


def read_llm4dsr_windows(paths: Sequence[str | Path]) -> RawData:
    """LLM4DSR-style sliding-window CSVs (all splits, e.g. train.csv, valid.csv, test.csv) -> RawData.

    LLM4DSR writes, per user with chronological items ``s_0..s_{n-1}``, the windows
    ``s_{max(0,i-10)}..s_i`` for ``i = min(10, n-1) .. n-1``, each stamped with the time of ``s_i``.
    Reconstruction: a user's windows are ordered by (timestamp, file order, line); the sequence is
    the first window in full followed by the last item of every later window. Each emitted item gets
    its window's timestamp, so the items of the first window share one time (their order is kept by
    the stable tie-break) and every window target keeps its exact time — which is all the 8:1:1
    window split needs. Users are ordered by numeric id when every id is an integer, else by first
    appearance. Consecutive windows must overlap (window k = window k−1 shifted by one item);
    otherwise the files hold a sample of windows (e.g. ``train_5000.csv``) and full sequences cannot
    be rebuilt, which raises a DataFormatError. Files whose ``mask`` column flags injected noise are
    refused (the benchmark injects its own noise). Item titles (optional ``item_titles`` column, a
    Python list literal aligned with ``item_ids``) are taken from the first window holding each item.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("read_llm4dsr_windows: no files given")
    windows = pl.concat([_read_window_file(p, k) for k, p in enumerate(paths)], how="vertical")
    numeric = windows["user_id"].cast(pl.Int64, strict=False)
    if numeric.null_count() == 0:
        user_key = numeric
    else:  # first appearance order
        first = windows.select("user_id").unique(maintain_order=True).with_row_index("key")
        user_key = windows.select("user_id").join(first, on="user_id", how="left", maintain_order="left")["key"].cast(pl.Int64)
    windows = windows.with_columns(user_key=user_key).sort(["user_key", "timestamp", "file", "line"], maintain_order=True)
    _check_windows_chain(windows, paths)
    is_first = (windows["user_key"] != windows["user_key"].shift(1)).fill_null(True)
    emitted = windows.with_columns(is_first=is_first).select(
        "user_id", "timestamp",
        item_id=pl.when(pl.col("is_first")).then(pl.col("items")).otherwise(pl.col("items").list.tail(1)),
    ).explode("item_id")
    inter = _inter_frame(emitted["user_id"], emitted["item_id"], emitted["timestamp"])
    items = _window_titles(windows, paths)
    return RawData(inter=inter, items=items, source="LLM4DSR windows: " + ", ".join(map(str, paths)))


def _check_windows_chain(windows: pl.DataFrame, paths: Sequence[Path]) -> None:
    """Every non-first window of a user must equal the previous one shifted left by one item."""
    lengths = windows["items"].list.len().to_numpy().astype(np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    n = len(lengths)
    matrix = np.full((n, width), -1, dtype=np.int64)
    flat = windows["items"].explode().rank("dense").to_numpy().astype(np.int64)  # item codes
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    matrix[rows, cols] = flat
    user = windows["user_key"].to_numpy()
    later = np.flatnonzero(user[1:] == user[:-1]) + 1  # windows with a predecessor of the same user
    ok = (lengths[later] == width) & (lengths[later - 1] == width)
    ok &= (matrix[later, : width - 1] == matrix[later - 1, 1:]).all(axis=1)
    bad = later[~ok]
    if len(bad):
        k = int(bad[0])
        f, line = int(windows["file"][k]), int(windows["line"][k])
        pf, pline = int(windows["file"][k - 1]), int(windows["line"][k - 1])
        if windows["items"][k].to_list() == windows["items"][k - 1].to_list():
            raise DataFormatError(paths[f], line, f"window of user {windows['user_id'][k]!r} repeats {paths[pf]}, "
                                  f"line {pline}; each window must appear once")
        raise DataFormatError(
            paths[f], line,
            f"window of user {windows['user_id'][k]!r} does not continue the user's previous window "
            f"({paths[pf]}, line {pline}) shifted by one item; a full sequence can only be rebuilt from "
            "every window of every user (the complete train.csv, valid.csv and test.csv, not a sample "
            "such as train_5000.csv)",
        )
