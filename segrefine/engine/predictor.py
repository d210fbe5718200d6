"""Prediction API: load a weights reference once, then segment arrays, image files, batches and videos.

    import segrefine

    predictor = segrefine.load("runs/train/exp")  # run or checkpoint folder, .safetensors file, registry name, Hub id
    label = predictor.predict("street.png")  # H×W uint8 train ids (also takes an H×W×3 uint8 RGB array)
    color = predictor.colorize(label)  # H×W×3 uint8 RGB in the checkpoint's palette
    blend = predictor.overlay("street.png", label, alpha=0.5)

Class names, palette and flip pairs come from the checkpoint's config.json. Inference runs under
`torch.inference_mode()` with the modes of `segrefine eval` (whole or sliding window, multi-scale, flip); images of
the same size are stacked into one forward pass; on CPU and CUDA the network runs channels-last (measured faster on
both: about 1.5× for `lite` at 512×1024 on CPU). On CUDA the uint8 images go up from pinned memory without blocking,
normalisation and argmax run on the GPU and only the uint8 labels come back; `compile=True` compiles that whole step
(CUDA graphs on CUDA) once per input size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrefine.data.meta import voc_palette
from segrefine.data.transforms import normalize
from segrefine.engine.backends import Autocast, for_inference
from segrefine.engine.inference import (
    InferenceOptions, Size, at_model_scale, class_labels, inference_options, predict_probs, resized,
)  # fmt: skip
from segrefine.engine.device import resolve_device
from segrefine.engine.predict_files import PredictReport, predict_files
from segrefine.errors import SegrefineError, SettingError
from segrefine.hub import default_model, describe, load_model
from segrefine.hub.onnx import OnnxModel
from segrefine import imageio
from segrefine.imageio import UnreadableInput, atomic_write, check_alpha, opencv_silent, pil_rgb, read_image

__all__ = ["Predictor", "load"]

VIDEO_FOURCC = "mp4v"
FALLBACK_FPS = 25.0  # for containers that do not record a frame rate
CHANNELS_LAST_DEVICES = ("cpu", "cuda")
# Batching fills a GPU; on CPU one image at a time is faster (measured: `lite` at 512×1024, batch 4 is 10-20% slower).
DEFAULT_BATCH_SIZE = {"cuda": 4}
# With `compile`: CUDA graphs replay a fixed-size forward in one launch; other devices get the default mode.
COMPILE_MODE = {"cuda": "reduce-overhead"}

Image = Union[np.ndarray, str, os.PathLike]


def _rgb(image: Any) -> np.ndarray:
    """An array-like (numpy, PIL) as contiguous H×W×3 uint8 RGB: grey is repeated, alpha dropped."""
    array = pil_rgb(image) if isinstance(image, PIL.Image.Image) else np.asarray(image)
    if array.dtype != np.uint8:
        raise SegrefineError(f"images must be uint8 arrays (0-255), got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise SegrefineError(f"images must be H×W×3 RGB arrays, got shape {array.shape}")
    if 0 in array.shape[:2]:
        raise SegrefineError(f"images must have at least one pixel, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def _runs(sizes: Sequence[Size], limit: int) -> Iterator[list[int]]:
    """Indices grouped by size (in first-seen order), in chunks of at most `limit`."""
    groups: dict[Size, list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(size, []).append(i)
    for indices in groups.values():
        for start in range(0, len(indices), limit):
            yield indices[start : start + limit]


class Predictor:
    """A loaded network plus its labels and inference settings; see `load` to build one from a weights reference."""

    def __init__(
        self,
        model: nn.Module,
        config: dict[str, Any],
        device: torch.device = torch.device("cpu"),
        options: InferenceOptions | None = None,
        *,
        source: str = "",
        **settings: Any,
    ) -> None:
        """`options` (or its fields as keywords) say how `model` runs; `source` is one line naming the weights (see
        `segrefine.hub.describe`). With `compile`, normalisation, network and argmax are compiled together."""
        self.model = model
        self.config = config
        self.device = device
        self.options = at_model_scale(inference_options(options, settings), config, model)
        self.source = source
        self.batch_size: int = self.options.batch_size or DEFAULT_BATCH_SIZE.get(device.type, 1)
        self.num_classes = int(self.config["model"]["num_classes"])
        self.classes: tuple[str, ...] = tuple(self.config.get("classes") or map(str, range(self.num_classes)))
        self.palette: tuple[tuple[int, int, int], ...] = tuple(
            tuple(int(c) for c in rgb) for rgb in self.config.get("palette") or voc_palette(self.num_classes)
        )
        self.flip_pairs = tuple(tuple(pair) for pair in self.config.get("flip_pairs", ()))
        if not len(self.classes) == len(self.palette) == self.num_classes:
            raise SegrefineError(
                f"the checkpoint's config has {len(self.classes)} class names and {len(self.palette)} palette "
                f"colours for a {self.num_classes}-class model"
            )
        self.model.eval()
        if self.device.type in CHANNELS_LAST_DEVICES:
            self.model.to(memory_format=torch.channels_last)
        self._step = self._labels
        if self.options.compile and self.backend == "onnxruntime":
            raise SettingError("`compile` applies to the torch `backend` only (onnxruntime optimises its own graph)")
        if self.options.compile:
            self._step = torch.compile(self._labels, mode=COMPILE_MODE.get(self.device.type), dynamic=False)

    @property
    def backend(self) -> str:
        """What runs the network: torch, or onnxruntime (an .onnx file, or a checkpoint exported for it)."""
        return "onnxruntime" if isinstance(self.model, OnnxModel) else "torch"

    def predict(self, image: Image) -> np.ndarray:
        """H×W uint8 train ids for one H×W×3 uint8 RGB array (or array-like) or image file."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Iterable[Image], batch_size: int | None = None) -> list[np.ndarray]:
        """Label maps for many images, in order; images of the same size share forward passes of `batch_size`."""
        arrays = [read_image(i) if isinstance(i, (str, os.PathLike)) else _rgb(i) for i in images]
        labels: list[np.ndarray | None] = [None] * len(arrays)
        for run in _runs([a.shape[:2] for a in arrays], batch_size or self.batch_size):
            for i, label in zip(run, self._forward([arrays[i] for i in run])):
                labels[i] = label
        return labels  # type: ignore[return-value]

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 RGB of a label map in the checkpoint's palette; values that are no class are black."""
        return imageio.colorize(label, self.palette)

    def overlay(self, image: Image, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The image blended with the colourised label (`alpha` = weight of the colours); no-class pixels untouched."""
        check_alpha(alpha)
        rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else _rgb(image)
        return imageio.overlay(rgb, label, self.palette, alpha)

    def predict_files(
        self, inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, **settings: Any
    ) -> PredictReport:
        """Segment files, folders, globs and videos into `out`; see `segrefine.engine.predict_files.predict_files`."""
        return predict_files(self, inputs, out, **settings)

    def predict_video(
        self,
        source: str | os.PathLike,
        target: str | os.PathLike,
        *,
        alpha: float = 0.5,
        batch_size: int | None = None,
        on_frames: Callable[[int], None] | None = None,
    ) -> int:
        """Write the overlays of every frame of `source` as an mp4 video at its frame rate and size; returns frames.

        `target` appears only once complete. `on_frames(n)` is called after each batch of n frames.
        """
        check_alpha(alpha)
        target = Path(target)
        frames = 0

        def encode(tmp: Path) -> None:
            nonlocal frames
            frames = self._encode_overlays(source, tmp, alpha, batch_size or self.batch_size, on_frames)
            # OpenCV's writer reports no failure (a full disk leaves a file without its index): read it back.
            written = cv2.VideoCapture(os.fspath(tmp))
            complete = written.isOpened() and int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
            written.release()
            if not complete:
                raise SegrefineError(f"cannot write {target}: the video written does not read back whole (disk full?)")

        atomic_write(target, encode, suffix=f".tmp{target.suffix}")  # the suffix picks VideoWriter's container
        return frames

    def _encode_overlays(
        self,
        source: str | os.PathLike,
        target: Path,
        alpha: float,
        batch_size: int,
        on_frames: Callable[[int], None] | None,
    ) -> int:
        frames = 0
        writer = None
        with opencv_silent():  # a broken stream is one UnreadableInput line, not OpenCV's warnings per frame
            capture = cv2.VideoCapture(os.fspath(source))
            try:
                if not capture.isOpened():
                    raise UnreadableInput(f"cannot read {source}: not a video that OpenCV can open")
                fps = capture.get(cv2.CAP_PROP_FPS)
                fps = fps if fps > 0 else FALLBACK_FPS  # NaN compares False too
                for batch in _frame_batches(capture, batch_size):
                    if writer is None:
                        height, width = batch[0].shape[:2]
                        fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC)
                        writer = cv2.VideoWriter(os.fspath(target), fourcc, fps, (width, height))
                        if not writer.isOpened():
                            raise SegrefineError(f"this OpenCV build cannot write {VIDEO_FOURCC} videos")
                    for frame, label in zip(batch, self._forward(batch)):
                        blend = imageio.overlay(frame, label, self.palette, alpha)  # checked by predict_video
                        writer.write(cv2.cvtColor(blend, cv2.COLOR_RGB2BGR))
                    frames += len(batch)
                    if on_frames is not None:
                        on_frames(len(batch))
            finally:
                capture.release()
                if writer is not None:
                    writer.release()
        if not frames:
            raise UnreadableInput(f"cannot read {source}: no frame could be decoded")
        return frames

    @torch.inference_mode()
    def _forward(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Label maps of same-size H×W×3 uint8 RGB images, in one forward pass per inference pass."""
        if self.device.type != "cuda":
            batch = torch.from_numpy(np.stack(images)).to(self.device)
        else:
            # Stacked straight into pinned memory (reused by torch's caching host allocator), so the copy runs
            # asynchronously and a quarter of the bytes of float32 cross the bus.
            host = torch.empty((len(images), *images[0].shape), dtype=torch.uint8, pin_memory=True)
            np.stack(images, out=host.numpy())
            batch = host.to(self.device, non_blocking=True)
        return list(self._step(batch).cpu().numpy())

    def _labels(self, batch: Tensor) -> Tensor:
        """N×H×W uint8 train ids of an N×H×W×3 uint8 RGB batch, computed on its device."""
        # N×H×W×C permuted to N×C×H×W is channels-last in memory, the layout the network runs in on CPU and CUDA.
        x = normalize(batch.permute(0, 3, 1, 2))
        if self.device.type not in CHANNELS_LAST_DEVICES:
            x = x.contiguous()
        if self.options.single_pass:
            # One pass without the guided filter: its largest logit is the prediction. predict_probs would add a
            # softmax over K×H×W values that cannot change it.
            size = self.options.input_size(*x.shape[-2:])
            if size == x.shape[-2:]:
                scores = self._network(x)
            else:  # run at the model's scale, labelled at the image's size
                scores = self._network(resized(x, size))
                scores = F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
        else:  # the probabilities: their log would not change the largest
            scores = predict_probs(self.model, x, self.options, num_classes=self.num_classes, flip_pairs=self.flip_pairs)
        return class_labels(scores).to(torch.uint8)

    def _network(self, x: Tensor) -> Tensor:
        """The network's logits; under bf16 autocast in bf16, without the float32 copy Autocast returns: a copy of
        K×H×W values that cannot change which one is largest."""
        if isinstance(self.model, Autocast):
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return self.model.model(x)
        return self.model(x)


def _frame_batches(capture: cv2.VideoCapture, size: int) -> Iterator[list[np.ndarray]]:
    """RGB frames of an open capture, `size` at a time."""
    batch: list[np.ndarray] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load(
    ref: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    *,
    options: InferenceOptions | None = None,
    token: str | None = None,
    **settings: Any,
) -> Predictor:
    """Load weights once for prediction: a .safetensors file, a checkpoint or training-run folder, a registry name,
    a Hub repo id `owner/name[@revision]` or an exported .onnx file; without `ref`, the registry's default checkpoint
    for segmentation. `options` (or the fields of `InferenceOptions` as keywords) say how it runs; `backend` and
    `precision` are those of `segrefine.engine.backends.for_inference`, `compile` compiles the prediction step for
    each input size (worth it for many images of one size).
    """
    options = inference_options(options, settings)
    if ref is None:
        ref = default_model().name
    run_device = resolve_device(device)
    model, config = load_model(ref, run_device, token=token)
    model = for_inference(model, run_device, backend=options.backend, precision=options.precision)
    return Predictor(model, config, run_device, options, source=describe(ref, config))
