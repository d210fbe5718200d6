"""ONNX export of a network: the graph with its config.json in the metadata, a self-check on onnxruntime, and static
int8 quantization (QDQ, per-channel weights) with onnxruntime's own tools, calibrated on a dataset's images or on
any folder of images. `export` takes a weights reference, `export_model` a loaded network.

Nothing appears at the target path unless the whole export, its checks and its quantization succeeded.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import fnmatch
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from segrefine.data import DATASETS, build_dataset, dataset_meta
from segrefine.data.meta import DatasetMeta
from segrefine.data.toy import render
from segrefine.data.transforms import normalize
from segrefine.engine.inference import class_labels
from segrefine.engine.progress import status
from segrefine.errors import SegrefineError, SettingError
from segrefine.hub import describe, load_for_dataset
from segrefine.hub.onnx import CONFIG_KEY, INPUT_NAME, ONNX_SUFFIX, OUTPUT_NAME, OnnxModel, is_onnx, require, session
from segrefine.imageio import IMAGE_SUFFIXES, atomic_write, folder_problem, read_image
from segrefine.models import OUTPUT_STRIDE, fold_batchnorm

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
FP32_AGREEMENT = 0.999  # share of pixels whose onnxruntime label must equal PyTorch's for an fp32 export
TRACE_SIZE = (256, 512)  # sample input of a dynamic-size export
# The self-check of a dynamic-size export runs at another size, no multiple of 32: a value frozen at the traced size
# shows there.
CHECK_SIZE = (200, 328)
CALIBRATION_IMAGES = 200
# Images onnxruntime calibrates at once: it keeps every intermediate output of each (about 200 MB for `lite` at
# 360×480) until it has reduced them to ranges.
CALIBRATION_STRIDE = 4
# The size a folder's calibration images are resized to for a dynamic-size export (calibration runs images of one
# size): the shipped model's CamVid size.
FOLDER_CALIBRATION_SIZE = (360, 480)
# Modules (fnmatch patterns over module names, e.g. "srm.*") whose operations stay in float in an int8 export. None by
# default: quantizing everything cost `lite-camvid` no mIoU on CamVid val (see the README's int8 measurements).
KEEP_FLOAT: tuple[str, ...] = ()
NAME_SCOPES = "pkg.torch.onnx.name_scopes"  # node metadata the exporter writes: the module path, then the op

Size = tuple[int, int]


@dataclass(frozen=True)
class ExportReport:
    """What `export` wrote and how well onnxruntime's labels agree with PyTorch's: the fp32 graph on the check image,
    the int8 one on the first calibration image."""

    path: Path
    size: Size | None  # None: any height and width of at least OUTPUT_STRIDE
    quantize: str | None
    agreement: float  # of the fp32 graph
    quantized_agreement: float | None
    float_nodes: int  # nodes an int8 export left in float


class ImageFolder(Dataset):
    """The images anywhere below `folder`, sorted by path, as dataset items {"image": 3×H×W uint8}; no labels."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            what = "is a file" if self.folder.exists() else "does not exist"
            raise SettingError(f"`calibration` {os.fspath(folder)} {what}: give a folder of images, or a dataset's name")
        self.files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise SettingError(f"`calibration` folder {os.fspath(folder)} holds no images ({', '.join(IMAGE_SUFFIXES)})")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": torch.from_numpy(read_image(self.files[index])).permute(2, 0, 1)}


