"""The SRM's and CRM's fast paths give the outputs of the plain formulations they replaced (within 1e-5)."""

import math

import pytest
import torch
import torch.nn.functional as F

from segrefine import build_model
from segrefine.models import crm, srm
from segrefine.models.crm import ChannelAttention, SpatialAttention

TOLERANCE = dict(atol=1e-5, rtol=0)


def unfold_aggregate(offset, mask, kernel):
    """The neighbourhood sum written with F.unfold, as the method describes it."""
    if kernel == 1:
        return offset * mask
    b, _, h, w = offset.shape
    padded = F.pad(offset, [kernel // 2] * 4, mode="replicate")
    neighbours = F.unfold(padded, kernel).view(b, 2, kernel * kernel, h, w)
    return (neighbours * mask.unsqueeze(1)).sum(dim=2)


def channel_attention(module, x):
    """Channel attention through its explicit C×C affinity."""
    return x + module.gamma * (module.affinity(x) @ x.flatten(2)).view_as(x)


def spatial_attention(module, x):
    """Spatial attention through its explicit N×N affinity."""
    return x + module.gamma * (module.value(x).flatten(2) @ module.affinity(x).transpose(1, 2)).view_as(x)


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


@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_network_matches_the_plain_formulations(monkeypatch, channels_last):
    torch.manual_seed(0)
    model = build_model(variant="lite", num_classes=5).eval()
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
        monkeypatch.setattr(srm, "aggregate_offsets", unfold_aggregate)
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
