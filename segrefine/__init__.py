"""segrefine: semantic segmentation with Semantic and Contextual Refinement Modules."""

__version__ = "0.1.0"

from segrefine.errors import SegrefineError  # noqa: E402

__all__ = ["__version__", "SegrefineError"]
