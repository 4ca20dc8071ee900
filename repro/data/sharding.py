"""Which sample indices a rank reads in an epoch, and the shared loader interface.

Training: a permutation of all N indices drawn from (seed, epoch); rank r takes every
world-th index starting at r from the first floor(N / world) * world of them, so shards are
disjoint and equal; the last partial batch is dropped. Validation: rank r takes indices
r, r + world, r + 2 world, ... in order, every image exactly once across ranks, no padding;
ranks may therefore see one batch more or fewer than each other.
"""
from __future__ import annotations

import math

import numpy as np


def train_indices(n: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch, 0x7A11]).permutation(n)
    per = n // world
    return perm[rank:per * world:world]


def val_indices(n: int, rank: int, world: int) -> np.ndarray:
    return np.arange(rank, n, world)


class EpochLoader:
    """Common bookkeeping: `len()` = batches per epoch on this rank, `set_epoch(e)`,
    `iterate(start_batch=0)` (implemented by the two back-ends), `indices(start_batch)`."""

    def __init__(self, n: int, batch_size: int, *, train: bool, seed: int, rank: int, world: int):
        self.n, self.batch_size, self.train = n, batch_size, train
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Images this rank yields per epoch (train: after dropping the partial batch)."""
        if self.train:
            return (self.n // self.world) // self.batch_size * self.batch_size
        return len(val_indices(self.n, self.rank, self.world))

    def __len__(self) -> int:
        if self.train:
            return (self.n // self.world) // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self, start_batch: int = 0) -> np.ndarray:
        """Sample indices of this epoch on this rank, from batch `start_batch` on."""
        if self.train:
            idx = train_indices(self.n, self.seed, self.epoch, self.rank, self.world)[:self.num_samples]
        else:
            idx = val_indices(self.n, self.rank, self.world)
        if start_batch < 0 or start_batch > len(self):
            raise ValueError(f"start_batch {start_batch} outside 0..{len(self)}")
        return idx[start_batch * self.batch_size:]

    def batches(self, start_batch: int = 0) -> list[np.ndarray]:
        idx = self.indices(start_batch)
        return [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]

    def __iter__(self):
        return self.iterate(0)

    def iterate(self, start_batch: int = 0):
        raise NotImplementedError
