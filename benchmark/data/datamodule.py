"""One ``LightningDataModule`` for every dataset.

Batches are dicts of tensors sliced from pre-built arrays (``benchmark.data.instances``):
a batch sampler yields index arrays and the dataset returns whole batches, so there is no
per-example collate. With ``trim_padding`` a batch drops the leading slots that are padding in
every row (keeping one spare slot, which BERT4Rec's appended mask token needs), and with
``bucket_batches`` the training sampler groups instances of similar length, so short-sequence
data (Amazon: mean length ~9 of 50 slots) does not pay for 50 slots per row. Training batches: ``items [B, L]`` (left-padded), ``targets [B, L]``,
``positions [B, L]``, ``users [B]``, ``noise [B, L]`` when labels exist. Evaluation batches:
``items [B, L]``, ``targets [B]``, ``positions``, ``users [B]``, ``lengths [B]``.
"""
from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from benchmark.config import ConfigError
from benchmark.data.instances import build_eval_tensors, build_train_tensors
from benchmark.data.sequences import SplitData


def occupied_slots(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Per instance, the number of slots from the first non-padding one to the end ``[n]``."""
    items = arrays["items"]
    used = items != 0
    if "targets" in arrays and arrays["targets"].ndim == 2:
        used = used | (arrays["targets"] != 0)
    if "positions" in arrays:
        used = used | (arrays["positions"] >= 0)
    first = np.where(used.any(1), used.argmax(1), items.shape[1])
    return items.shape[1] - first


class TensorBatches(Dataset):
    """A dataset whose ``__getitem__`` takes an index array and returns a batch dict.

    ``trim_padding``: drop leading slots that are padding in every row of the batch, keeping
    one spare padding slot when the batch is narrower than ``L``."""

    def __init__(self, arrays: dict[str, np.ndarray], trim_padding: bool = False) -> None:
        self.tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        self.n = len(next(iter(self.tensors.values())))
        self.trim_padding = trim_padding
        self.occupied = torch.from_numpy(occupied_slots(arrays)) if trim_padding else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        batch = {k: v[idx] for k, v in self.tensors.items()}
        if self.trim_padding and len(idx):
            L = batch["items"].shape[1]
            width = min(L, int(self.occupied[idx].max()) + 1)
            if width < L:
                for k, v in batch.items():
                    if v.ndim == 2 and v.shape[1] == L:  # every per-slot array: items, targets, positions, noise
                        batch[k] = v[:, L - width:]
        return batch


class IndexBatchSampler(Sampler):
    """Yields index arrays of ``batch_size`` (shuffled with a per-epoch seeded generator).

    With ``lengths`` and ``bucket > 1``, each run of ``bucket`` consecutive batches of the
    shuffled order is re-cut after sorting by length, and the batch order is shuffled again:
    batches hold similar lengths (cheap after padding trimming) yet stay random.

    Under several processes (``world > 1``, rank ``rank``) every rank builds the same batch list
    and takes every ``world``-th batch. Evaluation shares are disjoint and cover every instance
    once (ranks may get one batch more or less: metrics are sums reduced at epoch end, no
    per-step collective). Training shares have equal lengths (gradient all-reduce needs the same
    number of steps on every rank): the list wraps around to a multiple of ``world``, so a few
    batches of the epoch are seen twice, never dropped."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int,
                 lengths: np.ndarray | None = None, bucket: int = 0, rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world} processes")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.lengths = torch.as_tensor(lengths) if lengths is not None else None
        self.bucket = bucket
        self.rank, self.world = rank, world
        self.epoch = 0

    def _batches(self) -> list[torch.Tensor]:
        if not self.shuffle:
            # evaluation: with lengths, batches of similar length (metrics are order-free sums),
            # so trimmed batches stay narrow
            order = torch.arange(self.n) if self.lengths is None else torch.argsort(self.lengths, stable=True)
            return list(order.split(self.batch_size))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(self.n, generator=g)
        if self.lengths is None or self.bucket <= 1:
            return list(order.split(self.batch_size))
        span = self.batch_size * self.bucket
        batches = []
        for start in range(0, self.n, span):  # one iteration per bucket of batches, not per user
            chunk = order[start : start + span]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches.extend(chunk.split(self.batch_size))
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self):
        batches = self._batches()
        if self.world > 1:
            if self.shuffle and batches:
                short = -len(batches) % self.world
                batches = batches + batches[:short]
            batches = batches[self.rank :: self.world]
        yield from batches

    def __len__(self) -> int:
        total = (self.n + self.batch_size - 1) // self.batch_size
        if self.world == 1:
            return total
        if self.shuffle:
            return -(-total // self.world)
        return len(range(self.rank, total, self.world))

    def set_epoch(self, epoch: int) -> None:
        """Shuffle the next pass as epoch ``epoch`` (Lightning calls this before every training
        epoch, so a fit resumed from a checkpoint continues the same sequence of orders)."""
        self.epoch = epoch


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
        trim_padding: bool = False,
        bucket_batches: int = 0,
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
        self.trim_padding = trim_padding
        self.bucket_batches = bucket_batches
        flips = split.meta.get("target_flip")  # protocol.md §5.3 target-flip noise, if injected
        self.train_arrays = build_train_tensors(split.train, max_len, train_instances, flips)
        if self.n_train_targets == 0:
            longest = int(split.train.lengths.max()) if len(split.train.lengths) else 0
            raise ConfigError(
                f"dataset '{split.name}': no training targets under train.train_instances={train_instances} "
                f"({len(split.train.lengths)} training rows, the longest with {longest} items); a row needs at least "
                "2 items, so under leave-one-out a user needs at least 4 interactions"
            )
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

    def _process_share(self) -> tuple[int, int]:
        """(rank, number of processes) of the trainer this datamodule serves; (0, 1) without one."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, arrays: dict[str, np.ndarray], batch_size: int, shuffle: bool) -> DataLoader:
        data = TensorBatches(arrays, self.trim_padding)
        # lengths drive bucketing (training) and length-sorted evaluation batches
        lengths = data.occupied.numpy() if data.occupied is not None else None
        rank, world = self._process_share()
        return DataLoader(
            data,
            sampler=IndexBatchSampler(len(data), batch_size, shuffle, self.seed, lengths, self.bucket_batches,
                                      rank, world),
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
