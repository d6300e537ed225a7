"""Deterministic data order: which examples update t uses is a pure function of (seed, t).

Epoch e is a permutation of the training set drawn from a ``torch.Generator`` seeded by (seed, e); update t uses
the ``t % steps_per_epoch``-th block of ``batch_size`` indices of epoch ``t // steps_per_epoch`` (the incomplete
last block is dropped, so every update sees exactly ``batch_size`` examples). Under DDP, rank r of w takes the r-th
of w equal slices of that global batch, so the global batch — what the theory's batch size B refers to — does not
depend on the number of ranks.

Because the order is a function of the step, a run resumed at step t (even mid-epoch) sees the same batches as an
uninterrupted one, a branch from a checkpoint sees the parent's batches (the "same batch order" comparison of
theory.md §3.3), and the fixed bank can name the step at which each of its training batches is used.

Random augmentations are made deterministic the same way: each sample's transform runs under a torch seed derived
from (seed, epoch, index) (:class:`SeededSamples`), independent of worker count and of resumption.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset


def _mix(*ints: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence hashing: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochSampler:
    """Global batch indices of every optimiser step, for a dataset of ``n`` examples."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or n < batch_size:
            raise ValueError(f"batch size {batch_size} must be in [1, {n}] (the training set has {n} examples); "
                             f"lower --batch-size")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be divisible by the number of ranks {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, {world_size})")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.steps_per_epoch = self.n // self.batch_size
        self._cache: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5EED))
            self._cache = (epoch, torch.randperm(self.n, generator=g))
        return self._cache[1]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of update ``step``."""
        return divmod(int(step), self.steps_per_epoch)

    def global_indices(self, step: int) -> np.ndarray:
        """The ``batch_size`` example indices update ``step`` trains on (all ranks together)."""
        epoch, j = self.position(step)
        return self.permutation(epoch)[j * self.batch_size:(j + 1) * self.batch_size].numpy().copy()

    def indices(self, step: int) -> np.ndarray:
        """This rank's share of the global batch of update ``step``."""
        per = self.batch_size // self.world_size
        return self.global_indices(step)[self.rank * per:(self.rank + 1) * per]

    def sample_seeds(self, step: int, idx: np.ndarray) -> list[int]:
        """Per-sample augmentation seeds for update ``step``: functions of (seed, epoch, example index) only."""
        epoch, _ = self.position(step)
        base = _mix(self.seed, epoch, 0xA06)
        return [(base + int(i) * 0x9E3779B97F4A7C15) % (1 << 63) for i in idx]  # golden-ratio stride


class SeededSamples(Dataset):
    """``ds[i]`` computed under ``torch.manual_seed(s)`` for keys ``(i, s)``, leaving the caller's RNG untouched."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key):
        i, s = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            return self.base[i]


class RandomShift(Dataset):
    """In-memory training images translated by a random integer offset in [−pad, pad]² per sample (the zero-padded
    random crop of the CIFAR references, done on whole batches of tensors), empty border filled with ``fill``
    (per channel, e.g. the normalised background). Offsets of update t come from a generator seeded by
    (seed, t, rank): a pure function of the step, so resume and branches see the same augmented batches."""

    def __init__(self, base: TensorDataset, pad: int, fill: torch.Tensor, seed: int):
        if pad < 1:
            raise ValueError(f"shift pad must be >= 1 pixel, got {pad}")
        self.x, self.y, self.pad, self.seed = base.tensors[0], base.tensors[1], int(pad), int(seed)
        self.fill = torch.as_tensor(fill, dtype=self.x.dtype).reshape(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: torch.Tensor, step: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        x, p = self.x[idx], self.pad
        n, c, h, w = x.shape
        g = torch.Generator().manual_seed(_mix(self.seed, step, rank, 0x5A1F7))
        off = torch.randint(0, 2 * p + 1, (n, 2), generator=g)
        big = self.fill.expand(n, c, h + 2 * p, w + 2 * p).clone()
        big[:, :, p:p + h, p:p + w] = x
        out = torch.empty_like(x)
        for dy in range(2 * p + 1):          # (2p+1)² slices of the whole batch: no per-sample Python loop
            for dx in range(2 * p + 1):
                m = (off[:, 0] == dy) & (off[:, 1] == dx)
                if m.any():
                    out[m] = big[m, :, dy:dy + h, dx:dx + w]
        return out, self.y[idx]

    def __getitem__(self, i):
        raise TypeError("RandomShift is read in whole batches through sampler.train_batches")


def in_memory(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) tensors of a TensorDataset (fast path: index instead of a DataLoader), else None."""
    return (ds.tensors[0], ds.tensors[1]) if isinstance(ds, TensorDataset) else None


