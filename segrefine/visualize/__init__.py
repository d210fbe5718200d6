"""Pictures of data, predictions and model internals, each an H×W×3 uint8 RGB array (write with `write_png`)."""

from segrefine.visualize.attention import check_points, channel_picture, default_points, spatial_picture
from segrefine.visualize.capture import Capture, capture, require_attention, require_offsets
from segrefine.visualize.draw import read_image, write_png
from segrefine.visualize.memory import memory_picture, require_memory, slot_similarity
from segrefine.visualize.offsets import arrows_picture, flow_picture, offsets_picture, to_image_pixels
from segrefine.visualize.report import confusion_picture, iou_chart, read_report
from segrefine.visualize.samples import error_map, predict_labels, prediction_picture, sample_picture

__all__ = [
    "Capture",
    "arrows_picture",
    "capture",
    "channel_picture",
    "check_points",
    "confusion_picture",
    "default_points",
    "error_map",
    "flow_picture",
    "iou_chart",
    "memory_picture",
    "offsets_picture",
    "predict_labels",
    "prediction_picture",
    "read_image",
    "read_report",
    "require_attention",
    "require_memory",
    "require_offsets",
    "sample_picture",
    "slot_similarity",
    "spatial_picture",
    "to_image_pixels",
    "write_png",
]
