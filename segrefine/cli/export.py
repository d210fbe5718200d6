"""`segrefine export`: a checkpoint as one ONNX file (fp32 or static int8) that predict and eval take as --weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from segrefine.cli.options import CheckpointWeights, parse_key_values, parse_size, say, warning
from segrefine.engine.export import CALIBRATION_IMAGES, FORMATS, QUANTIZATIONS, export as export_weights
from segrefine.errors import SegrefineError, SettingError, flag


def export(
    out: Annotated[Path, typer.Option("--out", help="The .onnx file to write.", show_default=False)],
    weights: CheckpointWeights = None,
    file_format: Annotated[Literal[FORMATS], typer.Option("--format", help="Output format.")] = "onnx",
    size: Annotated[
        Optional[tuple],
        typer.Option(
            "--size", help="Fix the input size HxW (default: any size, each side at least 32).", metavar="<HxW>",
            parser=lambda text: parse_size(text, "--size"),
        ),
    ] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Take any input size, each side at least 32 (the default).")] = False,
    quantize: Annotated[
        Optional[Literal[QUANTIZATIONS]], typer.Option("--quantize", help="Static int8 quantization (needs --calibration).")
    ] = None,
    calibration: Annotated[
        Optional[str],
        typer.Option(
            "--calibration",
            help="Images that calibrate int8: any folder of images (no labels needed), or a dataset (see `segrefine datasets`) with --data-root.",
        ),
    ] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Root folder of the calibration dataset.")] = None,
    calibration_split: Annotated[str, typer.Option("--calibration-split", help="Split the calibration images come from.")] = "train",
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", min=1, help="Calibration images, spread evenly over the split or folder.")
    ] = CALIBRATION_IMAGES,
    dataset_option: Annotated[
        Optional[list[str]], typer.Option("--dataset-option", help="Calibration dataset option KEY=VALUE (repeatable).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file (default: refuse).")] = False,
) -> None:
    """Export a model to ONNX for onnxruntime, with its class names and palette in the file's metadata.

    The export checks itself: onnxruntime must give PyTorch's label on at least 99.9% of a check image's pixels (fp32);
    an int8 export also reports its agreement on a calibration image. int8 calibrates on --calibration: any folder of
    images (resized to --size, or to 360x480), or a dataset's split (whose classes must be the model's). The file is
    written only when everything succeeded; pass it to predict and eval as --weights.
    """
    if size is not None and dynamic:
        raise SegrefineError("give either --size HxW (a fixed input size) or --dynamic (any size), not both")
    try:
        report = export_weights(
            weights, out, size=size, quantize=quantize, calibration=calibration, data_root=data_root,
            calibration_split=calibration_split, dataset_options=parse_key_values(dataset_option, "--dataset-option"),
            calibration_images=calibration_images, overwrite=overwrite, progress=True,
            on_message=say, on_warning=warning,
        )  # fmt: skip
    except SettingError as e:
        raise e.worded(flag) from None
    shape = f"{size[0]}x{size[1]}" if size else "any size from 32x32"
    line = f"wrote {report.path} ({file_format}, {quantize or 'fp32'}, {shape}): onnxruntime gives PyTorch's labels on "
    if report.quantized_agreement is None:
        line += f"{100 * report.agreement:.2f}% of the check image's pixels"
    else:
        line += (
            f"{100 * report.quantized_agreement:.2f}% of a calibration image's pixels in int8 "
            f"(fp32: {100 * report.agreement:.2f}% of the check image's)"
        )
    typer.echo(line)
