"""The predict job: images, folders, globs and videos -> label maps, colour maps and overlays on disk.

Output names: an image given by name, `a/b/x.jpg`, gives `OUT/x_label.png`, `OUT/x_color.png` and
`OUT/x_overlay.png`; files found in a folder (or by a glob) keep their path below that folder (below the glob's
fixed leading folders), so `photos/day/x.jpg` found in `photos/` gives `OUT/day/x_label.png` and equal file names in
different sub-folders never meet. A video gives one `OUT/<stem>_overlay.mp4` at its frame rate and size. Two inputs
that would still write the same outputs (`x.png` and `x.jpg` side by side) are a failure for the second one.
Existing outputs are kept unless `overwrite`.
"""

from __future__ import annotations

import glob
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Protocol

import numpy as np

from segrefine import imageio
from segrefine.engine.progress import progress_bar
from segrefine.errors import Interrupted, SegrefineError, SettingError
from segrefine.imageio import (
    IMAGE_SUFFIXES, MAX_PIXELS, VIDEO_SUFFIXES, UnreadableInput, check_alpha, read_image, write_image, writable_folder,
)  # fmt: skip

OUTPUTS = ("label", "color", "overlay")
_GLOB_CHARS = frozenset("*?[")
FFMPEG_QUIET = -8  # AV_LOG_QUIET


