import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segrefine.models.memory import ClassMemory


def _memory(num_classes=4, dim=3):
    memory = ClassMemory(in_channels=dim, num_classes=num_classes, dim=dim)
    return memory.train()


def _batch():
    """Two images of 2×2 features; class 0 and 1 present, class 2 only under ignore, class 3 absent."""
    features = torch.tensor(
        [[[[1.0, 3.0], [0.0, 5.0]], [[0.0, 0.0], [2.0, 5.0]], [[0.0, 1.0], [0.0, 5.0]]]]
    )  # 1×3×2×2
    labels = torch.tensor([[[0, 0], [1, 255]]])
    return features, labels


def test_first_seen_class_slot_becomes_its_mean_feature():
    memory = _memory()
    features, labels = _batch()
    memory.update(features, labels, momentum=0.9)
    torch.testing.assert_close(memory.memory[0], torch.tensor([2.0, 0.0, 0.5]))
    torch.testing.assert_close(memory.memory[1], torch.tensor([0.0, 2.0, 0.0]))
    assert memory.memory[2:].abs().sum() == 0  # ignore pixels and absent classes leave slots untouched
    assert memory.initialized.tolist() == [True, True, False, False]


def test_update_weights_features_by_one_minus_cosine_and_scales_momentum():
    memory = _memory()
    memory.memory[0] = torch.tensor([1.0, 0.0, 0.0])
    memory.initialized[0] = True
    features = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]])  # pixels (1,0,0) and (0,1,0)
    labels = torch.tensor([[[0, 0]]])
    memory.update(features, labels, momentum=0.5)
    # cos = 1 for the first pixel (weight 0), 0 for the second (weight 1): f = (0, 1, 0)
    torch.testing.assert_close(memory.memory[0], torch.tensor([0.5, 0.5, 0.0]))


def test_labels_are_resampled_nearest_to_the_feature_grid():
    memory = _memory(num_classes=2, dim=1)
    features = torch.tensor([[[[1.0, 7.0]]]])  # 1×1×1×2
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])  # 2×4 → 1×2
    memory.update(features, labels, momentum=0.9)
    torch.testing.assert_close(memory.memory[:, 0], torch.tensor([1.0, 7.0]))


def test_memory_is_frozen_in_eval_mode():
    memory = _memory().eval()
    memory.update(*_batch(), momentum=0.9)
    assert memory.memory.abs().sum() == 0 and not memory.initialized.any()


def test_read_is_the_probability_weighted_memory_when_attention_is_uniform():
    memory = _memory(num_classes=2, dim=3).eval()
    memory.memory.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 4.0, 0.0]]))
    torch.nn.init.zeros_(memory.query.weight)
    torch.nn.init.zeros_(memory.query.bias)
    logits = torch.tensor([[[[0.0]], [[1.0]]]])
    p = logits.softmax(dim=1)[0, :, 0, 0]
    read = memory.read(torch.randn(1, 3, 1, 1), logits)[0, :, 0, 0]
    torch.testing.assert_close(read, p[0] * memory.memory[0] + p[1] * memory.memory[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank, world, port, features, labels, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    memory = ClassMemory(3, 4, 3).train()
    memory.memory[2] = torch.tensor([1.0, 1.0, 1.0])
    memory.initialized[2] = True
    memory.update(features[rank : rank + 1], labels[rank : rank + 1], momentum=0.6)
    torch.save(memory.memory.clone(), os.path.join(result_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_distributed_update_leaves_every_process_with_the_same_memory(tmp_path):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (2, 4, 4), generator=generator)
    labels[0, 0, :] = 255
    mp.spawn(_distributed_worker, args=(2, _free_port(), features, labels, str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    torch.testing.assert_close(rank0, rank1)
    # One process seeing both images ends with the same memory.
    single = ClassMemory(3, 4, 3).train()
    single.memory[2] = torch.tensor([1.0, 1.0, 1.0])
    single.initialized[2] = True
    single.update(features, labels, momentum=0.6)
    torch.testing.assert_close(rank0, single.memory)
    assert not torch.equal(rank0[2], torch.ones(3))
