"""`segrefine eval`: scores of a model, or of saved prediction PNGs, on a dataset split.

Every score is a fraction in [0, 1], in the table and in --json alike.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segrefine.cli.options import (
    DataRoot, DatasetName, DatasetOptions, Device, Weights, flag_settings, parse_key_values, say, warning, with_config_flags,
)  # fmt: skip
from segrefine.engine.distributed import launched_as_main
from segrefine.engine.inference import InferenceOptions

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
_NOT_FLAGS = ("compile",)  # the model runs as loaded


def _fraction(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"  # the report has undefined scores (NaN) as None


def _describe_mode(report: dict[str, Any]) -> str:
    """e.g. "slide 512x1024 stride 341x682, scales 0.5,1,1.5, flip, guided filter"."""
    words = [report["mode"]]
    if report.get("crop") is not None:
        words.append("x".join(map(str, report["crop"])))
        if report.get("stride") is not None:
            words.append("stride " + "x".join(map(str, report["stride"])))
    text = " ".join(words)
    if report.get("scales", [1.0]) != [1.0]:
        text += ", scales " + ",".join(f"{s:g}" for s in report["scales"])
    text += ", flip" if report.get("flip") else ""
    return text + (", guided filter" if report.get("guided_filter") else "")


def _print_tables(report: dict[str, Any], title: str) -> None:
    console = Console()
    classes = Table(title=f"{title}: per class", caption="fractions in [0, 1]; — = undefined (class absent)")
    for column in ("class", "IoU", "Acc", "boundary IoU"):
        classes.add_column(column, justify="left" if column == "class" else "right")
    for name, scores in report["per_class"].items():
        classes.add_row(escape(name), _fraction(scores["iou"]), _fraction(scores["acc"]), _fraction(scores["boundary_iou"]))
    console.print(classes)
    summary = Table(title="summary (fractions in [0, 1])", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for key in ("mIoU", "mAcc", "aAcc", "fwIoU", "boundary_mIoU"):
        summary.add_row(key, _fraction(report[key]))
    summary.add_row("images", str(report["num_images"]))
    summary.add_row("mode", _describe_mode(report))
    console.print(summary)


def evaluate(
    dataset: DatasetName,
    data_root: DataRoot = None,
    weights: Weights = None,
    predictions: Annotated[
        Optional[Path], typer.Option("--predictions", help="Evaluate saved <image stem>.png train-id maps instead.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Dataset split.")] = "val",
    device: Device = "auto",
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader worker processes.")] = DEFAULT_WORKERS,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
    save_predictions: Annotated[
        Optional[Path],
        typer.Option("--save-predictions", help="Write <image stem>.png train ids here (Cityscapes: also labelIds/)."),
    ] = None,
    dataset_option: DatasetOptions = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate only the first N images.")] = None,
    class_map: Annotated[
        Optional[str],
        typer.Option(
            "--class-map",
            help="Score a model trained on other classes: cityscapes:camvid (either way round), or a JSON file "
            '{"finer class": "coarser class" or null}; scores are in the coarser classes.',
            show_default=False,
        ),
    ] = None,
    **values: Any,
) -> None:
    """Evaluate a model (--weights) or saved predictions (--predictions) on a dataset split; scores are fractions."""
    from segrefine.engine.evaluate import evaluate as run_evaluation

    options = InferenceOptions(**flag_settings(values, (InferenceOptions,)))
    report = run_evaluation(
        weights, dataset, data_root=data_root, split=split, predictions=predictions, options=options,
        device=device, workers=workers, save_predictions=save_predictions,
        dataset_options=parse_key_values(dataset_option, "--dataset-option"), limit=limit, progress=True, class_map=class_map, on_message=say, on_warning=warning,
    )  # fmt: skip
    if not launched_as_main():  # under torchrun every process evaluates its share; rank 0 alone reports
        return
    if as_json:
        typer.echo(json.dumps(report, allow_nan=False))
    else:
        _print_tables(report, f"{dataset} {split}")


with_config_flags(evaluate, (InferenceOptions,), _NOT_FLAGS, defaults=True)
