"""Explanations of the gaps between a paper's numbers and ours, each tied to an experiment.

``configs/paper_gaps.yaml`` lists, per explained gap: the paper cells it covers (paper, table,
dataset, ``rows`` as "backbone label / method label" the way :mod:`benchmark.paper_numbers`
prints them), the grid file of the experiment, ``where`` — the store columns and values that
select the experiment's rows (e.g. ``train.train_instances: last_only``) — and ``why``, one
sentence of mechanism. ``bench leaderboard`` prints the experiment's numbers next to the
paper's, so an explanation is only as good as the rows it points at; the file holds no numbers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import CONFIG_DIR, ConfigError
from benchmark.entries_file import read_entries
from benchmark.paper_numbers import PAPER_RESULTS, PaperResult
from benchmark.sections import Section, Variant, matches_cell, representative_variants
from benchmark.store import flatten

GAPS_FILE = CONFIG_DIR / "paper_gaps.yaml"
_KEYS = {"paper": str, "table": str, "dataset": str, "rows": list, "grid": str, "where": dict, "why": str}


@dataclass(frozen=True)
class GapExplanation:
    paper: str
    table: str
    dataset: str
    rows: tuple[str, ...]  # "GRU4Rec / base", as PaperResult labels print
    grid: str  # grid file of the experiment (repository-relative)
    where: tuple[tuple[str, Any], ...]  # store column -> value the experiment's rows have
    why: str

    def covers(self, ref: PaperResult) -> bool:
        return (ref.paper, ref.table, ref.dataset) == (self.paper, self.table, self.dataset) and \
            f"{ref.backbone_label} / {ref.method_label}" in self.rows

    def selects(self, row: dict) -> bool:
        """Whether a store row belongs to the experiment (values compared as text, so YAML
        ``0.1`` matches a stored ``0.1`` and ``last_only`` a stored string)."""
        flat = dict(row)
        if row.get("config_json"):
            flat = {**flatten(json.loads(row["config_json"])), **row}
        return all(str(flat.get(key)) == str(value) for key, value in self.where)


def load_gaps(path: str | Path = GAPS_FILE) -> list[GapExplanation]:
    """Read and check the explanations file; every entry must name paper cells that exist."""
    known = {(r.paper, r.table, r.dataset, f"{r.backbone_label} / {r.method_label}") for r in PAPER_RESULTS}
    out = []
    for where, entry in read_entries(Path(path), "gaps", _KEYS):
        for row in entry["rows"]:
            if (entry["paper"], entry["table"], entry["dataset"], row) not in known:
                raise ConfigError(f"{where}: no paper cell {entry['paper']} {entry['table']} {entry['dataset']} "
                                  f"'{row}' in benchmark/paper_numbers.py")
        out.append(GapExplanation(entry["paper"], entry["table"], entry["dataset"], tuple(entry["rows"]),
                                  entry["grid"], tuple(sorted(entry["where"].items())), " ".join(entry["why"].split())))
    return out


def evidence_variant(gap: GapExplanation, ref: PaperResult, sections: list[Section]) -> Variant | None:
    """The experiment's variant for one paper cell: a representative variant (the validation
    choice where several settings ran) of the cell's backbone and denoiser, in a section of the
    paper's noise setting, whose rows all satisfy ``gap.where``; the one with most seeds."""
    best: Variant | None = None
    for s in sections:
        if s.noise != ref.noise:
            continue
        for v in representative_variants(s):
            if not matches_cell(v, ref.ours) or not all(gap.selects(r) for r in v.runs.values()):
                continue
            if best is None or len(v.runs) > len(best.runs):
                best = v
    return best
