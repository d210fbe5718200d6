"""`segrefine predict`: images, folders, globs and videos -> label maps, colour maps, overlays.

Output names: an image given by name, `a/b/x.jpg`, gives `OUT/x_label.png`, `OUT/x_color.png` and
`OUT/x_overlay.png`; files found in a folder (or by a glob) keep their path below that folder (below the glob's
fixed leading folders), so `photos/day/x.jpg` found in `photos/` gives `OUT/day/x_label.png` and equal file names in
different sub-folders never meet. A video gives one `OUT/<stem>_overlay.mp4` at its frame rate and size. Two inputs
that would still write the same outputs (`x.png` and `x.jpg` side by side) are a failure for the second one.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Literal, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from segrefine.cli.options import BACKEND_HELP, PRECISION_HELP, Backend, Precision, output_folder, parse_inference
from segrefine.engine.predictor import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    Predictor,
    check_alpha,
    load,
)
from segrefine.errors import SegrefineError
from segrefine.imageio import UnreadableInput, read_image, write_image

OUTPUTS = ("label", "color", "overlay")
DEFAULT_OUT = Path("runs", "predict")
_GLOB_CHARS = frozenset("*?[")
FFMPEG_QUIET = -8  # AV_LOG_QUIET


@dataclass(frozen=True)
class Job:
    """One input file and the name (relative to --out, without suffix) its outputs are written under."""

    source: Path
    name: PurePath

    @property
    def video(self) -> bool:
        return self.source.suffix.lower() in VIDEO_SUFFIXES

    def targets(self, out: Path, save: tuple[str, ...]) -> dict[str, Path]:
        folder = out / self.name.parent
        if self.video:
            return {"overlay": folder / f"{self.name.name}_overlay.mp4"}
        return {kind: folder / f"{self.name.name}_{kind}.png" for kind in save}


@dataclass
class Tally:
    """What a run did, for the closing summary; failures and notes are printed as they happen."""

    console: Console
    written: int = 0
    kept: int = 0
    failed: int = 0
    images: int = 0
    videos: int = 0
    frames: int = 0
    seconds: float = 0.0

    def fail(self, message: str) -> None:
        self.failed += 1
        self.console.print(f"segrefine: skipped: {message}", markup=False, highlight=False)

    def note(self, message: str) -> None:
        self.console.print(f"segrefine: {message}", markup=False, highlight=False)


def parse_save(text: str) -> tuple[str, ...]:
    """Comma-separated subset of label, color, overlay (in that order, each once)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in OUTPUTS]
    if unknown or not items:
        raise SegrefineError(f"--save takes a comma-separated list of {', '.join(OUTPUTS)}, got {text!r}")
    return tuple(kind for kind in OUTPUTS if kind in items)


def _media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES


def _below(folder: Path, out: Path) -> list[Path]:
    """Images and videos anywhere below `folder`, sorted, leaving out what lies in the output folder."""
    out = out.resolve()
    found = (p for p in folder.rglob("*") if p.is_file() and _media(p))
    return sorted(p for p in found if out not in p.resolve().parents)


def _glob_base(pattern: str) -> Path:
    """The leading folders of a glob pattern that hold no wildcard."""
    fixed = []
    for part in Path(pattern).parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def collect(inputs: list[str], out: Path, tally: Tally) -> list[Job]:
    """The files behind INPUT arguments, in order and each once; missing paths, empty globs and clashes are failures."""
    jobs: list[Job] = []
    seen: set[Path] = set()
    owners: dict[Path, Path] = {}  # output file -> the input that writes it (any --save: stable across runs)

    def add(source: Path, name: PurePath) -> None:
        key = source.resolve()
        if key in seen:
            return
        seen.add(key)
        job = Job(source, name)
        targets = job.targets(out, OUTPUTS).values()
        clash = next((owners[t] for t in targets if t in owners), None)
        if clash is not None:
            tally.fail(f"{source}: its outputs ({out / name}_*) would overwrite those of {clash}; predict it into another --out")
            return
        owners.update(dict.fromkeys(targets, source))
        jobs.append(job)

    def add_tree(folder: Path, base: Path, given: str) -> None:
        files = _below(folder, out)
        if not files:
            tally.fail(f"{given}: no images or videos in this folder")
        for path in files:
            add(path, path.relative_to(base).with_suffix(""))

    for given in inputs:
        path = Path(given).expanduser()
        if path.is_file():
            add(path, PurePath(path.stem))
        elif path.is_dir():
            add_tree(path, path, given)
        elif _GLOB_CHARS & set(given):
            pattern = os.path.expanduser(given)
            base = _glob_base(pattern)
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            if not matches:
                tally.fail(f"{given}: no file matches this pattern")
            for match in matches:
                if match.is_dir():
                    add_tree(match, base, given)
                else:
                    add(match, match.relative_to(base).with_suffix(""))
        else:
            tally.fail(f"{given}: no such file or folder")
    return jobs


