"""segrefine: semantic segmentation with Semantic and Contextual Refinement Modules.

    import segrefine

    model = segrefine.build_model("lite", 19)                      # a network (SegRefineModel, an nn.Module)
    model = segrefine.SegRefineModel.from_pretrained("lite-camvid")  # trained weights, loaded strictly
    predictor = segrefine.load("lite-camvid")                      # predict arrays, files, folders and videos
    report = segrefine.evaluate("lite-camvid", "camvid", data_root="data/camvid", split="val")
    segrefine.export("lite-camvid", "lite.onnx")                    # an ONNX file for onnxruntime (fp32 or int8)
    run_dir = segrefine.train(segrefine.TrainConfig.from_recipe("toy", iters=50))
    run_dir = segrefine.resume(run_dir)                            # continue a run from its last checkpoint
"""

__version__ = "0.1.0"

import importlib  # noqa: E402
from pathlib import Path  # noqa: E402

from segrefine.errors import SegrefineError  # noqa: E402

# A 360×480 CamVid street photo shipped with the package (`segrefine predict --example`); licence beside it.
EXAMPLE_IMAGE = Path(__file__).with_name("example") / "camvid-street.png"

# Public name -> the module defining it. They are imported on first use, so `import segrefine` (and the CLI's
# --help and --version) does not load torch.
_EXPORTS = {
    "build_model": "segrefine.hub.pretrained",
    "SegRefineModel": "segrefine.hub.model",
    "ModelConfig": "segrefine.models.config",
    "load": "segrefine.engine.predictor",
    "Predictor": "segrefine.engine.predictor",
    "PredictReport": "segrefine.engine.predict_files",
    "evaluate": "segrefine.engine.evaluate",
    "export": "segrefine.engine.export",
    "train": "segrefine.engine.train",
    "resume": "segrefine.engine.train",
    "TrainConfig": "segrefine.engine.config",
}

__all__ = ["__version__", "SegrefineError", "EXAMPLE_IMAGE", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'segrefine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
