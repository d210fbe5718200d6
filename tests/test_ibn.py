"""IBN-a (`ibn=True`): instance norm on half the channels of the early blocks' first normalisation."""

from pathlib import Path

import pytest
import torch
from torch import nn

from segrefine.data import dataset_meta
from segrefine.hub import build_model, load_model, save_checkpoint
from segrefine.hub.flops import count_flops
from segrefine.models import ModelConfig
from segrefine.models.backbone import IBN_STAGES, InstanceBatchNorm
from segrefine.models.fold import fold_batchnorm
from trained_looking import trained_looking

TOY = dataset_meta("toy")


def _save(model: nn.Module, folder: Path) -> Path:
    return save_checkpoint(model, folder, dataset="toy", classes=TOY.classes, palette=TOY.palette)


def test_ibn_sits_in_the_first_normalisation_of_stages_one_to_three_only():
    backbone = build_model(variant="lite", num_classes=3, ibn=True).backbone
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(backbone, stage):
            assert isinstance(block.bn1, InstanceBatchNorm) == (stage in IBN_STAGES)
            assert isinstance(block.bn2, nn.BatchNorm2d)
    assert isinstance(backbone.bn1, nn.BatchNorm2d)  # the stem keeps its BatchNorm


def test_the_instance_half_removes_each_images_colour_cast():
    norm = trained_looking(InstanceBatchNorm(8))
    x = torch.randn(2, 8, 6, 5)
    gain, shift = torch.rand(1, 8, 1, 1) + 0.5, torch.randn(1, 8, 1, 1)
    with torch.no_grad():
        plain, cast = norm(x), norm(x * gain + shift)
    torch.testing.assert_close(cast[:, :4], plain[:, :4], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(cast[:, 4:], plain[:, 4:], atol=1e-2)


def test_a_batchnorm_trained_network_loads_into_ibn_split_at_the_half():
    plain = trained_looking(build_model(variant="lite", num_classes=3))
    ibn = build_model(variant="lite", num_classes=3, ibn=True)
    ibn.load_state_dict(plain.state_dict(), strict=True)
    bn, norm = plain.backbone.layer2[1].bn1, ibn.backbone.layer2[1].bn1
    half = bn.num_features // 2
    assert torch.equal(norm.IN.weight, bn.weight[:half]) and torch.equal(norm.IN.bias, bn.bias[:half])
    assert torch.equal(norm.BN.weight, bn.weight[half:]) and torch.equal(norm.BN.running_var, bn.running_var[half:])
    # untouched outside the IBN stages
    assert torch.equal(ibn.backbone.layer4[0].bn1.running_mean, plain.backbone.layer4[0].bn1.running_mean)


def test_ibn_checkpoint_round_trip(tmp_path):
    model = trained_looking(build_model(variant="lite", num_classes=TOY.num_classes, ibn=True))
    loaded, config = load_model(_save(model, tmp_path))
    assert config["model"]["ibn"] is True and loaded.config.ibn
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(image), model(image))


def test_ibn_changes_neither_macs_nor_parameters():
    plain, ibn = count_flops(ModelConfig(num_classes=11)), count_flops(ModelConfig(num_classes=11, ibn=True))
    assert ibn.gmacs == plain.gmacs and ibn.params == plain.params
    assert ibn.config["ibn"] and not plain.config["ibn"]


def test_batchnorm_folding_keeps_an_ibn_networks_outputs():
    model = trained_looking(build_model(variant="lite", num_classes=3, ibn=True, aux=False))
    image = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(image)
        torch.testing.assert_close(fold_batchnorm(model)(image), expected, atol=1e-4, rtol=1e-4)
    assert isinstance(model.backbone.layer1[0].bn1, InstanceBatchNorm)  # not folded: its statistics are the image's


class TinyIbn(nn.Module):
    """Convolution, InstanceBatchNorm, classifier: the IBN layer through the ONNX exporter in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ModelConfig(num_classes=3, ibn=True)
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), InstanceBatchNorm(16), nn.ReLU(), nn.Conv2d(16, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_ibn_onnx_export_agrees(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from segrefine.engine.export import FP32_AGREEMENT, export_model
    from segrefine.hub.onnx import load_onnx

    model = trained_looking(TinyIbn())
    report = export_model(model, {"model": model.config.to_dict()}, tmp_path / "model.onnx")
    assert report.agreement >= FP32_AGREEMENT
    onnx_model, _ = load_onnx(tmp_path / "model.onnx")
    image = torch.randn(2, 3, 37, 45) * 2 + 1  # another size and batch than the exporter traced
    with torch.inference_mode():
        torch.testing.assert_close(onnx_model(image), model(image), atol=1e-4, rtol=1e-4)
