"""Pictures of data, predictions and model internals, each an H×W×3 uint8 RGB array (write with `write_png`)."""

from segrefine.visualize.attention import check_points, channel_picture, default_points, spatial_picture
from segrefine.visualize.capture import Capture, capture, require_attention, require_offsets
from segrefine.visualize.draw import read_image, write_png
from segrefine.visualize.memory import memory_picture, require_memory, slot_similarity
from segrefine.visualize.pictures import (
    attention_pictures, dataset_pictures, error_pictures, load_network, memory_pictures, offset_pictures, read_images,
    report_pictures,
)  # fmt: skip
from segrefine.visualize.offsets import arrows_picture, flow_picture, offsets_picture, to_image_pixels
from segrefine.visualize.report import confusion_picture, iou_chart, read_report
from segrefine.visualize.samples import error_map, predict_labels, prediction_picture, sample_picture

__all__ = [
    "arrows_picture",
    "attention_pictures",
    "Capture",
    "capture",
    "channel_picture",
    "check_points",
    "confusion_picture",
    "dataset_pictures",
    "default_points",
    "error_map",
    "error_pictures",
    "flow_picture",
    "iou_chart",
    "load_network",
    "memory_picture",
    "memory_pictures",
    "offset_pictures",
    "offsets_picture",
    "predict_labels",
    "prediction_picture",
    "read_image",
    "read_images",
    "read_report",
    "report_pictures",
    "require_attention",
    "require_memory",
    "require_offsets",
    "sample_picture",
    "slot_similarity",
    "spatial_picture",
    "to_image_pixels",
    "write_png",
]
