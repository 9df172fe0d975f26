"""`compose` builds its schema once; one compose must not leak into the next."""
from __future__ import annotations

from benchmark.config import RunConfig, compose


def test_an_override_in_one_compose_does_not_change_the_next_composes_defaults():
    default = RunConfig()
    changed = compose(backbone="gru4rec", overrides=["train.lr=0.5", "dataset.noise.kind=replace", "eval.ks=[3]"])
    changed.train.weight_decay = 0.25  # a caller mutating its own config
    assert changed.train.lr == 0.5 and list(changed.eval.ks) == [3]
    again = compose(backbone="gru4rec")
    assert again.train.weight_decay == default.train.weight_decay
    assert again.dataset.noise.kind == "none" and list(again.eval.ks) != [3] and again.train.lr != 0.5
