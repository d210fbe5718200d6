"""`segrefine visualize`: PNG pictures of data, predictions, SRM offsets, CRM attention, the memory and eval reports.

Each subcommand calls its `segrefine.visualize` picture function, writes the pictures as PNG files atomically into
--out and prints the path of each. Images that cannot be read are reported and skipped, and the exit code is then 1
(as for predict).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from segrefine.cli.options import (
    CheckpointWeights, DataRoot, DatasetName, DatasetOptions, Device, flag_settings, output_folder, parse_key_values,
    say, warning, with_config_flags,
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
LOADING = {"on_message": say, "on_warning": warning}


def parse_points(text: str) -> list[tuple[int, int]]:
    """Parser of --points: 'y,x;y,x' (image pixels) -> [(y, x), ...]; empty: the default points."""
    try:
        return [(int(y), int(x)) for y, x in (item.split(",") for item in text.split(";"))] if text else []
    except ValueError:  # not two parts, or not integers
        raise SegrefineError(f"--points must be y,x pairs separated by ';' (e.g. 100,200;300,50), got {text!r}") from None


def _write(out: Path, pictures: Iterator[tuple[str, Any]]) -> None:
    from segrefine.visualize import write_png

    for name, picture in pictures:
        typer.echo(str(write_png(out / f"{name}.png", picture)))


def _write_readable(out: Path, images: list[Path], pictures: Callable[..., Any], **kwargs: Any) -> None:
    """`_write` the pictures of the images that can be read; any other is reported as skipped, and then the exit code
    is 1 (before any loading when none can be read)."""
    from segrefine.visualize import read_images

    readable = read_images(images, on_skip=lambda why: say(f"segrefine: skipped: {why}"))
    if not readable:
        raise typer.Exit(1)
    _write(out, pictures(readable, **kwargs))
    if len(readable) < len(images):
        raise typer.Exit(1)


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
    from segrefine.visualize import dataset_pictures

    options = parse_key_values(dataset_option, "--dataset-option")
    _write(out, dataset_pictures(dataset, data_root=data_root, split=split, num=num, dataset_options=options))


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
    from segrefine.visualize import error_pictures

    options = InferenceOptions(**flag_settings(values, (InferenceOptions,), _NOT_INFERENCE_FLAGS))
    pictures = error_pictures(
        dataset, weights, data_root=data_root, split=split, num=num, device=device, options=options,
        dataset_options=parse_key_values(dataset_option, "--dataset-option"), **LOADING,
    )  # fmt: skip
    _write(out, pictures)


# The PyTorch network as loaded, one image at a time: only the inference modes apply.
_NOT_INFERENCE_FLAGS = ("batch_size", "precision", "backend", "compile")
with_config_flags(errors, (InferenceOptions,), _NOT_INFERENCE_FLAGS, defaults=True)


@app.command("offsets")
def offsets(images: Images, weights: CheckpointWeights = None, device: Device = "auto", out: Out = DEFAULT_OUT) -> None:
    """SRM offset field of each decoder level (c4, c3, c2): flow colour image and sparse arrows over the image."""
    from segrefine.visualize import offset_pictures

    _write_readable(out, images, offset_pictures, weights=weights, device=device, **LOADING)


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
    from segrefine.visualize import attention_pictures

    _write_readable(out, images, attention_pictures, weights=weights, points=points, device=device, **LOADING)


@app.command("memory")
def memory(weights: CheckpointWeights = None, out: Out = DEFAULT_OUT) -> None:
    """MCIBI class memory: cosine similarity between the class slots."""
    from segrefine.visualize import memory_pictures

    _write(out, memory_pictures(weights, **LOADING))


@app.command("report")
def report(
    eval_json: Annotated[Path, typer.Argument(help="`segrefine eval --json` output or a run's eval.json.", show_default=False)],
    out: Out = DEFAULT_OUT,
) -> None:
    """Per-class IoU bar chart and (when the report has one) the row-normalised confusion matrix."""
    from segrefine.visualize import report_pictures

    _write(out, report_pictures(eval_json, on_warning=warning))
