"""segrefine: semantic segmentation with Semantic and Contextual Refinement Modules."""

__version__ = "0.1.0"

from segrefine.errors import SegrefineError  # noqa: E402

__all__ = ["__version__", "SegrefineError", "load", "Predictor"]


def __getattr__(name: str):
    # `segrefine.load` / `segrefine.Predictor` import torch lazily, so `import segrefine` stays cheap.
    if name in ("load", "Predictor"):
        from segrefine.engine import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'segrefine' has no attribute {name!r}")
