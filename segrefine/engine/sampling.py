"""Resumable, deterministic sampling for training.

The data order is an endless stream of per-epoch permutations seeded by (seed, epoch), and each sample's random
augmentation is seeded by its position in that stream. So the batches of iteration i depend only on the seed and
i — not on workers, processes or interruptions — and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler, default_collate

from segrefine.errors import SegrefineError


class StreamBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (stream position, dataset index) for one process, from iteration `start` on, forever.

    Global batch i holds stream positions [i·B·W, (i+1)·B·W); process r takes its B consecutive ones.
    """

    def __init__(self, length: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        if length <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.length)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.length, generator=generator)
        return int(self._perm[offset])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in itertools.count(self.start):
            first = (iteration * self.world_size + self.rank) * self.batch_size
            yield [(p, self.index(p)) for p in range(first, first + self.batch_size)]


class SeededSamples(Dataset):
    """Wraps a dataset whose transform is random: item (position, index) is sample `index` with every random draw of
    its transform seeded by (seed, position).

    A SegrefineError is returned, not raised: a DataLoader worker would wrap it into a multi-line message carrying
    its traceback, while `collate_or_error` hands it to the main process to raise as the user's one line.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict | SegrefineError:
        position, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + position)
            try:
                return self.dataset[index]
            except SegrefineError as e:
                return e


def collate_or_error(samples: list[dict | SegrefineError]) -> dict | SegrefineError:
    """The default batch of `samples`, or the first error one of them carries (for the main process to raise)."""
    error = next((s for s in samples if isinstance(s, SegrefineError)), None)
    return error if error is not None else default_collate(samples)
