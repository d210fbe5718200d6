"""`segrefine export`: a checkpoint as one ONNX file (fp32 or static int8) that predict and eval take as --weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from segrefine.cli.options import CheckpointWeights, load_weights, parse_key_values, parse_size
from segrefine.errors import SegrefineError


def export(
    out: Annotated[Path, typer.Option("--out", help="The .onnx file to write.", show_default=False)],
    weights: CheckpointWeights = None,
    file_format: Annotated[Literal["onnx"], typer.Option("--format", help="Output format.")] = "onnx",
    size: Annotated[
        Optional[str], typer.Option("--size", help="Fix the input size HxW (default: any size, each side at least 32).")
    ] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Take any input size, each side at least 32 (the default).")] = False,
    quantize: Annotated[
        Optional[Literal["int8"]], typer.Option("--quantize", help="Static int8 quantization (needs --calibration).")
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
    ] = 200,
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
    from segrefine.data import DATASETS, build_dataset, dataset_meta
    from segrefine.engine.export import ImageFolder, check_export_options, export as export_model
    from segrefine.hub.onnx import is_onnx

    if size is not None and dynamic:
        raise SegrefineError("give either --size HxW (a fixed input size) or --dynamic (any size), not both")
    if weights is not None and is_onnx(weights):
        raise SegrefineError(f"--weights {weights} is already an ONNX file: export a PyTorch checkpoint")
    fixed = parse_size(size, "--size") if size is not None else None
    options = parse_key_values(dataset_option, "--dataset-option")
    meta, images = None, None
    if calibration is not None and calibration not in DATASETS and Path(calibration).is_dir():
        if data_root is not None or options:
            raise SegrefineError(f"--data-root and --dataset-option are for a calibration dataset, not the folder {calibration}")
        images = ImageFolder(calibration)
    elif calibration is not None:
        meta = dataset_meta(calibration, data_root)
        images = build_dataset(calibration, data_root, calibration_split, **options)
    check_export_options(out, fixed, quantize, images, calibration_images, overwrite)  # before the model is loaded and announced
    model, config, _ = load_weights(weights, "cpu", meta)
    report = export_model(
        model, config, out, size=fixed, quantize=quantize, calibration=images,
        calibration_images=calibration_images, overwrite=overwrite, progress=True,
    )  # fmt: skip
    shape = f"{fixed[0]}x{fixed[1]}" if fixed else "any size from 32x32"
    line = f"wrote {report.path} ({file_format}, {quantize or 'fp32'}, {shape}): onnxruntime gives PyTorch's labels on "
    if report.quantized_agreement is None:
        line += f"{100 * report.agreement:.2f}% of the check image's pixels"
    else:
        line += (
            f"{100 * report.quantized_agreement:.2f}% of a calibration image's pixels in int8 "
            f"(fp32: {100 * report.agreement:.2f}% of the check image's)"
        )
    typer.echo(line)