def _todo(job: Job, out: Path, save: tuple[str, ...], overwrite: bool, tally: Tally) -> dict[str, Path]:
    """The outputs of `job` to write: existing ones are kept (and counted) unless --overwrite."""
    targets = job.targets(out, save)
    if overwrite:
        return targets
    kept = [path for path in targets.values() if path.exists()]
    if kept:
        tally.kept += len(kept)
        tally.note(f"kept existing {', '.join(str(p) for p in kept)} (--overwrite replaces them)")
    return {kind: path for kind, path in targets.items() if not path.exists()}


def _write(predictor: Predictor, image: np.ndarray, label: np.ndarray, targets: dict[str, Path], alpha: float) -> int:
    for kind, path in targets.items():
        if kind == "label":
            write_image(path, label)
        elif kind == "color":
            write_image(path, predictor.colorize(label))
        else:
            write_image(path, predictor.overlay(image, label, alpha))
    return len(targets)


def _run_images(
    predictor: Predictor, jobs: list[Job], out: Path, save: tuple[str, ...], alpha: float, overwrite: bool,
    tally: Tally, progress: Progress, task: int,
) -> None:  # fmt: skip
    """Read, batch (consecutive images of one size, up to --batch-size), predict and write."""
    pending: list[tuple[np.ndarray, dict[str, Path]]] = []

    def flush() -> None:
        labels = predictor.predict_batch([image for image, _ in pending], batch_size=len(pending))
        for (image, targets), label in zip(pending, labels):
            tally.written += _write(predictor, image, label, targets, alpha)
        tally.images += len(pending)
        progress.advance(task, len(pending))
        pending.clear()

    for job in jobs:
        targets = _todo(job, out, save, overwrite, tally)
        if not targets:
            progress.advance(task)
            continue
        try:
            image = read_image(job.source)
        except UnreadableInput as e:
            tally.fail(str(e))
            progress.advance(task)
            continue
        if pending and (pending[0][0].shape != image.shape or len(pending) == predictor.batch_size):
            flush()
        pending.append((image, targets))
    if pending:
        flush()


def _run_video(
    predictor: Predictor, job: Job, out: Path, alpha: float, overwrite: bool, tally: Tally, progress: Progress,
    task: int,
) -> None:  # fmt: skip
    targets = _todo(job, out, ("overlay",), overwrite, tally)
    if targets:
        frames = progress.add_task(f"  {job.source.name}", total=None)
        try:
            tally.frames += predictor.predict_video(
                job.source, targets["overlay"], alpha=alpha, on_frames=lambda n: progress.advance(frames, n)
            )
            tally.videos += 1
            tally.written += 1
        except UnreadableInput as e:
            tally.fail(str(e))
        finally:
            progress.remove_task(frames)
    progress.advance(task)


def _summary(tally: Tally, out: Path, predictor: Predictor | None) -> str:
    done = tally.images + tally.frames
    parts = [f"{tally.images} image{'s' * (tally.images != 1)}"]
    if tally.videos:
        parts.append(f"{tally.videos} video{'s' * (tally.videos != 1)} ({tally.frames} frames)")
    text = "predicted " + " and ".join(parts)
    if done:
        text += f" in {tally.seconds:.1f} s ({1000 * tally.seconds / done:.0f} ms per image"
        if predictor is not None:
            text += f", {predictor.config['model'].get('variant', '?')} on {predictor.device}"
        text += ")"
    text += f"; wrote {tally.written} file{'s' * (tally.written != 1)} to {out}"
    if tally.kept:
        text += f", kept {tally.kept} existing (--overwrite replaces them)"
    return text + f"; {tally.failed} failed"