def fetch(ds: Dataset, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of ``ds`` at ``idx`` (no augmentation randomness is fixed here: use on eval-style datasets)."""
    t = in_memory(ds)
    if t is not None:
        i = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return t[0][i], t[1][i]
    if callable(getattr(ds, "make_batch", None)):   # generated in whole batches on its device (data.SyntheticImages)
        return ds.make_batch(idx)
    items = [ds[int(i)] for i in idx]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def _collate(items):
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


class _StepKeys:
    """Lazy batch sampler for DataLoader: the (index, seed) keys of each update in [start, stop)."""

    def __init__(self, sampler: EpochSampler, start: int, stop: int):
        self.sampler, self.start, self.stop = sampler, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        for s in range(self.start, self.stop):
            idx = self.sampler.indices(s)
            yield list(zip(idx.tolist(), self.sampler.sample_seeds(s, idx)))


def train_batches(ds: Dataset, sampler: EpochSampler, start: int, stop: int, workers: int = 0,
                  pin_memory: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(step, x, y) for updates start, ..., stop-1, this rank's share of each batch; prefetched by ``workers``."""
    if callable(getattr(ds, "batch", None)):   # whole-batch datasets: RandomShift, data.SyntheticImages
        for step in range(start, stop):
            yield (step, *ds.batch(torch.from_numpy(sampler.indices(step)), step, sampler.rank))
        return
    t = in_memory(ds)
    if t is not None:  # already tensors: slicing is faster than any loader, and has no randomness
        for step in range(start, stop):
            i = torch.from_numpy(sampler.indices(step))
            yield step, t[0][i], t[1][i]
        return
    loader = DataLoader(SeededSamples(ds), batch_sampler=_StepKeys(sampler, start, stop), num_workers=workers,
                        collate_fn=_collate, pin_memory=pin_memory, persistent_workers=False,
                        prefetch_factor=4 if workers > 0 else None)
    yield from ((start + k, x, y) for k, (x, y) in enumerate(loader))


class FixedBatches:
    """A fixed list of batches of ``ds`` (un-augmented) given as index chunks, yielded on ``device``.

    Kept on the device when they fit in ``cache_bytes`` (the bank, BN batches of small datasets); otherwise
    re-read at every use (ImageNet-sized banks), which gives the same tensors."""

    def __init__(self, ds: Dataset, chunks: Sequence[np.ndarray], device: torch.device, channels_last: bool = False,
                 cache_bytes: int = 256 << 20):
        self.ds, self.chunks, self.device, self.channels_last = ds, [np.asarray(c) for c in chunks], device, \
            channels_last
        self._cache: list | None = None
        if self.chunks:
            x0, _ = fetch(ds, self.chunks[0][:1])
            if x0.element_size() * x0.numel() * sum(len(c) for c in self.chunks) <= cache_bytes:
                self._cache = [self._load(c) for c in self.chunks]

    def _load(self, c):
        x, y = fetch(self.ds, c)
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int):
        return self._cache[k] if self._cache is not None else self._load(self.chunks[k])

    def __iter__(self):
        return (self[k] for k in range(len(self)))

    def head(self, n: int) -> list:
        return [self[k] for k in range(min(n, len(self)))]
