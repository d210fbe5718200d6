"""torchrun / torch.distributed helpers: one process per device, rank 0 does the talking and the writing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device_type: str) -> Context:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, gloo on CPU), if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return current()


def current() -> Context:
    """This process's place in the torch.distributed process group; a lone process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shard(dataset: Dataset) -> Dataset:
    """This process's share of `dataset`: every world-size-th item, without padding duplicates."""
    ctx = current()
    return Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size)) if ctx.distributed else dataset


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def launched_as_main() -> bool:
    """Whether the launcher (torchrun) made this process rank 0, or none launched it: the one that reports. Read from
    the launcher's environment, so it holds after the process group is gone."""
    return os.environ.get("RANK", "0") == "0"
