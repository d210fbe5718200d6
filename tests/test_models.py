import itertools

import pytest
import torch
import torch.nn.functional as F

from segrefine.errors import SegrefineError
from segrefine import ModelConfig, build_model
from segrefine.models.crm import ChannelAttention, ContextualRefinement, SpatialAttention
from segrefine.models.srm import SemanticRefinement, aggregate_offsets, warp

ODD = (45, 71)  # not a multiple of 32


@pytest.mark.parametrize(
    "srm,crm,memory,kernel,mask",
    [
        (srm, crm, memory, 3, "softmax")
        for srm, crm, memory in itertools.product(("bilinear", "flow", "full"), ("off", "gate", "attention"), (False, True))
    ]
    + [("full", "attention", False, k, m) for k in (1, 5) for m in ("softmax", "sigmoid")],
)
def test_lite_switch_combinations_shapes(srm, crm, memory, kernel, mask):
    model = build_model(variant="lite", num_classes=5, srm=srm, crm=crm, memory=memory, srm_kernel=kernel, srm_mask=mask)
    x = torch.randn(2, 3, *ODD)
    model.train()
    out = model(x)
    assert out["out"].shape == (2, 5, *ODD)
    assert out["aux"].shape == (2, 5, *ODD)
    assert ("memory_logits" in out) == memory
    if memory:
        assert out["memory_logits"].shape == (2, 5, *ODD)
        assert out["features"].shape[:2] == (2, 128)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 5, *ODD)


@pytest.mark.parametrize("variant", ["base", "large"])
@pytest.mark.parametrize("memory", [False, True])
def test_big_variants_shapes(variant, memory):
    model = build_model(variant=variant, num_classes=3, memory=memory).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 50)).shape == (1, 3, 37, 50)


def test_bad_switch_values_are_user_errors():
    with pytest.raises(SegrefineError, match="variant"):
        ModelConfig(variant="huge")
    with pytest.raises(SegrefineError, match="srm_kernel"):
        ModelConfig(srm_kernel=4)
    with pytest.raises(SegrefineError, match="unknown model config keys: bogus"):
        ModelConfig.from_dict({"bogus": 1})
    for classes in (0, 255, 300):  # labels are uint8 and 255 is no class: class 299 would come out as 43
        with pytest.raises(SegrefineError, match=f"^num_classes must be 1-254, got {classes}$"):
            ModelConfig(num_classes=classes)
    assert ModelConfig(num_classes=254).num_classes == 254
    assert ModelConfig.from_dict(ModelConfig(memory=True).to_dict()) == ModelConfig(memory=True)


@pytest.mark.parametrize("mode", ["flow", "full"])
@pytest.mark.parametrize("fine,coarse", [((24, 32), (12, 16)), ((23, 31), (12, 16)), ((45, 71), (12, 18))])
def test_untrained_srm_is_bilinear_upsampling(mode, fine, coarse):
    srm = SemanticRefinement(16, mode=mode)
    f, c = torch.randn(2, 16, *fine), torch.randn(2, 16, *coarse)
    expected = F.interpolate(c, size=fine, mode="bilinear", align_corners=False)
    torch.testing.assert_close(srm(f, c), expected, atol=1e-5, rtol=0)


def test_untrained_full_network_equals_bilinear_baseline():
    full = build_model(num_classes=4, srm="full").eval()
    baseline = build_model(num_classes=4, srm="bilinear").eval()
    missing, unexpected = baseline.load_state_dict(full.state_dict(), strict=False)
    assert not missing and all(".srm." in k or k.startswith("srm.") for k in unexpected)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(full(x), baseline(x), atol=1e-4, rtol=0)


def test_offset_shifts_by_the_expected_pixels():
    source = torch.arange(8 * 10, dtype=torch.float32).view(1, 1, 8, 10)
    offset = torch.zeros(1, 2, 8, 10)
    offset[:, 0] = 2.0  # x: sample two pixels to the right
    shifted = warp(source, offset)
    torch.testing.assert_close(shifted[..., :-2], source[..., 2:])
    offset = torch.zeros(1, 2, 8, 10)
    offset[:, 1] = -1.0  # y: sample one pixel up
    torch.testing.assert_close(warp(source, offset)[..., 1:, :], source[..., :-1, :])


