"""ImageNet initialisation of the backbone from the Hub's timm repos (served by the loopback Hub stand-in)."""

import pytest
import torch
import torchvision
from safetensors.torch import save, save_file

from segrefine.engine.train import _init_backbone
from segrefine.errors import SegrefineError
from segrefine import build_model
from test_hub import hub  # noqa: F401  (fixture; `hf` comes from conftest)


def _serve(hub, repo: str, state: dict) -> None:  # noqa: F811
    hub.add_repo(repo, {"model.safetensors": save(state), "config.json": b'{"architecture": "resnet"}'})


def test_imagenet_weights_load_strictly_into_the_backbone(hub):  # noqa: F811
    classifier = torchvision.models.resnet18()
    _serve(hub, "timm/resnet18.a1_in1k", classifier.state_dict())
    model = build_model(variant="lite", num_classes=3)
    _init_backbone(model, "imagenet")
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, classifier.state_dict()[key]), key


def test_backbone_of_the_wrong_architecture_is_refused_naming_keys(hub):  # noqa: F811
    _serve(hub, "timm/resnet50.a1_in1k", torchvision.models.resnet50().state_dict())
    with pytest.raises(SegrefineError, match=r"unexpected keys \(layer1\.0\.bn3\.bias.*shape mismatches \(layer1\.0\.conv1\.weight 64×64×1×1 vs 64×64×3×3"):
        _init_backbone(build_model(variant="lite", num_classes=3), "timm/resnet50.a1_in1k")


def test_backbone_from_a_local_safetensors_file(tmp_path):
    classifier = torchvision.models.resnet18()
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(path))
    model = build_model(variant="lite", num_classes=3)
    _init_backbone(model, str(path))
    assert torch.equal(model.backbone.conv1.weight, classifier.conv1.weight)
