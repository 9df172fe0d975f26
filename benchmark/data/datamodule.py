"""One ``LightningDataModule`` for every dataset.

Batches are dicts of tensors sliced from pre-built arrays (``benchmark.data.instances``):
a batch sampler yields index arrays and the dataset returns whole batches, so there is no
per-example collate. Training batches: ``items [B, L]`` (left-padded), ``targets [B, L]``,
``positions [B, L]``, ``users [B]``, ``noise [B, L]`` when labels exist. Evaluation batches:
``items [B, L]``, ``targets [B]``, ``positions``, ``users [B]``, ``lengths [B]``.
"""
from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from benchmark.data.instances import build_eval_tensors, build_train_tensors
from benchmark.data.sequences import SplitData


class TensorBatches(Dataset):
    """A dataset whose ``__getitem__`` takes an index array and returns a batch dict."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        self.n = len(next(iter(self.tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        return {k: v[idx] for k, v in self.tensors.items()}


class IndexBatchSampler(Sampler):
    """Yields index arrays of ``batch_size`` (shuffled with a per-epoch seeded generator)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch = 0

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g)
            self.epoch += 1
        else:
            order = torch.arange(self.n)
        for start in range(0, self.n, self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size


class SeqDataModule(pl.LightningDataModule):
    """Serves a ``SplitData`` to a backbone.

    Args:
        split: the data (train sequences, valid/test evaluation sets, item texts).
        max_len: input slots L.
        train_instances: all_positions | prefix | last_only | windows.
    """

    def __init__(
        self,
        split: SplitData,
        max_len: int,
        train_instances: str,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.split = split
        self.max_len = max_len
        self.train_instances = train_instances
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        flips = split.meta.get("target_flip")  # protocol.md §5.3 target-flip noise, if injected
        self.train_arrays = build_train_tensors(split.train, max_len, train_instances, flips)
        self.valid_arrays = build_eval_tensors(split.valid, max_len)
        self.test_arrays = build_eval_tensors(split.test, max_len)

    @property
    def item_text(self) -> list[str]:
        return self.split.item_text

    @property
    def n_train_targets(self) -> int:
        if self.train_instances == "windows":
            return int((self.train_arrays["items"] > 0).sum())
        return int((self.train_arrays["targets"] > 0).sum())

    def _loader(self, arrays: dict[str, np.ndarray], batch_size: int, shuffle: bool) -> DataLoader:
        data = TensorBatches(arrays)
        return DataLoader(
            data,
            sampler=IndexBatchSampler(len(data), batch_size, shuffle, self.seed),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_arrays, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_arrays, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_arrays, self.eval_batch_size, shuffle=False)