class CalibrationImages:
    """onnxruntime's calibration reader over a dataset: `count` normalised images spread evenly over it, resized to
    `size` when the export has a fixed one."""

    def __init__(self, dataset: Dataset, count: int = CALIBRATION_IMAGES, size: Size | None = None) -> None:
        self.dataset, self.size = dataset, size
        self.indices = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(count, len(dataset)))})
        self.rewind()

    def __len__(self) -> int:
        return len(self.indices)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        image = self.dataset[self.indices[self.position]]["image"]
        self.position += 1
        x = normalize(image.unsqueeze(0))
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return {INPUT_NAME: x.numpy()}

    def rewind(self) -> None:
        self.position, self.end = 0, len(self.indices)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read only images start_index..end_index-1 next (onnxruntime calibrates a few at a time this way)."""
        self.position, self.end = start_index, min(end_index, len(self.indices))

    def stride(self, most: int = CALIBRATION_STRIDE) -> int:
        """The largest number of images up to `most` that divides the total (onnxruntime's condition)."""
        return next(s for s in range(min(most, len(self)), 0, -1) if len(self) % s == 0)


def check_export_options(
    out: str | os.PathLike, size: Size | None, quantize: str | None, calibration: Dataset | None, calibration_images: int,
    overwrite: bool = False,
) -> None:  # fmt: skip
    """Refuse what cannot be exported before any work; errors name the parameters of `export`."""
    if not is_onnx(out):
        raise SettingError(f"`out` must name a {ONNX_SUFFIX} file, got {os.fspath(out)!r}")
    if os.path.lexists(out) and not overwrite:
        raise SettingError(f"`out` {os.fspath(out)} already exists: replace it with `overwrite`, or choose another `out`")
    if problem := folder_problem(Path(out).parent):
        raise SettingError(f"`out` {os.fspath(out)} cannot be written: {problem}")
    if size is not None and not (
        isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise SettingError(f"`size` must be (height, width) in whole pixels, got {size!r}")
    if size is not None and min(size) < OUTPUT_STRIDE:
        raise SettingError(
            f"`size` {size[0]}x{size[1]} is smaller than the network's output stride: each side must be at least "
            f"{OUTPUT_STRIDE} pixels"
        )
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise SettingError(f"`quantize` must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if quantize is not None and calibration is None:
        raise SettingError(f"`quantize` {quantize} needs `calibration` images (a folder of images, or a dataset's split)")
    if quantize is None and calibration is not None:
        raise SettingError("`calibration` images are used only with `quantize` int8")
    if calibration_images < 1:
        raise SettingError(f"`calibration_images` must be at least 1, got {calibration_images}")
    if calibration is not None and len(calibration) == 0:
        raise SettingError("the `calibration` dataset has no images")


def to_onnx(model: nn.Module, config: Mapping[str, Any], path: str | os.PathLike, size: Size | None = None) -> None:
    """Write the eval-mode network as ONNX: input "image" B×3×H×W, output "logits" B×K×H×W, any batch size, and any
    height and width of at least OUTPUT_STRIDE unless `size` fixes them; `config` goes into the metadata."""
    _write_onnx(inference_copy(model), config, path, size)


def _write_onnx(model: nn.Module, config: Mapping[str, Any], path: str | os.PathLike, size: Size | None) -> None:
    """`to_onnx` of a model `inference_copy` already prepared."""
    onnx = require("onnx")
    require("onnxscript")  # the exporter's ONNX builder
    shapes = {0: torch.export.Dim("batch")}
    if size is None:
        shapes |= {2: torch.export.Dim("height", min=OUTPUT_STRIDE), 3: torch.export.Dim("width", min=OUTPUT_STRIDE)}
    # Batch 2: torch.export specialises a traced size of 1, and instance norm's shape arithmetic would fix the batch.
    sample = torch.zeros(2, 3, *(size or TRACE_SIZE))
    # The exporter reports its steps on stdout, which belongs to the command's own output.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            model, (sample,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=(shapes,), verbose=False,
        )  # fmt: skip
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {CONFIG_KEY: json.dumps(dict(config))})
    onnx.save(proto, os.fspath(path))


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` on the CPU in fp32 and eval mode with BatchNorm folded; the caller's model is left as it is.

    Folded here because onnxruntime folds a BatchNorm only into the convolution right before it, not one after a sum.
    """
    return fold_batchnorm(copy.deepcopy(model).cpu().float())


def check_image(size: Size) -> Tensor:
    """A normalised 1×3×H×W street-like scene for comparing labels."""
    image, _ = render(np.random.default_rng(0), *size)
    return normalize(torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0))


@torch.inference_mode()
def label_agreement(model: nn.Module, path: str | os.PathLike, image: Tensor) -> float:
    """Share of pixels of `image` on which the ONNX file in `path` gives the label the PyTorch `model` gives."""
    expected = class_labels(model(image))
    got = class_labels(OnnxModel(session(path), model.config)(image))
    return (expected == got).float().mean().item()


def float_nodes(graph: Any, patterns: Sequence[str]) -> list[str]:
    """Names of the exported graph's nodes that belong to a module matching one of `patterns` (fnmatch)."""
    found = []
    for node in graph.node:
        scopes = next((ast.literal_eval(p.value) for p in node.metadata_props if p.key == NAME_SCOPES), [])
        # The exporter records the module path of each node, innermost module second to last.
        if len(scopes) > 1 and any(fnmatch.fnmatchcase(scopes[-2], p) for p in patterns):
            found.append(node.name)
    return found


# Where the sampling coordinates come from: walking back from a gather's indices stops at these (feature maps).
_FEATURE_OPS = frozenset({"Conv", "MatMul", "Gemm", "Softmax", "Resize", "MaxPool", "GlobalAveragePool", "ReduceMean"})


def sampling_nodes(graph: Any) -> list[str]:
    """Names of the nodes of an exported graph that compute where the SRM's gathers sample and with what bilinear
    weights: coordinates of the input's size plus offsets. Quantized, they would be clipped to the range seen at the
    calibration size, and a dynamic-size export would sample wrongly, or fail, at any other size."""
    producer = {output: node for node in graph.node for output in node.output}
    found: set[str] = set()
    pending = [node.input[1] for node in graph.node if node.op_type in ("Gather", "GatherND", "GatherElements")]
    while pending:  # back from the indices, through the arithmetic that makes them
        node = producer.get(pending.pop())
        if node is not None and node.name not in found and node.op_type not in _FEATURE_OPS:
            found.add(node.name)
            pending.extend(node.input)
    made_by = {output for node in graph.node if node.name in found for output in node.output}
    constants = {tensor.name for tensor in graph.initializer}
    for node in graph.node:  # then forward: what is made of those alone (the corner weights)
        inputs = [name for name in node.input if name and name not in constants]
        if node.name not in found and inputs and all(name in made_by for name in inputs):
            found.add(node.name)
            made_by.update(node.output)
    return sorted(found)


def quantize_int8(
    source: str | os.PathLike, target: str | os.PathLike, images: CalibrationImages, keep_float: Sequence[str] = KEEP_FLOAT
) -> int:
    """Static int8 quantization of an fp32 export (QDQ, per-channel int8 weights, uint8 activations, min-max
    calibration on `images`) with the nodes of the `keep_float` modules left in float (and the SRM's sampling
    arithmetic, always: see `sampling_nodes`); returns the number of the former."""
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    shape_inference = require("onnxruntime.quantization.shape_inference")
    exported = onnx.load(os.fspath(source))  # once, for the nodes to leave in float and for its metadata
    excluded = float_nodes(exported.graph, keep_float)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp, "prepared.onnx")
        # onnxruntime's symbolic shape inference cannot follow the shape arithmetic of a dynamic-size export.
        shape_inference.quant_pre_process(os.fspath(source), os.fspath(prepared), skip_symbolic_shape=True)
        quantization.quantize_static(
            prepared, target, images, quant_format=quantization.QuantFormat.QDQ, per_channel=True,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=sorted({*excluded, *sampling_nodes(exported.graph)}),
            calibration_providers=["CPUExecutionProvider"],
            extra_options={"CalibStridedMinMax": images.stride()},
        )  # fmt: skip
    quantized = onnx.load(os.fspath(target))
    props = {p.key: p.value for p in exported.metadata_props}
    onnx.helper.set_model_props(quantized, {CONFIG_KEY: props[CONFIG_KEY]})
    onnx.save(quantized, os.fspath(target))
    return len(excluded)


def _calibration_data(
    calibration: Dataset | str | os.PathLike | None, data_root: str | os.PathLike | None, split: str,
    dataset_options: Mapping[str, Any] | None,
) -> tuple[Dataset | None, DatasetMeta | None]:
    """The images `calibration` names and, for a dataset, its metadata: a dataset's name (its `split` under
    `data_root`, built with `dataset_options`), any other text or path a folder of images, a Dataset as it is."""
    looks_like_path = isinstance(calibration, str) and (os.sep in calibration or calibration.startswith((".", "~", "/")))
    if isinstance(calibration, str) and not looks_like_path and not os.path.isdir(calibration):
        meta = dataset_meta(calibration, data_root)
        return build_dataset(calibration, data_root, split, **dict(dataset_options or {})), meta
    if not isinstance(calibration, (str, os.PathLike)):
        return calibration, None
    if data_root is not None or dataset_options:
        raise SettingError(
            f"`data_root` and `dataset_options` are for a calibration dataset, not the folder {os.fspath(calibration)}"
        )
    return ImageFolder(calibration), None


def export(
    weights: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    size: Size | None = None,
    quantize: str | None = None,
    calibration: Dataset | str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    calibration_split: str = "train",
    dataset_options: Mapping[str, Any] | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    keep_float: Sequence[str] = KEEP_FLOAT,
    overwrite: bool = False,
    progress: bool = False,
    on_message: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export `weights` (a PyTorch weights reference, default the shipped model) to the ONNX file `out`; the settings
    are those of `export_model`, but `calibration` may also name a dataset: its `calibration_split` under `data_root`,
    built with `dataset_options` (the model must have its classes). Everything is checked before the weights load;
    `on_message` then receives the line naming the model, `on_warning` any warning."""
    if weights is not None and is_onnx(weights):
        raise SettingError(f"`weights` {os.fspath(weights)} is already an ONNX file: export a PyTorch checkpoint")
    images, meta = _calibration_data(calibration, data_root, calibration_split, dataset_options)
    check_export_options(out, size, quantize, images, calibration_images, overwrite)
    model, config, ref = load_for_dataset(weights, meta, "cpu", warn=on_warning)
    if on_message is not None:
        on_message(describe(ref, config))
    return export_model(
        model, config, out, size=size, quantize=quantize, calibration=images, calibration_images=calibration_images,
        keep_float=keep_float, overwrite=overwrite, progress=progress,
    )  # fmt: skip


def export_model(
    model: nn.Module,
    config: Mapping[str, Any],
    out: str | os.PathLike,
    *,
    size: Size | None = None,
    quantize: str | None = None,
    calibration: Dataset | str | os.PathLike | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    keep_float: Sequence[str] = KEEP_FLOAT,
    overwrite: bool = False,
    progress: bool = False,
) -> ExportReport:
    """Export `model` (with its checkpoint `config`) to the ONNX file `out` and check it on onnxruntime.

    `size` (H, W) fixes the input size; without it the file takes any size of at least OUTPUT_STRIDE. The fp32 graph
    must give PyTorch's label on FP32_AGREEMENT of the check image's pixels. `quantize="int8"` writes the statically
    quantized graph instead, calibrated on `calibration_images` images of the `calibration` dataset, or of the images
    in the `calibration` folder (resized to `size`, or to FOLDER_CALIBRATION_SIZE without it). The export and
    the check use a CPU fp32 eval-mode copy of `model`; `model` itself is not changed. An existing `out` is replaced
    only with `overwrite`. `progress` shows each step on a terminal's stderr.
    """
    if isinstance(calibration, (str, os.PathLike)):
        calibration = ImageFolder(calibration)
    if isinstance(keep_float, str):  # one pattern, not its characters
        keep_float = (keep_float,)
    check_export_options(out, size, quantize, calibration, calibration_images, overwrite)
    model = inference_copy(model)
    image = check_image(size or CHECK_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp, "model.onnx")
        with status("exporting the network to ONNX", progress):
            _write_onnx(model, config, fp32, size)  # `model` is already an inference copy
        with status("checking the export's labels on onnxruntime", progress):
            agreement = label_agreement(model, fp32, image)
        if agreement < FP32_AGREEMENT:
            raise SegrefineError(
                f"the exported graph gives PyTorch's labels on only {100 * agreement:.2f}% of the check image's pixels "
                f"(at least {100 * FP32_AGREEMENT:.1f}% expected); nothing was written"
            )
        written, quantized_agreement, kept = fp32, None, 0
        if quantize is not None:
            written = Path(tmp, "model.int8.onnx")
            fill = FOLDER_CALIBRATION_SIZE if isinstance(calibration, ImageFolder) else None
            images = CalibrationImages(calibration, calibration_images, size or fill)
            with status(f"calibrating int8 on {len(images)} images", progress):
                kept = quantize_int8(fp32, written, images, keep_float)
            images.rewind()  # int8 is judged on an image like those it was calibrated for
            with status("checking the int8 labels on onnxruntime", progress):
                quantized_agreement = label_agreement(model, written, torch.from_numpy(images.get_next()[INPUT_NAME]))
        atomic_write(out, lambda target: shutil.copyfile(written, target))
    return ExportReport(Path(out), size, quantize, agreement, quantized_agreement, kept)