def predict(
    inputs: Annotated[
        list[str], typer.Argument(help="Image files, folders (searched recursively), quoted globs or videos.", show_default=False)
    ],
    weights: Annotated[
        Optional[str],
        typer.Option("--weights", help="Run or checkpoint folder, .safetensors file, registry name, Hub id owner/name or owner/name@revision, or an exported .onnx file (default: the registry's default checkpoint)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.", callback=output_folder)] = DEFAULT_OUT,
    save: Annotated[
        str, typer.Option("--save", help="Outputs per image: label (train-id PNG), color, overlay; videos give overlays.")
    ] = ",".join(OUTPUTS),
    alpha: Annotated[float, typer.Option("--alpha", help="Weight of the class colours in overlays, 0 to 1.")] = 0.5,
    mode: Annotated[Literal["whole", "slide"], typer.Option("--mode", help="Whole image or sliding window.")] = "whole",
    crop: Annotated[Optional[str], typer.Option("--crop", help="Sliding-window size HxW (--mode slide).")] = None,
    stride: Annotated[
        Optional[str], typer.Option("--stride", help="Sliding-window stride HxW (default: 2/3 of the crop).")
    ] = None,
    scales: Annotated[Optional[str], typer.Option("--scales", help="Comma-separated test scales, e.g. 0.75,1.0,1.25.")] = None,
    flip: Annotated[bool, typer.Option("--flip", help="Also run on the mirrored image (left/right classes swapped).")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[
        Optional[int],
        typer.Option("--batch-size", min=1, help="Same-size images per forward pass (default: 4 on CUDA, 1 elsewhere)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (default: keep them).")] = False,
    backend: Annotated[Optional[Backend], typer.Option("--backend", help=BACKEND_HELP, show_default=False)] = None,
    precision: Annotated[Precision, typer.Option("--precision", help=PRECISION_HELP)] = "fp32",
) -> None:
    """Segment images, folders, globs and videos into OUT/<name>_label.png (train ids), _color.png and _overlay.png.

    Files found in a folder or by a glob keep their sub-folders below OUT; a video gives OUT/<name>_overlay.mp4 at its
    frame rate and size. Existing outputs are kept unless --overwrite. Unreadable inputs are reported and skipped;
    the exit code is then 1.
    """
    kinds = parse_save(save)
    check_alpha(alpha)
    inference = parse_inference(mode, crop, stride, scales)
    crop_size, stride_size, scale_list = inference["crop"], inference["stride"], inference["scales"]

    # A broken video is reported in one line of ours; FFmpeg (inside OpenCV) would add its own error lines.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(FFMPEG_QUIET))
    console = Console(stderr=True, soft_wrap=True)
    tally = Tally(console)
    jobs = collect(inputs, out, tally)
    predictor = None
    if jobs:
        predictor = load(
            weights, device, mode=mode, crop=crop_size, stride=stride_size, scales=scale_list, flip=flip,
            batch_size=batch_size, backend=backend, precision=precision,
        )  # fmt: skip
        console.print(predictor.source, markup=False, highlight=False)
        progress = Progress(
            TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not console.is_terminal or len(jobs) < 2,
        )  # fmt: skip
        start = time.perf_counter()
        with progress:
            task = progress.add_task("", total=len(jobs))
            images = [job for job in jobs if not job.video]
            _run_images(predictor, images, out, kinds, alpha, overwrite, tally, progress, task)
            for job in jobs:
                if job.video:
                    _run_video(predictor, job, out, alpha, overwrite, tally, progress, task)
        tally.seconds = time.perf_counter() - start
    typer.echo(_summary(tally, out, predictor))
    if tally.failed:
        raise typer.Exit(1)
