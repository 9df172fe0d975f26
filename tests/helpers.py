"""Small in-memory fixtures shared by tests (no dataset files needed)."""
from __future__ import annotations

import numpy as np

from benchmark.data.sequences import EvalSet, Sequences, SplitData


def loo_split(rows: list[list[int]], n_items: int, name: str = "fixture", noise: list[list[int]] | None = None) -> SplitData:
    """Leave-one-out split of explicit sequences (each of length >= 3)."""
    full = Sequences.from_lists(rows, noise=noise)
    pos = full.position_in_row
    n = np.repeat(full.lengths, full.lengths)
    train = full.select(pos < n - 2)
    valid_hist = train
    test_hist = full.select(pos < n - 1)
    valid_t = np.array([r[-2] for r in rows])
    test_t = np.array([r[-1] for r in rows])
    text = [""] + [f"item {i}" for i in range(1, n_items + 1)]
    return SplitData(name, train, EvalSet(valid_hist, valid_t), EvalSet(test_hist, test_t), len(rows), n_items, text,
                     protocol={"split": "loo", "dataset": name})


def transition_split(n_users: int = 120, n_items: int = 30, length: int = 12, seed: int = 0) -> SplitData:
    """Every user walks the cycle i -> i+1 (mod n_items) from a random start: a planted,
    perfectly learnable transition."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    rows = (((starts[:, None] + np.arange(length)[None, :]) % n_items) + 1).tolist()
    return loo_split(rows, n_items, name="transition")
