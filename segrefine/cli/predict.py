"""`segrefine predict`: images, folders, globs and videos -> label maps, colour maps, overlays (see
`segrefine.engine.predict_files` for how outputs are named)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from segrefine import EXAMPLE_IMAGE
from segrefine.cli.options import Device, Weights, flag_settings, output_folder, with_config_flags
from segrefine.engine.inference import InferenceOptions
from segrefine.engine.predict_files import OUTPUTS, PredictReport, check_save, predict_files
from segrefine.engine.predictor import Predictor, load
from segrefine.imageio import MAX_PIXELS
from segrefine.errors import Interrupted, SegrefineError, worded

DEFAULT_OUT = Path("runs", "predict")


def parse_save(text: str) -> tuple[str, ...]:
    """Comma-separated subset of label, color, overlay."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or any(item not in OUTPUTS for item in items):
        raise SegrefineError(f"--save takes a comma-separated list of {', '.join(OUTPUTS)}, got {text!r}")
    return check_save(items)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _summary(report: PredictReport, predictor: Predictor | None) -> str:
    parts = [_plural(report.images, "image")]
    if report.videos:
        parts.append(f"{_plural(report.videos, 'video')} ({report.frames} frames)")
    text = "predicted " + " and ".join(parts)
    if report.seconds_per_image is not None:
        text += f" in {report.seconds:.1f} s ({1000 * report.seconds_per_image:.0f} ms per image"
        if predictor is not None:
            text += f", {predictor.config['model'].get('variant', '?')} on {predictor.device}, {predictor.backend}"
        text += ")"
    text += f"; wrote {_plural(len(report.written), 'file')} to {report.out}"
    if report.kept:
        text += f", kept {len(report.kept)} existing (--overwrite replaces them)"
    return text + f"; {len(report.failed)} failed"


def _example_outputs(report: PredictReport) -> str:
    """Where the example's outputs are, written now or kept from an earlier run."""
    paths = [p for p in report.written + report.kept if p.parent == report.out and p.name.startswith(f"{EXAMPLE_IMAGE.stem}_")]
    return f"the example photo {EXAMPLE_IMAGE} gave {', '.join(map(str, paths)) or 'nothing'}"


def predict(
    inputs: Annotated[
        Optional[list[str]],
        typer.Argument(help="Image files, folders (searched recursively), quoted globs or videos.", show_default=False),
    ] = None,
    example: Annotated[
        bool, typer.Option("--example", help="Also segment the 360×480 street photo shipped with segrefine.")
    ] = False,
    weights: Weights = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.", parser=output_folder)] = DEFAULT_OUT,
    save: Annotated[
        str, typer.Option("--save", help="Outputs per image: label (train-id PNG), color, overlay; videos give overlays.")
    ] = ",".join(OUTPUTS),
    alpha: Annotated[float, typer.Option("--alpha", help="Weight of the class colours in overlays, 0 to 1.")] = 0.5,
    device: Device = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (default: keep them).")] = False,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", min=1, help="Largest image (width × height, read from its header before decoding).")
    ] = MAX_PIXELS,
    **values: Any,
) -> None:
    """Segment images, folders, globs and videos into OUT/<name>_label.png (train ids), _color.png and _overlay.png.

    Files found in a folder or by a glob keep their sub-folders below OUT; a video gives OUT/<name>_overlay.mp4 at its
    frame rate and size. --example segments the street photo shipped with segrefine, from any folder. Existing outputs
    are kept unless --overwrite. Unreadable inputs, and images larger than
    --max-pixels, are reported and skipped; the exit code is then 1.
    """
    inputs = [*(inputs or []), *([str(EXAMPLE_IMAGE)] if example else [])]
    if not inputs:
        raise SegrefineError("give images, folders, globs or videos to segment, or --example for the shipped photo")
    kinds = parse_save(save)
    options = InferenceOptions(**flag_settings(values, (InferenceOptions,)))
    console = Console(stderr=True, soft_wrap=True)

    def say(message: str) -> None:
        console.print(f"segrefine: {worded(message)}", markup=False, highlight=False)

    loaded: list[Predictor] = []

    def load_predictor() -> Predictor:  # only once some input turned out readable
        predictor = load(weights, device, options=options)
        console.print(predictor.source, markup=False, highlight=False)
        loaded.append(predictor)
        return predictor

    try:
        report = predict_files(
            load_predictor, inputs, out, save=kinds, alpha=alpha, overwrite=overwrite, progress=True, on_message=say,
            max_pixels=max_pixels,
        )  # fmt: skip
    except Interrupted as e:
        raise Interrupted(worded(str(e))) from None
    typer.echo(_summary(report, loaded[0] if loaded else None))
    if example:
        typer.echo(_example_outputs(report))
    if report.failed:
        raise typer.Exit(1)


with_config_flags(predict, (InferenceOptions,), defaults=True)
