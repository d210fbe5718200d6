"""`segrefine visualize`: PNG pictures of data, predictions, SRM offsets, CRM attention, the memory and eval reports.

A thin layer over `segrefine.visualize`: each subcommand loads what it needs, draws, writes PNG files atomically
into --out and prints the path of every file written. Images that cannot be read are reported and skipped, and the
exit code is then 1 (as for predict).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from segrefine.cli.options import (
    CheckpointWeights, DataRoot, DatasetName, DatasetOptions, Device, flag_settings, load_weights, output_folder,
    parse_key_values, with_config_flags,
)  # fmt: skip
from segrefine.engine.inference import InferenceOptions
from segrefine.errors import SegrefineError

app = typer.Typer(
    name="visualize",
    help="Look inside: dataset samples, errors, SRM offset fields, CRM attention, the class memory, eval reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_OUT = Path("runs/visualize")

Out = Annotated[Path, typer.Option("--out", help="Folder for the PNG files.", parser=output_folder)]
Split = Annotated[str, typer.Option("--split", help="Dataset split.")]
Num = Annotated[int, typer.Option("--num", min=1, help="Number of samples, spread evenly over the split.")]
Images = Annotated[list[Path], typer.Argument(help="Image files.", show_default=False)]


def parse_points(text: str) -> list[tuple[int, int]]:
    """Parser of --points: 'y,x;y,x' (image pixels) -> [(y, x), ...]; empty: the default points."""
    try:
        return [(int(y), int(x)) for y, x in (item.split(",") for item in text.split(";"))] if text else []
    except ValueError:  # not two parts, or not integers
        raise SegrefineError(f"--points must be y,x pairs separated by ';' (e.g. 100,200;300,50), got {text!r}") from None


def _load(weights: str | None, device: str, dataset: Any = None) -> tuple[Any, dict[str, Any], str]:
    from segrefine.engine.device import resolve_device
    from segrefine.hub.onnx import is_onnx

    if weights is not None and is_onnx(weights):
        raise SegrefineError(f"--weights {weights}: visualize looks inside the PyTorch network; pass its checkpoint, not an .onnx file")
    return load_weights(weights, resolve_device(device), dataset)


def _checked(weights: str, check: Any, model: Any) -> None:
    """Run a model check, naming the weights in its error."""
    try:
        check(model)
    except SegrefineError as e:
        raise SegrefineError(f"--weights {weights}: {e}") from None


def _read_images(images: list[Path]) -> dict[Path, Any]:
    """The images that can be read, before the model is loaded; each other one is reported as skipped (as predict
    does), and the command then ends with exit code 1 (`_end`)."""
    from segrefine.imageio import UnreadableInput
    from segrefine.visualize import read_image

    pictures = {}
    for path in images:
        try:
            pictures[path] = read_image(path)
        except UnreadableInput as e:
            print(f"segrefine: skipped: {e}", file=sys.stderr)
    if not pictures:
        raise typer.Exit(1)
    return pictures


def _end(images: list[Path], pictures: dict[Path, Any]) -> None:
    if len(pictures) < len(images):
        raise typer.Exit(1)


def _save(out: Path, name: str, picture: Any) -> None:
    from segrefine.visualize import write_png

    typer.echo(str(write_png(out / f"{name}.png", picture)))


def _samples(dataset: str, data_root: Path | None, split: str, num: int, options: list[str] | None):
    """(metadata, the chosen items): `num` indices spread evenly over the split."""
    from segrefine.data import build_dataset, dataset_meta

    meta = dataset_meta(dataset, data_root)
    data = build_dataset(dataset, data_root, split, **parse_key_values(options, "--dataset-option"))
    if len(data) == 0:
        raise SegrefineError(f"dataset {dataset} split {split} has no images")
    count = min(num, len(data))
    indices = sorted({round(i * (len(data) - 1) / max(count - 1, 1)) for i in range(count)})
    return meta, (data[i] for i in indices)


@app.command("dataset")
def dataset(
    dataset: DatasetName,
    data_root: DataRoot = None,
    split: Split = "val",
    num: Num = 4,
    dataset_option: DatasetOptions = None,
    out: Out = DEFAULT_OUT,
) -> None:
    """Image | ground truth | overlay for samples of any dataset adapter."""
    from segrefine.visualize import sample_picture

    meta, items = _samples(dataset, data_root, split, num, dataset_option)
    for item in items:
        picture = sample_picture(item["image"], item["label"], meta.classes, meta.palette, f"{dataset} {split} | {item['name']}")
        _save(out, f"dataset-{item['name']}", picture)


@app.command("errors")
def errors(
    dataset: DatasetName,
    weights: CheckpointWeights = None,
    data_root: DataRoot = None,
    split: Split = "val",
    num: Num = 4,
    dataset_option: DatasetOptions = None,
    device: Device = "auto",
    out: Out = DEFAULT_OUT,
    **values: Any,
) -> None:
    """Image | ground truth | prediction | error map (correct, wrong, ignore) for samples of a dataset split."""
    from segrefine.visualize import predict_labels, prediction_picture

    options = InferenceOptions(**flag_settings(values, (InferenceOptions,), _NOT_INFERENCE_FLAGS))
    meta, items = _samples(dataset, data_root, split, num, dataset_option)
    model, config, weights = _load(weights, device, meta)
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
        _save(out, f"errors-{item['name']}", picture)


# The PyTorch network as loaded, one image at a time: only the inference modes apply.
_NOT_INFERENCE_FLAGS = ("batch_size", "precision", "backend", "compile")
with_config_flags(errors, (InferenceOptions,), _NOT_INFERENCE_FLAGS, defaults=True)


@app.command("offsets")
def offsets(images: Images, weights: CheckpointWeights = None, device: Device = "auto", out: Out = DEFAULT_OUT) -> None:
    """SRM offset field of each decoder level (c4, c3, c2): flow colour image and sparse arrows over the image."""
    from segrefine.visualize import capture, offsets_picture, require_offsets

    pictures = _read_images(images)
    model, config, weights = _load(weights, device)
    _checked(weights, require_offsets, model)
    for path, image in pictures.items():
        seen = capture(model, image, offsets=True)
        picture = offsets_picture(
            image, seen.offsets, prediction=seen.logits.argmax(0), palette=config["palette"],
            title=f"SRM offset fields | {path.name} | {weights}",
        )  # fmt: skip
        _save(out, f"{path.stem}-offsets", picture)
    _end(images, pictures)


@app.command("attention")
def attention(
    images: Images,
    weights: CheckpointWeights = None,
    points: Annotated[
        Optional[list],
        typer.Option(
            "--points", help="Query points y,x;y,x in image pixels (default: four spread out).", metavar="<y,x;...>",
            parser=parse_points,
        ),
    ] = None,
    device: Device = "auto",
    out: Out = DEFAULT_OUT,
) -> None:
    """CRM attention: channel-attention heat map and spatial attention of query points over the image."""
    from segrefine.visualize import capture, channel_picture, check_points, default_points, require_attention, spatial_picture

    pictures = _read_images(images)
    for image in pictures.values():
        check_points(points or [], *image.shape[-2:])
    model, _, weights = _load(weights, device)
    _checked(weights, require_attention, model)
    for path, image in pictures.items():
        chosen = points or default_points(*image.shape[-2:])
        seen = capture(model, image, attention=True)
        _save(out, f"{path.stem}-channel-attention", channel_picture(seen.channel, f"CRM channel attention | {path.name}"))
        spatial = spatial_picture(image, seen.spatial, seen.grid, chosen, f"CRM spatial attention | {path.name}")
        _save(out, f"{path.stem}-spatial-attention", spatial)
    _end(images, pictures)


@app.command("memory")
def memory(weights: CheckpointWeights = None, out: Out = DEFAULT_OUT) -> None:
    """MCIBI class memory: cosine similarity between the class slots."""
    from segrefine.visualize import memory_picture, require_memory

    model, config, weights = _load(weights, "cpu")
    _checked(weights, require_memory, model)
    _save(out, "memory-similarity", memory_picture(model, config["classes"], f"MCIBI class memory | {weights}"))


@app.command("report")
def report(
    eval_json: Annotated[Path, typer.Argument(help="`segrefine eval --json` output or a run's eval.json.", show_default=False)],
    out: Out = DEFAULT_OUT,
) -> None:
    """Per-class IoU bar chart and (when the report has one) the row-normalised confusion matrix."""
    from segrefine.visualize import confusion_picture, iou_chart, read_report

    scores = read_report(eval_json)
    source = " ".join(str(scores[k]) for k in ("dataset", "split") if isinstance(scores.get(k), str))
    _save(out, f"{eval_json.stem}-iou", iou_chart(scores, f"per-class IoU {source}".strip()))
    if scores.get("confusion") is None:
        print(f"note: {eval_json} has no \"confusion\" matrix; drew the IoU chart only", file=sys.stderr)
        return
    classes = list(scores["per_class"])
    _save(out, f"{eval_json.stem}-confusion", confusion_picture(scores["confusion"], classes, f"confusion matrix {source}".strip()))
