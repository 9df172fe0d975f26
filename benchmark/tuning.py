"""Two-stage hyperparameter choice inside a grid (the grid file's ``tune_seeds``).

A grid that sweeps ``denoiser_params`` spends most of its budget on settings nobody will cite.
With ``tune_seeds: [0]`` every setting runs at seed 0 only; the grid's other seeds run only the
setting with the highest mean validation value of the metric the runs early-stopped on
(``train.monitor``) over the tuning seeds. Test metrics play no part, so the choice is the one a
paper may report. It is the choice :func:`benchmark.sections.chosen_on_validation` makes in the
leaderboard, where only settings that ran every seed compete.

A tuning group is one (dataset, noise setting, backbone, denoiser, own overrides) with at least
two parameter settings; groups with one setting are not tuned. The choice is made once every
tuning cell of the group has a stored outcome: a finished run competes, a run that is not
applicable does not, and a failed or missing one keeps the group's other seeds waiting.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmark.grid import Cell
    from benchmark.store import ResultStore


def group_key(cell: Cell) -> tuple:
    """What a cell shares with the other settings it competes with: everything but its
    ``denoiser_params`` and seed."""
    return cell.dataset, cell.noise, cell.backbone, cell.denoiser, cell.own


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


@dataclass(frozen=True)
class TuningChoice:
    """The setting a group's other seeds run: ``value`` is its mean of ``column`` over ``seeds``."""

    label: str  # the group, e.g. "ml-100k | clean | caser | cl4srec"
    params: dict[str, Any]
    column: str
    value: float
    seeds: tuple[int, ...]
    competed: int  # settings with a finished run at every tuning seed
    settings: int  # settings in the group

    def describe(self) -> str:
        chosen = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        seeds = ",".join(map(str, self.seeds))
        return (f"{self.label}: {chosen} chosen on {self.column} = {self.value:.4f} (mean over seed "
                f"{seeds}; {self.competed} of {self.settings} settings competed)")


@dataclass
class TuningState:
    """The grid's cells split by the validation choices the store allows so far."""

    active: list[Cell] = field(default_factory=list)  # untuned cells, tuning cells, the chosen settings' other seeds
    waiting: list[Cell] = field(default_factory=list)  # other seeds of groups whose tuning cells are unfinished
    passed_over: list[Cell] = field(default_factory=list)  # other seeds of settings validation did not choose
    choices: list[TuningChoice] = field(default_factory=list)


def resolve_tuning(cells: list[Cell], tune_seeds: list[int], outcomes: dict[str, dict[str, Any]]) -> TuningState:
    """Split ``cells`` (in grid order) by the tuning choices ``outcomes`` allow.

    ``outcomes``: run id -> stored row (at least ``status`` and the monitored validation
    columns), as :func:`stored_outcomes` returns. Without ``tune_seeds`` every cell is active.
    Ties go to the setting listed first in the grid."""
    state = TuningState()
    if not tune_seeds:
        state.active = list(cells)
        return state
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault(group_key(c), []).append(c)
    verdict: dict[tuple, TuningChoice | None] = {}  # group -> choice, None while it waits
    for key, members in groups.items():
        settings = list(dict.fromkeys(params_key(c.params) for c in members))
        if len(settings) < 2:
            continue
        verdict[key] = _choose(members, settings, tune_seeds, outcomes)
    for c in cells:
        key = group_key(c)
        if key not in verdict or c.seed in tune_seeds:
            state.active.append(c)
        elif verdict[key] is None:
            state.waiting.append(c)
        elif params_key(c.params) == params_key(verdict[key].params):
            state.active.append(c)
        else:
            state.passed_over.append(c)
    state.choices = [choice for choice in verdict.values() if choice is not None]
    return state


def _choose(members: list[Cell], settings: list[str], tune_seeds: list[int],
            outcomes: dict[str, dict[str, Any]]) -> TuningChoice | None:
    from benchmark.store import STATUS_NOT_APPLICABLE, STATUS_OK, monitor_column

    tuning = [c for c in members if c.seed in tune_seeds]
    seeds = tuple(sorted({c.seed for c in tuning}))
    if not tuning or any(outcomes.get(c.run_id, {}).get("status") not in (STATUS_OK, STATUS_NOT_APPLICABLE)
                         for c in tuning):
        return None
    column = monitor_column(tuning[0].monitor)
    values: dict[str, list[float]] = {}
    for c in tuning:
        row = outcomes[c.run_id]
        if row.get("status") == STATUS_OK and row.get(column) is not None:
            values.setdefault(params_key(c.params), []).append(float(row[column]))
    complete = [s for s in settings if len(values.get(s, [])) == len(seeds)]
    if not complete:
        return None
    best = max(complete, key=lambda s: sum(values[s]) / len(seeds))  # max keeps the first of equals
    first = tuning[0]
    return TuningChoice(label=f"{first.dataset} | {first.noise} | {first.backbone} | {first.denoiser}"
                              + (f" ({','.join(first.own)})" if first.own else ""),
                        params=json.loads(best), column=column, value=sum(values[best]) / len(seeds), seeds=seeds,
                        competed=len(complete), settings=len(settings))


def stored_outcomes(store: ResultStore, cells: list[Cell]) -> dict[str, dict[str, Any]]:
    """run id -> ``status`` and monitored validation columns of the stored rows of ``cells``."""
    import polars as pl

    from benchmark.store import monitor_column

    ids = [c.run_id for c in cells]
    frame = store.frame()
    if frame.height == 0 or "run_id" not in frame.columns:
        return {}
    columns = ["run_id", "status", *sorted({monitor_column(c.monitor) for c in cells} & set(frame.columns))]
    frame = frame.filter(pl.col("run_id").is_in(ids)).select(columns)
    return {row["run_id"]: row for row in frame.to_dicts()}
