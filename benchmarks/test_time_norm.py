"""Test-time normalisation: the early backbone stages normalised with each image's own statistics, across cameras.

    python benchmarks/test_time_norm.py --camvid-root ../shared/data/camvid --shared ../shared/data \
        --weights lite-camvid runs/ablation/photometric-none-seed0/checkpoints/last --alpha 0 0.5 1

For each model and α, every BatchNorm of the stem and of the first three stages normalises with statistics mixed as
(1 - α) · the training set's running statistics + α · the image's own (its mean and variance over the pixels, per
channel; the variance of the mixture); α = 0 is the model as trained, α = 1 instance normalisation at test time
(prediction-time normalisation: Nado et al., 2020; Schneider et al., 2020). Nothing is retrained. Each setting is
scored as benchmarks/cross_camera.py scores a model: CamVid val, every other camera's labelled frames, the street
photo. Results go to benchmarks/results/test-time-norm.json (`--results`), keyed by weights reference and α.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from segrefine.hub import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
from cross_camera import model_scores, print_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "test-time-norm.json"
EARLY = ("bn1", "layer1", "layer2", "layer3")  # the stem's BatchNorm and the first three stages


class MixedNorm(nn.Module):
    """A trained BatchNorm that normalises with its running statistics mixed with the input image's own."""

    def __init__(self, bn: nn.BatchNorm2d, alpha: float) -> None:
        super().__init__()
        self.bn, self.alpha = bn, alpha

    def forward(self, x: Tensor) -> Tensor:
        bn, a = self.bn, self.alpha
        shape = (1, -1, 1, 1)
        running_mean, running_var = bn.running_mean.view(shape), bn.running_var.view(shape)
        image_var, image_mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        mean = (1 - a) * running_mean + a * image_mean
        var = (1 - a) * running_var + a * image_var + a * (1 - a) * (image_mean - running_mean) ** 2
        return (x - mean) * torch.rsqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def test_time_norm(model: nn.Module, alpha: float) -> nn.Module:
    """A copy of `model` whose early backbone BatchNorms mix in each image's statistics with weight `alpha`."""
    model = copy.deepcopy(model).eval()
    if alpha == 0:
        return model
    for prefix in EARLY:
        root = model.backbone.get_submodule(prefix)
        if isinstance(root, nn.BatchNorm2d):
            model.backbone.bn1 = MixedNorm(root, alpha)
            continue
        for name, module in list(root.named_modules()):
            if isinstance(module, nn.BatchNorm2d) and name:
                parent, _, leaf = name.rpartition(".")
                setattr(root.get_submodule(parent) if parent else root, leaf, MixedNorm(module, alpha))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["lite-camvid"], help="weights references (default: shipped)")
    parser.add_argument("--alpha", nargs="+", type=float, default=[0.0, 0.5, 1.0], help="weights of the image's statistics")
    parser.add_argument("--camvid-root", type=Path, required=True)
    parser.add_argument("--shared", type=Path, required=True, help="folder of other cameras' labelled sets")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    for weights in args.weights:
        model, config = load_model(weights)
        for alpha in args.alpha:
            key = f"{weights} alpha={alpha:g}"
            if key in results:
                continue
            results[key] = model_scores(test_time_norm(model, alpha), config, args.camvid_root, args.shared)
            print_table(key, results[key])
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
