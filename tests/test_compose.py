"""`compose` builds its schema once and parses each config file once per text; one compose must
not leak into the next."""
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


def test_a_config_file_edited_between_composes_is_read_again_even_at_the_same_size(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("train: {lr: 0.1}\n")
    assert compose(extra_files=[extra]).train.lr == 0.1
    extra.write_text("train: {lr: 0.2}\n")  # same size, likely the same mtime tick
    assert compose(extra_files=[extra]).train.lr == 0.2
