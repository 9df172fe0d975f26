"""Dataset statistics and their Markdown table beside the published numbers (protocol.md §1).

The columns and number formats are those of ``/work/shared/datasets/verify.py``, so the table
for the shipped datasets reproduces the one in that folder's README.
"""
from __future__ import annotations

from dataclasses import dataclass

from benchmark.data.raw import Interactions


@dataclass(frozen=True)
class DatasetStats:
    """Counts of one preprocessed dataset. ``density`` = interactions / (users × items);
    ``items_with_text`` counts items whose assembled text is not blank."""

    name: str
    users: int
    items: int
    interactions: int
    avg_len: float
    min_len: int
    max_len: int
    density: float
    items_with_text: int
    text_columns: tuple[str, ...] = ("title",)
    source_kind: str = ""


def compute_stats(name: str, data: Interactions) -> DatasetStats:
    lengths = data.sequences.lengths
    n = int(lengths.sum())
    with_text = sum(1 for text in data.item_text[1:] if text.strip())
    return DatasetStats(
        name=name,
        users=data.n_users,
        items=data.n_items,
        interactions=n,
        avg_len=n / max(data.n_users, 1),
        min_len=int(lengths.min()) if len(lengths) else 0,
        max_len=int(lengths.max()) if len(lengths) else 0,
        density=n / max(data.n_users * data.n_items, 1),
        items_with_text=with_text,
        text_columns=tuple(data.meta.get("text_columns", ("title",))),
        source_kind=str(data.meta.get("source_kind", "")),
    )


def verdict(stats: DatasetStats, reference) -> str:
    """'matches <label>' / 'MISMATCH: ...' / 'no published reference'."""
    if reference is None:
        return "no published reference"
    if reference.matches(stats.users, stats.items, stats.interactions):
        return f"matches {reference.label}"
    return f"MISMATCH: {reference.label} has {reference}"


def stats_table(rows: list[tuple[DatasetStats, object]]) -> str:
    """Markdown table, one row per (stats, reference or None)."""
    titles_only = all(s.text_columns == ("title",) for s, _ in rows)
    text_header = "items with title" if titles_only else "items with text"
    lines = [
        f"| dataset | users | items | interactions | avg len | min len | max len | density | {text_header} "
        "| published (users / items / interactions) | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s, ref in rows:
        share = 100.0 * s.items_with_text / max(s.items, 1)
        lines.append(
            f"| {s.name} | {s.users} | {s.items} | {s.interactions} | {s.avg_len:.2f} | {s.min_len} | {s.max_len} "
            f"| {s.density:.5f} | {s.items_with_text} ({share:.1f}%) | {ref if ref is not None else '—'} | {verdict(s, ref)} |"
        )
    return "\n".join(lines)