def test_offsets_are_in_fine_pixel_units_when_upsampling():
    coarse = torch.randn(1, 3, 6, 8)
    offset = torch.zeros(1, 2, 12, 16)
    offset[:, 0] = 4.0  # four fine pixels = two coarse pixels
    expected = F.interpolate(coarse, size=(12, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(warp(coarse, offset)[..., 1:-5], expected[..., 5:-1], atol=1e-5, rtol=0)


def test_offset_aggregation_weights_the_neighbourhood():
    offset = torch.zeros(1, 2, 5, 5)
    offset[0, 0, 2, 3] = 1.0  # one non-zero initial offset, right of the centre pixel
    uniform = torch.full((1, 9, 5, 5), 1 / 9)
    assert aggregate_offsets(offset, uniform, 3)[0, 0, 2, 2] == pytest.approx(1 / 9)
    pick_right = torch.zeros(1, 9, 5, 5)
    pick_right[:, 5] = 1.0  # index 5 of a row-major 3×3 window is (0, +1)
    torch.testing.assert_close(aggregate_offsets(offset, pick_right, 3)[0, 0, 2, 2], torch.tensor(1.0))
    constant = torch.full((1, 2, 5, 5), 0.7)
    torch.testing.assert_close(aggregate_offsets(constant, uniform, 3), constant)  # replicate padding at borders


def test_crm_attention_starts_as_identity_on_its_residual():
    z = torch.randn(2, 32, 4, 6)
    torch.testing.assert_close(ChannelAttention()(z), z)
    torch.testing.assert_close(SpatialAttention(32)(z), z)
    crm = ContextualRefinement((8, 16, 24, 32), 8, 16, "attention").eval()
    feats = tuple(torch.randn(1, c, s, s) for c, s in zip((8, 16, 24, 32), (16, 8, 4, 2)))
    with torch.no_grad():
        torch.testing.assert_close(crm(feats), crm.project(crm.aggregate(feats)))
        crm.channel_attention.gamma.fill_(1.0)
        assert not torch.allclose(crm(feats), crm.project(crm.aggregate(feats)))


def test_spatial_affinity_is_computed_at_one_thirty_second():
    crm = ContextualRefinement((8, 16, 24, 32), 8, 16, "attention")
    z = crm.aggregate(tuple(torch.randn(1, c, s, 2 * s) for c, s in zip((8, 16, 24, 32), (32, 16, 8, 4))))
    assert crm.spatial_attention.affinity(z).shape == (1, 32, 32)  # 4×8 positions


def test_eval_model_exports_with_torch_export():
    model = build_model(num_classes=3, memory=True).eval()
    x = torch.randn(1, 3, 64, 96)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), atol=1e-4, rtol=1e-4)


def test_untrained_fusion_srm_is_the_bilinear_fusion():
    """srm_fusion adds an SRM per coarse pyramid level; untrained (zero offsets) it is exactly bilinear upsampling."""
    torch.manual_seed(0)
    plain = build_model(num_classes=4).eval()
    aligned = build_model(num_classes=4, srm_fusion=True).eval()
    missing, unexpected = aligned.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("fusion_srm.") for k in missing)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(aligned(x), plain(x), atol=1e-5)
    assert build_model(num_classes=4, srm="bilinear", srm_fusion=True).fusion_srm is None  # nothing to align with


def test_local_offsets_stay_within_one_coarse_cell():
    srm = SemanticRefinement(8, "full", 3, "softmax", local=True)
    with torch.no_grad():
        srm.offset.bias.copy_(torch.tensor([50.0, -50.0]))  # far beyond a cell, as an unbounded module could learn
    fine, coarse = torch.randn(1, 8, 16, 24), torch.randn(1, 8, 8, 6)  # cells of 2 (y) × 4 (x) fine pixels
    offsets = srm.offsets(fine, coarse)
    assert offsets[:, 0].abs().max() <= 4 + 1e-5 and offsets[:, 1].abs().max() <= 2 + 1e-5
    assert offsets[:, 0].abs().max() > 3.9  # saturates at the bound, not at zero
    plain = SemanticRefinement(8, "full", 3, "softmax", local=True)  # untrained: exactly bilinear still
    assert torch.allclose(plain(fine, coarse), F.interpolate(coarse, size=(16, 24), mode="bilinear", align_corners=False), atol=1e-6)


def test_the_warp_grid_stays_fp32_under_bf16_autocast():
    from segrefine.models.srm import warp

    width = 300
    ramp = torch.linspace(0, 1, width).expand(1, 1, 4, width).contiguous()  # value = position: errors show as value
    offset = torch.full((1, 2, 4, width), 0.25)
    expected = warp(ramp, offset)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = warp(ramp, offset.bfloat16())  # the offset convolution's output under autocast
    torch.testing.assert_close(got.float(), expected, atol=1e-5, rtol=0)
