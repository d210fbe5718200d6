"""engine.distributed: a lone process, and each process's share of a dataset in a two-process gloo group."""

import json
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from segrefine.engine import distributed


def test_a_lone_process_is_main_and_keeps_the_whole_dataset():
    ctx = distributed.current()
    assert ctx.is_main and not ctx.distributed
    data = list(range(5))
    assert distributed.shard(data) is data


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        ctx = distributed.current()
        share = list(distributed.shard(list(range(5))))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps([ctx.rank, ctx.world_size, ctx.is_main, share]))
    finally:
        dist.destroy_process_group()


def test_two_processes_share_the_dataset_without_duplicates(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert got == [[0, 2, True, [0, 2, 4]], [1, 2, False, [1, 3]]]
