"""The network's fast paths give the outputs of the plain formulations they replaced (within 1e-5)."""

import math

import pytest
import torch
import torch.nn.functional as F

from segrefine import build_model
from segrefine.models import crm, fold_batchnorm, srm
from segrefine.models.crm import ChannelAttention, GateAttention, SpatialAttention
from segrefine.models.fusion import Fusion
from trained_looking import trained_looking

TOLERANCE = dict(atol=1e-5, rtol=0)


def unfold_aggregate(offset, mask, kernel):
    """The neighbourhood sum written with F.unfold, as the method describes it."""
    if kernel == 1:
        return offset * mask
    b, _, h, w = offset.shape
    padded = F.pad(offset, [kernel // 2] * 4, mode="replicate")
    neighbours = F.unfold(padded, kernel).view(b, 2, kernel * kernel, h, w)
    return (neighbours * mask.unsqueeze(1)).sum(dim=2)


def plain_offsets(module, fine, coarse):
    """The SRM's offsets as the method states them: upsample, then reduce; offset and mask from their own convolutions."""
    upsampled = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
    x = torch.cat((module.reduce_coarse(upsampled), module.reduce_fine(fine)), dim=1)
    offset = module.offset(x)
    if module.local:
        cell = torch.tensor([fine.shape[-1] / coarse.shape[-1], fine.shape[-2] / coarse.shape[-2]]).view(1, 2, 1, 1)
        offset = cell * torch.tanh(offset / cell)
    if module.mode == "flow":
        return offset
    logits = module.mask(x)
    weights = logits.softmax(dim=1) if module.mask_activation == "softmax" else logits.sigmoid() / logits.sigmoid().sum(1, keepdim=True)
    return unfold_aggregate(offset, weights, module.kernel)


def plain_fusion(module, coarse, fine, to_fine):
    """Every level brought to the fine grid, concatenated, then the fusion's conv-BN-ReLU."""
    return module[2](module[1](module[0](torch.cat([to_fine(n, q, fine, q) for n, q in coarse.items()] + [fine], dim=1))))


def channel_attention(module, x):
    """Channel attention through its explicit C×C affinity."""
    return x + module.gamma * (module.affinity(x) @ x.flatten(2)).view_as(x)


def spatial_attention(module, x):
    """Spatial attention through its explicit N×N affinity."""
    return x + module.gamma * (module.value(x).flatten(2) @ module.affinity(x).transpose(1, 2)).view_as(x)


def gate_attention(module, x):
    """The CBAM gate with its global pooling as adaptive pooling to 1×1."""
    x = x * (module.mlp(F.adaptive_avg_pool2d(x, 1)) + module.mlp(F.adaptive_max_pool2d(x, 1))).sigmoid()
    stats = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
    return x * module.spatial(stats).sigmoid()


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_neighbourhood_sum_matches_unfold(kernel):
    offset = torch.randn(2, 2, 13, 17) * 3
    mask = torch.randn(2, kernel * kernel, 13, 17).softmax(1)
    torch.testing.assert_close(srm.aggregate_offsets(offset, mask, kernel), unfold_aggregate(offset, mask, kernel), **TOLERANCE)


def test_attention_matches_the_explicit_affinity():
    x = torch.randn(2, 64, 6, 11)
    channel, spatial = ChannelAttention(), SpatialAttention(64)
    for module in (channel, spatial):
        torch.nn.init.constant_(module.gamma, 0.7)
    torch.testing.assert_close(channel(x), channel_attention(channel, x), **TOLERANCE)
    torch.testing.assert_close(spatial(x), spatial_attention(spatial, x), **TOLERANCE)


def test_warp_keeps_a_channels_last_network_channels_last():
    source = torch.randn(1, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    offset = torch.randn(1, 2, 10, 14)
    out = srm.warp(source, offset)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, srm.warp(source.contiguous(), offset), **TOLERANCE)


@pytest.mark.parametrize(
    "channels_last, switches",
    [(False, {}), (True, {}), (False, {"srm_fusion": True}), (False, {"srm": "flow"}),
     (False, {"srm_kernel": 5, "srm_mask": "sigmoid", "srm_local": True, "srm_fusion": True})],
)  # fmt: skip
def test_whole_network_matches_the_plain_formulations(monkeypatch, channels_last, switches):
    torch.manual_seed(0)
    model = build_model(variant="lite", num_classes=5, **switches).eval()
    with torch.no_grad():  # trained-looking modules: non-zero offsets, masks and attention scales
        for module in model.modules():
            if isinstance(module, srm.SemanticRefinement):
                torch.nn.init.normal_(module.offset.weight, std=0.05)
            if isinstance(module, (ChannelAttention, SpatialAttention)):
                torch.nn.init.constant_(module.gamma, 0.5)
    x = torch.randn(1, 3, 96, 160)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = model(x)
        monkeypatch.setattr(srm.SemanticRefinement, "offsets", plain_offsets)
        monkeypatch.setattr(Fusion, "forward", plain_fusion)
        monkeypatch.setattr(crm.ChannelAttention, "forward", channel_attention)
        monkeypatch.setattr(crm.SpatialAttention, "forward", spatial_attention)
        plain = model(x)
    assert math.isfinite(fast.abs().max().item())
    torch.testing.assert_close(fast, plain, **TOLERANCE)


@pytest.mark.parametrize("size_in, size_out", [((23, 30), (12, 15)), ((16, 32), (2, 4)), ((7, 5), (7, 5)), ((9, 13), (1, 1))])
def test_export_pooling_matches_adaptive_average_pooling(monkeypatch, size_in, size_out):
    x = torch.randn(2, 4, *size_in)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(crm.pool_to(x, size_out), F.adaptive_avg_pool2d(x, size_out), **TOLERANCE)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gate_attention_pools_as_adaptive_pooling(channels_last):
    torch.manual_seed(0)
    gate, x = GateAttention(32), torch.randn(2, 32, 5, 7) * 2
    if channels_last:
        gate, x = gate.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gate(x), gate_attention(gate, x), **TOLERANCE)


@pytest.mark.parametrize("size_in, size_out", [((16, 32), (2, 4)), ((24, 40), (3, 5)), ((7, 5), (7, 5)), ((9, 13), (1, 1))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_block_mean_matches_adaptive_average_pooling(size_in, size_out, channels_last):
    """The CRM's pooling off the CPU, when the C5 grid divides a stage's: the mean of whole blocks."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, *size_in)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.adaptive_avg_pool2d(x, size_out)
    torch.testing.assert_close(crm.block_mean(x, size_out), expected, **TOLERANCE)
    torch.testing.assert_close(crm.block_mean(x.bfloat16(), size_out).float(), expected, atol=2e-2, rtol=0)


@pytest.mark.parametrize("batch, source, out", [(1, (5, 7), (10, 14)), (2, (6, 4), (13, 9)), (1, (1, 1), (3, 2))])
def test_export_warping_matches_grid_sample(batch, source, out):
    """The gather-based sampling used in exports gives grid_sample's numbers, borders (and beyond) included."""
    torch.manual_seed(0)
    image = torch.randn(batch, 3, *source)
    grid = torch.rand(batch, *out, 2) * 2.6 - 1.3  # a quarter of the points outside the image
    expected = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    sampled = srm.gather_bilinear(image, grid)
    assert sampled.is_contiguous()
    torch.testing.assert_close(sampled, expected, **TOLERANCE)


def test_network_runs_channels_last_inside_and_answers_in_the_input_layout():
    model = build_model(variant="lite", num_classes=3).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        plain, last = model(x), model(x.contiguous(memory_format=torch.channels_last))
    assert plain.is_contiguous() and last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(plain, last, **TOLERANCE)


@pytest.mark.parametrize("variant", ["lite", "base"])  # torchvision's BasicBlock and Bottleneck
def test_folding_batchnorm_keeps_the_outputs(variant):
    torch.manual_seed(0)
    model = build_model(variant=variant, num_classes=5, aux=True).eval()
    with torch.no_grad():  # running statistics and affine parameters a trained network would have
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2), module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5), module.bias.normal_(0, 0.2)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, atol=1e-4 * expected.abs().max().item(), rtol=0)


def test_class_labels_are_the_argmax_over_classes_in_any_layout():
    from segrefine.engine.inference import class_labels

    logits = torch.randn(2, 7, 13, 17)
    expected = logits.argmax(1)
    assert torch.equal(class_labels(logits), expected)
    assert torch.equal(class_labels(logits.contiguous(memory_format=torch.channels_last)), expected)


@pytest.mark.parametrize("device", ["cpu", "cuda"])  # set up only, never run, on the device: no GPU needed
def test_every_inference_device_gets_batchnorm_folded(device):
    """`load` and `segrefine eval` set models up through `for_inference`: folded on CUDA as on CPU, same outputs."""
    from segrefine.engine.backends import for_inference

    torch.manual_seed(0)
    model = trained_looking(build_model(variant="lite", num_classes=5, aux=False), seed=0)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        folded = for_inference(model, torch.device(device))
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, atol=1e-4 * expected.abs().max().item(), rtol=0)
