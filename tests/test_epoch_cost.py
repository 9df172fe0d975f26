"""Epoch-time ratios between leaderboard rows, and the marks that say whether they compare."""
from __future__ import annotations

import pytest
import torch

from benchmark.epoch_cost import epoch_cost, like_for_like, speed_probe
from benchmark.provenance import speed_probe_seconds
from benchmark.sections import Variant


def variant(name: str, seconds: float, **context: float) -> Variant:
    """Two seeds of a row whose runs took ``seconds`` per epoch under ``context`` (timing columns)."""
    return Variant("sasrec", name, {}, {seed: {"epoch_seconds_mean": seconds, **context} for seed in (0, 1)})


SAME = {"torch_threads": 1.0, "load_average_start": 1.0, "load_average_end": 1.0,
        "speed_probe_start": 0.020, "speed_probe_end": 0.022}


def test_a_ratio_under_matching_recorded_conditions_is_unmarked():
    cost = epoch_cost(variant("said", 3.0, **SAME), variant("none", 2.0, **SAME))
    assert cost.ratio == pytest.approx(1.5) and cost.like_for_like is True
    assert cost.text() == "1.50"


def test_a_ratio_against_a_row_stored_before_the_speed_probe_is_marked_unknown():
    old = {k: v for k, v in SAME.items() if not k.startswith("speed_probe")}
    cost = epoch_cost(variant("said", 6.3, **SAME), variant("none", 3.35, **old))
    assert cost.like_for_like is None and cost.text() == "1.88?"


@pytest.mark.parametrize("changed", [
    {"speed_probe_start": 0.040, "speed_probe_end": 0.044},  # a machine half as fast
    {"torch_threads": 2.0},
    {"load_average_start": 1.5, "load_average_end": 1.5},
])
def test_a_ratio_under_a_different_recorded_condition_is_marked_unequal(changed):
    cost = epoch_cost(variant("said", 6.0, **{**SAME, **changed}), variant("none", 3.0, **SAME))
    assert cost.like_for_like is False and cost.text() == "2.00≠"


def test_a_known_difference_counts_even_where_the_speed_probe_is_missing():
    no_probe = {k: v for k, v in SAME.items() if not k.startswith("speed_probe")}
    assert like_for_like(variant("said", 1.0, **{**no_probe, "torch_threads": 2.0}), variant("none", 1.0, **SAME)) is False


def test_a_row_with_one_seed_lacking_the_probe_has_no_probe():
    v = variant("said", 1.0, **SAME)
    del v.runs[1]["speed_probe_end"]
    assert speed_probe(v) is None
    assert speed_probe(variant("none", 1.0, **SAME)) == pytest.approx(0.021)


def test_speed_probe_times_its_workload_without_touching_the_global_random_state():
    state = torch.get_rng_state()
    seconds = speed_probe_seconds()
    assert 0 < seconds < 60
    assert torch.equal(state, torch.get_rng_state())
