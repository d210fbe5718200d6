"""The pictures of `segrefine visualize`, one call per kind. Each yields (file stem, picture) pairs for the caller to
write (`write_png`); settings and weights are checked, and the model loaded, before the first one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segrefine.data import build_dataset, dataset_meta
from segrefine.data.meta import DatasetMeta
from segrefine.engine.device import resolve_device
from segrefine.engine.inference import InferenceOptions, at_model_scale, inference_options
from segrefine.errors import SegrefineError, SettingError
from segrefine.hub import describe, load_for_dataset
from segrefine.hub.onnx import is_onnx
from segrefine.imageio import UnreadableInput
from segrefine.visualize.attention import channel_picture, check_points, default_points, spatial_picture
from segrefine.visualize.capture import capture, require_attention, require_offsets
from segrefine.visualize.draw import Image, read_image
from segrefine.visualize.memory import memory_picture, require_memory
from segrefine.visualize.offsets import offsets_picture
from segrefine.visualize.report import confusion_picture, iou_chart, read_report
from segrefine.visualize.samples import predict_labels, prediction_picture, sample_picture

Pictures = Iterator[tuple[str, Image]]
Say = Callable[[str], None] | None


def read_images(paths: Iterable[str | Path], on_skip: Say = None) -> dict[Path, Tensor]:
    """The images of `paths` that can be read, as uint8 3×H×W RGB; each other one is passed to `on_skip` with why,
    and so is a second image of the same file name (its pictures, named by it, would replace the first one's)."""
    images: dict[Path, Tensor] = {}
    for path in map(Path, paths):
        other = next((seen for seen in images if seen.stem == path.stem), None)
        if other is not None:
            if on_skip is not None and other.resolve() != path.resolve():
                on_skip(f"{path}: its pictures would replace those of {other}, named alike; draw it in a run of its own")
            continue
        try:
            images[path] = read_image(path)
        except UnreadableInput as e:
            if on_skip is not None:
                on_skip(str(e))
    return images


def load_network(
    weights: str | Path | None, device: str | torch.device = "auto", meta: DatasetMeta | None = None, *,
    check: Callable[[nn.Module], None] | None = None, on_message: Say = None, on_warning: Say = None,
) -> tuple[nn.Module, dict[str, Any], str]:
    """`load_for_dataset` for looking inside the PyTorch network (an .onnx file is refused), which must pass `check`;
    returns (model, config, the reference used)."""
    if weights is not None and is_onnx(weights):
        raise SettingError(f"`weights` {weights}: visualize looks inside the PyTorch network; pass its checkpoint, not an .onnx file")
    model, config, ref = load_for_dataset(weights, meta, resolve_device(device), warn=on_warning)
    if on_message is not None:
        on_message(describe(ref, config))
    try:
        if check is not None:
            check(model)
    except SegrefineError as e:
        raise SettingError(f"`weights` {ref}: {e}") from None
    return model, config, ref


def _samples(
    dataset: str, data_root: str | Path | None, split: str, num: int, dataset_options: Mapping[str, Any] | None
) -> tuple[DatasetMeta, list[dict[str, Any]]]:
    """(metadata, `num` items spread evenly over the split)."""
    if num < 1:
        raise SettingError(f"`num` must be at least 1, got {num}")
    meta = dataset_meta(dataset, data_root)
    data = build_dataset(dataset, data_root, split, **dict(dataset_options or {}))
    if len(data) == 0:
        raise SegrefineError(f"dataset {dataset} split {split} has no images")
    count = min(num, len(data))
    return meta, [data[i] for i in sorted({round(i * (len(data) - 1) / max(count - 1, 1)) for i in range(count)})]


def dataset_pictures(
    dataset: str, *, data_root: str | Path | None = None, split: str = "val", num: int = 4,
    dataset_options: Mapping[str, Any] | None = None,
) -> Pictures:
    """Image | ground truth | overlay for `num` samples spread over a dataset split."""
    meta, items = _samples(dataset, data_root, split, num, dataset_options)
    for item in items:
        title = f"{dataset} {split} | {item['name']}"
        yield f"dataset-{item['name']}", sample_picture(item["image"], item["label"], meta.classes, meta.palette, title)


def error_pictures(
    dataset: str, weights: str | Path | None = None, *, data_root: str | Path | None = None, split: str = "val",
    num: int = 4, dataset_options: Mapping[str, Any] | None = None, options: InferenceOptions | None = None,
    device: str | torch.device = "auto", on_message: Say = None, on_warning: Say = None, **settings: Any,
) -> Pictures:
    """Image | ground truth | prediction | error map for `num` samples of a dataset split; `options` (or its fields
    as keywords) say how the model runs, one image at a time."""
    options = inference_options(options, settings)
    meta, items = _samples(dataset, data_root, split, num, dataset_options)
    model, config, _ = load_network(weights, device, meta, on_message=on_message, on_warning=on_warning)
    options = at_model_scale(options, config)
    for item in items:
        label = item["label"]
        prediction = predict_labels(
            model, item["image"], options, num_classes=meta.num_classes, flip_pairs=meta.flip_pairs,
            out_size=tuple(label.shape[-2:]),
        )  # fmt: skip
        picture = prediction_picture(
            item["image"], label, prediction, meta.classes, meta.palette, f"{dataset} {split} | {item['name']}",
            meta.ignore_index,
        )  # fmt: skip
        yield f"errors-{item['name']}", picture


def offset_pictures(
    images: Mapping[Path, Tensor], weights: str | Path | None = None, *, device: str | torch.device = "auto",
    on_message: Say = None, on_warning: Say = None,
) -> Pictures:
    """The SRM offset field of each decoder level of each image (`read_images`): flow colours and sparse arrows."""
    model, config, ref = load_network(weights, device, check=require_offsets, on_message=on_message, on_warning=on_warning)
    for path, image in images.items():
        seen = capture(model, image, offsets=True)
        picture = offsets_picture(
            image, seen.offsets, prediction=seen.logits.argmax(0), palette=config["palette"],
            title=f"SRM offset fields | {path.name} | {ref}",
        )  # fmt: skip
        yield f"{path.stem}-offsets", picture


def attention_pictures(
    images: Mapping[Path, Tensor], weights: str | Path | None = None, *,
    points: Sequence[tuple[int, int]] | None = None, device: str | torch.device = "auto", on_message: Say = None,
    on_warning: Say = None,
) -> Pictures:
    """For each image (`read_images`): the CRM's channel attention, and its spatial attention from the query `points`
    (y, x in image pixels; default: the centres of the image's quarters)."""
    for image in images.values():
        check_points(points or [], *image.shape[-2:])
    model, _, _ = load_network(weights, device, check=require_attention, on_message=on_message, on_warning=on_warning)
    for path, image in images.items():
        seen = capture(model, image, attention=True)
        yield f"{path.stem}-channel-attention", channel_picture(seen.channel, f"CRM channel attention | {path.name}")
        chosen = points or default_points(*image.shape[-2:])
        title = f"CRM spatial attention | {path.name}"
        yield f"{path.stem}-spatial-attention", spatial_picture(image, seen.spatial, seen.grid, chosen, title)


def memory_pictures(weights: str | Path | None = None, *, on_message: Say = None, on_warning: Say = None) -> Pictures:
    """The cosine similarity between the class slots of an MCIBI class memory."""
    model, config, ref = load_network(weights, "cpu", check=require_memory, on_message=on_message, on_warning=on_warning)
    yield "memory-similarity", memory_picture(model, config["classes"], f"MCIBI class memory | {ref}")


def report_pictures(eval_json: str | Path, *, on_warning: Say = None) -> Pictures:
    """The per-class IoU chart of an eval report and, when it has one, its row-normalised confusion matrix."""
    eval_json = Path(eval_json)
    scores = read_report(eval_json)
    source = " ".join(str(scores[k]) for k in ("dataset", "split") if isinstance(scores.get(k), str))
    yield f"{eval_json.stem}-iou", iou_chart(scores, f"per-class IoU {source}".strip())
    if scores.get("confusion") is None:
        if on_warning is not None:
            on_warning(f'{eval_json} has no "confusion" matrix; drew the IoU chart only')
        return
    title = f"confusion matrix {source}".strip()
    yield f"{eval_json.stem}-confusion", confusion_picture(scores["confusion"], list(scores["per_class"]), title)
