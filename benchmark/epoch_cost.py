"""What a training epoch of one leaderboard row costs against another's, and whether the two wall
times were taken under conditions that let them compare.

Rows of a store are trained over weeks, on whichever machine a session got and beside whatever
else ran there: the same code's epochs took about twice as long on one of this suite's machines
as on another. A ratio of two rows' seconds per epoch is like for like only where both rows
recorded the context (:func:`benchmark.provenance.speed_probe_seconds`, the torch thread count,
the load average per core) and it agrees; ``bench perf`` measures costs side by side instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchmark.sections import Variant, mean_of

PROBE_TOLERANCE = 1.25  # speed probes within this factor of each other count as the same machine speed
LOAD_TOLERANCE = 0.3  # load averages per core within this of each other count as the same load
MARKS = {True: "", False: "≠", None: "?"}
MARKS_NOTE = ("? after a ratio: at least one of the two rows was stored before runs recorded a speed probe of "
              "their machine, so whether they ran on equally fast machines is unknown; ≠: the two "
              f"rows' speed probes differ by more than a factor of {PROBE_TOLERANCE:g}, their torch thread counts "
              f"differ, or their loads per core differ by more than {LOAD_TOLERANCE:g}. Only an unmarked ratio "
              "compares like for like")


@dataclass(frozen=True)
class EpochCost:
    ratio: float  # the row's mean seconds per epoch over the other row's
    like_for_like: bool | None  # None: the context of at least one row is not recorded

    def text(self) -> str:
        """``1.24`` (like for like), ``1.88?`` (unknown), ``0.97≠`` (different conditions)."""
        return f"{self.ratio:.2f}{MARKS[self.like_for_like]}"


def _every_run(v: Variant, column: str) -> dict[int, float] | None:
    """seed -> value of ``column``, or None when some run of ``v`` lacks it."""
    values = v.values(column)
    return values if len(values) == len(v.runs) else None


def load_per_core(v: Variant) -> float | None:
    """Mean over seeds of the 1-minute load average per core at the runs' start and end."""
    loads = [x for x in (mean_of(v, "load_average_start"), mean_of(v, "load_average_end")) if x is not None]
    return sum(loads) / len(loads) if loads else None


def speed_probe(v: Variant) -> float | None:
    """Mean over seeds and over start and end of the runs' speed probes, in seconds; None when some
    run has none (stored before runs recorded it)."""
    start, end = _every_run(v, "speed_probe_start"), _every_run(v, "speed_probe_end")
    if start is None or end is None:
        return None
    return sum(start.values()) / (2 * len(start)) + sum(end.values()) / (2 * len(end))


def like_for_like(a: Variant, b: Variant) -> bool | None:
    """Whether ``a``'s and ``b``'s epoch times were taken under the same conditions: False as soon as
    a recorded condition differs (thread counts, load per core, speed probe); True when every
    condition is recorded for both and agrees; None otherwise."""
    checks: list[bool] = []
    threads_a, threads_b = _every_run(a, "torch_threads"), _every_run(b, "torch_threads")
    if threads_a is not None and threads_b is not None:
        checks.append(set(threads_a.values()) == set(threads_b.values()) and len(set(threads_a.values())) == 1)
    load_a, load_b = load_per_core(a), load_per_core(b)
    if load_a is not None and load_b is not None:
        checks.append(abs(load_a - load_b) <= LOAD_TOLERANCE)
    probe_a, probe_b = speed_probe(a), speed_probe(b)
    if probe_a is not None and probe_b is not None:
        checks.append(1 / PROBE_TOLERANCE <= probe_a / probe_b <= PROBE_TOLERANCE)
    if not all(checks):
        return False
    return True if len(checks) == 3 else None


def epoch_cost(variant: Variant, other: Variant) -> EpochCost | None:
    """``variant``'s mean seconds per training epoch over ``other``'s; None without both."""
    mine, theirs = mean_of(variant, "epoch_seconds_mean"), mean_of(other, "epoch_seconds_mean")
    if mine is None or not theirs:
        return None
    return EpochCost(mine / theirs, like_for_like(variant, other))


PerfCosts = dict[tuple[str, str, str], float]  # (dataset, backbone, denoiser) -> cost per training target


def load_perf_costs(path: str | Path) -> PerfCosts:
    """The side-by-side costs of a ``bench perf`` report (``perf.json``): each denoiser's median
    seconds per training target over its plain backbone's, measured in one process with
    alternating epochs. Empty when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        return {(str(report["dataset"]), str(d["backbone"]), str(d["denoiser"])): float(d["ratio_median"])
                for report in doc["reports"] for d in report.get("denoisers", [])}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a `bench perf` report (expected reports[].dataset and "
                         f"reports[].denoisers[].backbone/denoiser/ratio_median): {exc!r}") from exc
