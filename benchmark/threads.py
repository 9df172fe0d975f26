"""Pinning torch's intra-op thread count for a block of code."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads (0: unchanged), then restore the count.

    CPU matrix kernels split their sums differently with the thread count, which changes the
    last bits of results (text vectors, gradients); pinning the count makes them the same on
    every machine size."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)