class Predictor(Protocol):
    """What the job needs of a `segrefine.engine.predictor.Predictor` (which imports this module, not the reverse)."""

    batch_size: int
    palette: tuple[tuple[int, int, int], ...]

    def predict_batch(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> list[np.ndarray]: ...

    def colorize(self, label: np.ndarray) -> np.ndarray: ...

    def predict_video(self, source: str | os.PathLike, target: str | os.PathLike, *, alpha: float = 0.5) -> int: ...


@dataclass
class PredictReport:
    """What a predict job did: files written and kept, inputs that failed (with why), images, frames and time."""

    out: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # existing outputs left as they were (no `overwrite`)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, one line saying why)
    images: int = 0
    videos: int = 0
    frames: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_image(self) -> float | None:
        """Wall time per predicted image or video frame (reading, inference and writing included)."""
        done = self.images + self.frames
        return self.seconds / done if done else None


@dataclass(frozen=True)
class _Job:
    """One input file and the name (relative to `out`, without suffix) its outputs are written under."""

    source: Path
    name: PurePath

    @property
    def video(self) -> bool:
        return self.source.suffix.lower() in VIDEO_SUFFIXES

    def targets(self, out: Path, save: Sequence[str]) -> dict[str, Path]:
        folder = out / self.name.parent
        if self.video:
            return {"overlay": folder / f"{self.name.name}_overlay.mp4"}
        return {kind: folder / f"{self.name.name}_{kind}.png" for kind in save}


@dataclass
class _Run:
    """The state of one job: the report, plus the `on_message` callback for failures and notes as they happen."""

    report: PredictReport
    on_message: Callable[[str], None] | None

    def fail(self, source: object, message: str) -> None:
        """`message`: one line naming the input and what is wrong with it."""
        self.report.failed.append((str(source), message))
        self.note(f"skipped: {message}")

    def note(self, message: str) -> None:
        if self.on_message is not None:  # a file name may hold a line break: each message stays one line
            self.on_message(message.replace("\n", "\\n").replace("\r", "\\r"))


def check_save(save: Sequence[str]) -> tuple[str, ...]:
    """The kinds of output to write, in canonical order; unknown kinds are an error."""
    save = (save,) if isinstance(save, str) else save
    unknown = [kind for kind in save if kind not in OUTPUTS]
    if unknown or not save:
        raise SettingError(f"`save` takes some of {', '.join(OUTPUTS)}, got {', '.join(save) or 'nothing'}")
    return tuple(kind for kind in OUTPUTS if kind in save)


def _is_output(path: Path) -> bool:
    """Whether `path` is named as this job names its outputs."""
    return path.suffix.lower() in (".png", ".mp4") and path.stem.endswith(tuple(f"_{kind}" for kind in OUTPUTS))


def _below(folder: Path, out: Path) -> tuple[list[Path], list[Path]]:
    """Images and videos anywhere below `folder`, sorted, leaving out earlier outputs (everything in an output folder
    below `folder`; only what is named as an output where `out` holds `folder`); and what cannot be read there:
    broken symbolic links and files that are not regular (pipes, devices, sockets)."""
    out = out.resolve()
    out_inside = folder.resolve() in out.parents
    found, unreadable = [], []
    for path in folder.rglob("*"):
        if path.is_symlink() and not path.exists():
            unreadable.append(path)
        elif path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES or path.is_dir():
            continue
        elif not path.is_file():  # a pipe, device or socket
            unreadable.append(path)
        elif out not in path.resolve().parents or not (out_inside or _is_output(path)):
            found.append(path)
    return sorted(found), sorted(unreadable)


def _glob_base(pattern: str) -> Path:
    """The leading folders of a glob pattern that hold no wildcard."""
    return Path(*itertools.takewhile(lambda part: not _GLOB_CHARS & set(part), Path(pattern).parts))


def _collect(inputs: Sequence[str | os.PathLike], out: Path, run: _Run) -> list[_Job]:
    """The files behind `inputs`, in order and each once; missing paths, empty globs and clashes are failures."""
    jobs: list[_Job] = []
    seen: set[Path] = set()
    owners: dict[Path, Path] = {}  # output file -> the input that writes it (any `save`: stable across runs)

    def add(source: Path, name: PurePath) -> None:
        key = source.resolve()
        if key in seen:
            return
        seen.add(key)
        job = _Job(source, name)
        targets = job.targets(out, OUTPUTS).values()
        clash = next((owners[t] for t in targets if t in owners), None)
        if clash is not None:
            run.fail(source, f"{source}: its outputs ({out / name}_*) would overwrite those of {clash}; predict it into another `out`")
            return
        owners.update(dict.fromkeys(targets, source))
        jobs.append(job)

    def add_tree(folder: Path, base: Path, given: str) -> None:
        files, unreadable = _below(folder, out)
        for path in unreadable:
            run.fail(path, f"{path}: a broken symbolic link (its target {os.readlink(path)} does not exist)"
                     if not path.exists() else f"{path}: not a regular file (a device, pipe or socket)")  # fmt: skip
        if not files and not unreadable:
            run.fail(given, f"{given}: no images or videos in this folder")
        for path in files:
            add(path, path.relative_to(base).with_suffix(""))

    for given in map(os.fspath, inputs):
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
                run.fail(given, f"{given}: no file matches this pattern")
            for match in matches:
                if match.is_dir():
                    add_tree(match, base, given)
                else:
                    add(match, match.relative_to(base).with_suffix(""))
        elif path.exists():
            run.fail(given, f"{given}: not a regular file (a device, pipe or socket): give image or video files or folders")
        else:
            run.fail(given, f"{given}: no such file or folder")
    return jobs


def _todo(job: _Job, out: Path, save: Sequence[str], overwrite: bool, run: _Run) -> dict[str, Path]:
    """The outputs of `job` to write: existing ones are kept (and reported) unless `overwrite`."""
    targets = job.targets(out, save)
    if overwrite:
        return targets
    kept = [path for path in targets.values() if os.path.exists(path)]  # False for a name too long to exist
    if kept:
        run.report.kept += kept
        run.note(f"kept existing {', '.join(str(p) for p in kept)} (`overwrite` replaces them)")
    return {kind: path for kind, path in targets.items() if path not in kept}


def _write(
    predictor: Predictor, image: np.ndarray, label: np.ndarray, targets: dict[str, Path], alpha: float, written: list[Path]
) -> None:
    """Write the outputs of one image, adding them to `written` once all are in place; if one fails, the new files
    written before it are removed (an input has all its outputs or none), while those that replaced a file (with
    `overwrite`) stay: complete, and the only copy left."""
    done: list[Path] = []
    existed = {path for path in targets.values() if os.path.lexists(path)}
    try:
        for kind, path in targets.items():
            if kind == "label":
                write_image(path, label)
            elif kind == "color":
                write_image(path, predictor.colorize(label))
            else:  # `alpha` was checked once, by predict_files
                write_image(path, imageio.overlay(image, label, predictor.palette, alpha))
            done.append(path)
    except SegrefineError:
        for path in done:
            if path not in existed:
                path.unlink(missing_ok=True)
        raise
    written += done


def predict_files(
    predictor: Predictor | Callable[[], Predictor],
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    save: Sequence[str] = OUTPUTS,
    alpha: float = 0.5,
    overwrite: bool = False,
    progress: bool = False,
    on_message: Callable[[str], None] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> PredictReport:
    """Segment image files, folders (recursively), globs and videos into `out`: `<name>_label.png` (train ids),
    `_color.png`, `_overlay.png` (the kinds in `save`), `<name>_overlay.mp4` for a video; see this module for names.

    Existing outputs are kept unless `overwrite`. Unreadable or missing inputs, and images whose header claims more
    than `max_pixels` pixels (refused before decoding), are reported (in the result's `failed` and through
    `on_message`) and skipped; images of one size are batched up to the predictor's batch size. `progress` shows a
    bar on a terminal. `predictor` may also be a function that loads one: it is called only when some input can be
    read, so a run with nothing to do loads no model.
    """
    check_alpha(alpha)
    if max_pixels < 1:
        raise SettingError(f"`max_pixels` must be a positive integer, got {max_pixels}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    kinds = check_save(save)
    out = Path(out)
    report = PredictReport(out)
    run = _Run(report, on_message)
    jobs = _collect(inputs, out, run)
    todo = [(job, targets) for job in jobs if (targets := _todo(job, out, kinds, overwrite, run))]
    if not todo:
        return report
    if problem := writable_folder(out):  # before a model is loaded: os.access cannot tell (e.g. as root in /proc)
        raise SettingError(f"`out` {problem}")
    if callable(predictor):
        predictor = predictor()
    # A broken video is reported in one line of ours; FFmpeg (inside OpenCV) would add its own error lines.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(FFMPEG_QUIET))
    bar = progress_bar("[bold]predict", enabled=progress and len(jobs) > 1)
    start = time.perf_counter()
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        bar.advance(task, n)

    try:
        with bar:
            task = bar.add_task("", total=len(todo))
            _run_images(predictor, [item for item in todo if not item[0].video], alpha, max_pixels, run, advance)
            for job, targets in todo:
                if job.video:
                    _run_video(predictor, job, targets, alpha, run)
                    advance(1)
    except KeyboardInterrupt:
        rest = "the same command without `overwrite` does" if overwrite else "the same command again does"
        raise Interrupted(
            f"interrupted after {done} of {len(todo)} inputs ({len(report.written)} files written to {out}, each "
            f"complete); {rest} the rest, keeping the outputs that exist"
        ) from None
    report.seconds = time.perf_counter() - start
    return report


READ_AHEAD = 4  # images decoded ahead of the one being batched, on threads (OpenCV decodes without the GIL)
WRITES_QUEUED = 2  # batches waiting to be written before prediction waits: bounds the memory they hold


def _run_images(
    predictor: Predictor, todo: list[tuple[_Job, dict[str, Path]]], alpha: float, max_pixels: int, run: _Run,
    advance: Callable[[int], None],
) -> None:  # fmt: skip
    """Read (a few images ahead), batch (consecutive images of one size, up to the predictor's batch size), predict
    and write, decoding and writing on threads while the network runs, so that a GPU is not left waiting on them."""
    pending: list[tuple[np.ndarray, dict[str, Path], Path]] = []
    writes: deque[Future] = deque()

    def write(batch: list[tuple[np.ndarray, dict[str, Path], Path, np.ndarray | None]]) -> list[tuple[Path, str | None]]:
        """Each image's outputs; (source, why it failed or None) per image, for the caller's thread to report."""
        done = []
        for image, targets, source, label in batch:
            try:
                _write(predictor, image, label, targets, alpha, run.report.written)
                done.append((source, None))
            except SegrefineError as e:  # e.g. an output name longer than the file system allows
                done.append((source, f"{source}: {e}"))
        return done

    def report(keep: int) -> None:
        """Count (and report the failures of) the batches written so far, in order, waiting for the oldest until at
        most `keep` are left."""
        while writes and (len(writes) > keep or writes[0].done()):
            results = writes.popleft().result()
            for source, problem in results:
                if problem is None:
                    run.report.images += 1
                else:
                    run.fail(source, problem)
            advance(len(results))

    def flush() -> None:
        try:
            labels = predictor.predict_batch([image for image, _, _ in pending], batch_size=len(pending))
        except UnreadableInput as e:  # e.g. a size a fixed-size .onnx cannot take: these images only
            for _, _, source in pending:
                run.fail(source, f"{source}: {e}")
            advance(len(pending))
        else:
            writes.append(writer.submit(write, [(*item, label) for item, label in zip(pending, labels)]))
            report(keep=WRITES_QUEUED)
        pending.clear()

    with ThreadPoolExecutor(2, "segrefine-read") as readers, ThreadPoolExecutor(1, "segrefine-write") as writer:
        try:
            ahead: deque[tuple[_Job, dict[str, Path], Future]] = deque()
            queue = iter(todo)
            while True:
                for job, targets in queue:  # keep READ_AHEAD reads in flight
                    ahead.append((job, targets, readers.submit(read_image, job.source, max_pixels)))
                    if len(ahead) >= READ_AHEAD:
                        break
                if not ahead:
                    break
                job, targets, reading = ahead.popleft()
                try:
                    image = reading.result()
                except UnreadableInput as e:
                    run.fail(job.source, str(e))
                    advance(1)
                    continue
                if pending and (pending[0][0].shape != image.shape or len(pending) == predictor.batch_size):
                    flush()
                pending.append((image, targets, job.source))
            if pending:
                flush()
        finally:  # Ctrl-C included: no more reads; the writes under way finish (each file complete) and are counted
            readers.shutdown(cancel_futures=True)
            report(keep=0)


def _run_video(predictor: Predictor, job: _Job, targets: dict[str, Path], alpha: float, run: _Run) -> None:
    try:
        run.report.frames += predictor.predict_video(job.source, targets["overlay"], alpha=alpha)
    except UnreadableInput as e:
        run.fail(job.source, str(e))
    except SegrefineError as e:  # e.g. an output name longer than the file system allows: this input only
        run.fail(job.source, f"{job.source}: {e}")
    else:
        run.report.videos += 1
        run.report.written.append(targets["overlay"])
