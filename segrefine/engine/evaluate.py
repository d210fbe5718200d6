"""Evaluation over a dataset split: a model (with any inference mode) or saved prediction PNGs.

Both paths feed one loop over (prediction, label) pairs into a single `SegmentationMetrics`, so scores are
FRACTIONS in [0, 1] and follow its conventions (ignore pixels dropped, NaN classes left out of the means).
Memory stays flat in the number of images: each image's logits are reduced to a label map at once, and only the
K×(K+1) confusion counts survive it.

Batching: images of different sizes cannot be stacked, so a DataLoader batch is split into runs of consecutive
images of the same size and each run is one forward pass (Cityscapes-like splits batch fully, mixed-size splits
such as ADE20K fall back to smaller batches). Dataset images may be uint8 (normalised here, on the device) or
already normalised floats.

Under torchrun (torch.distributed initialised) every process takes every world-size-th image, so no image is
counted twice, and the counts are summed across processes before the scores are computed.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from segrefine.data import cityscapes
from segrefine.data.class_map import Scoring, cross_taxonomy, load_class_map
from segrefine.data.meta import IGNORE_INDEX, DatasetMeta
from segrefine.data import build_dataset, dataset_meta
from segrefine.data.transforms import normalize
from segrefine.engine import distributed
from segrefine.engine.backends import for_inference
from segrefine.engine.device import model_device, resolve_device
from segrefine.engine.inference import (
    InferenceOptions, at_model_scale, class_labels, inference_options, predict_probs,
)  # fmt: skip
from segrefine.engine.progress import progress_bar
from segrefine.engine.metrics import BOUNDARY_RATIO, SegmentationMetrics, summary
from segrefine.imageio import read_label_map, write_image
from segrefine.errors import SegrefineError, SettingError
from segrefine.hub import describe, load_for_dataset

__all__ = ["LABEL_IDS_DIR", "UNIT", "PredictionWriter", "evaluate", "evaluate_model", "evaluate_predictions"]

UNIT = "fraction"  # every score in every output is a fraction in [0, 1]
LABEL_IDS_DIR = "labelIds"  # Cityscapes: subfolder of `save_predictions` with the official label-id encoding


class PredictionWriter:
    """Writes `<folder>/<image file stem>.png` holding train ids; for Cityscapes also `<folder>/labelIds/<stem>.png`.

    Point cityscapesscripts (CITYSCAPES_RESULTS) or a benchmark-server upload at the labelIds folder: the
    official tools match prediction files by the `city_sequence_frame` prefix of the name, which the stem keeps.
    """

    def __init__(self, folder: str | Path, meta: DatasetMeta) -> None:
        self.folder = Path(folder)
        self.label_ids = self.folder / LABEL_IDS_DIR if meta.name == "cityscapes" else None
        if self.folder.is_dir() and next(self.folder.glob("*.png"), None) is not None:  # e.g. the dataset's own labels
            raise SettingError(
                f"`save_predictions` {self.folder} already holds PNG files, which would be replaced: choose a new or "
                "empty folder"
            )
        for path in filter(None, (self.folder, self.label_ids)):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SegrefineError(f"cannot create prediction folder {path}: {e.strerror}") from None

    def write(self, name: str, pred: Tensor) -> None:
        """Save one H×W map of train ids (atomically)."""
        train_ids = pred.to(device="cpu", dtype=torch.uint8).numpy()
        write_image(self.folder / f"{name}.png", train_ids)
        if self.label_ids is not None:
            write_image(self.label_ids / f"{name}.png", cityscapes.label_ids(train_ids))


class _Samples(Dataset):
    """The items of `dataset`, each passed through `load`; a SegrefineError is returned, not raised.

    A DataLoader worker would wrap a raised error into a multi-line message carrying its traceback; returning it
    lets the main process raise the user's one line.
    """

    def __init__(self, dataset: Dataset, load: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.dataset = dataset
        self.load = load

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any] | SegrefineError:
        try:
            sample = self.dataset[index]
            return self.load(sample) if self.load is not None else sample
        except SegrefineError as e:
            return e


def _with_prediction(folder: Path, num_classes: int, sample: dict[str, Any]) -> dict[str, Any]:
    """`sample` with its image replaced by its saved H×W map of train ids (255 allowed: no class), checked against
    its label; the prediction is None if the file is missing."""
    del sample["image"]
    path = folder / f"{sample['name']}.png"
    if not path.is_file():
        sample["prediction"] = None
        return sample
    pred = read_label_map(path, "prediction file", grey_rgb=False)  # what PredictionWriter writes, nothing else
    height, width = sample["label"].shape[-2:]
    if pred.shape != (height, width):
        raise SegrefineError(
            f"prediction file {path} is {pred.shape[0]}×{pred.shape[1]} but its label is {height}×{width} (H×W)"
        )
    bad = (pred >= num_classes) & (pred != IGNORE_INDEX)
    if bad.any():
        values = ", ".join(str(v) for v in np.unique(pred[bad])[:5])
        raise SegrefineError(
            f"prediction file {path} has values {values} outside the train ids 0..{num_classes - 1} (and 255)"
        )
    sample["prediction"] = pred
    return sample


def _loader(dataset: _Samples, batch_size: int, workers: int, device: torch.device) -> Iterator[list[dict[str, Any]]]:
    """Batches as lists of samples, in order; a SegrefineError a sample carries is raised here."""
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=list,
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    for batch in loader:
        for sample in batch:
            if isinstance(sample, SegrefineError):
                raise sample
        yield batch


def _size(sample: dict[str, Any]) -> tuple[torch.Size, torch.Size]:
    """Samples of one image and label size can be stacked."""
    return sample["image"].shape, sample["label"].shape


def _score(
    pairs: Iterable[tuple[Tensor, Tensor]],
    meta: DatasetMeta,
    *,
    total: int,
    device: torch.device,
    boundary_ratio: float | None,
    progress: bool,
    description: str,
) -> dict[str, Any]:
    """Accumulate (prediction, label) pairs into one confusion matrix on `device`; the summary of all processes."""
    metrics = SegmentationMetrics(meta.num_classes, boundary_ratio=boundary_ratio)
    # The bar goes to stderr (stdout stays clean for --json), on a terminal only.
    with progress_bar(description, enabled=progress and distributed.current().is_main) as bar:
        task = bar.add_task(description, total=total)
        for pred, label in pairs:
            metrics.update(pred.to(device), label.to(device, non_blocking=True))
            bar.advance(task)
    result = metrics.reduce().compute()
    return summary(result, meta.classes)


def _mapped(labels: Tensor, lut: np.ndarray | None) -> Tensor:
    """Class ids sent through a class map's lookup table (255 stays 255); unchanged without one."""
    if lut is None:
        return labels
    return torch.from_numpy(lut).to(labels.device)[labels.long().clamp(0, IGNORE_INDEX)]


def model_meta(config: Mapping[str, Any]) -> DatasetMeta:
    """The classes a checkpoint predicts, from its config.json."""
    palette = tuple(tuple(int(v) for v in color) for color in config["palette"])
    flip_pairs = tuple(tuple(int(v) for v in pair) for pair in config.get("flip_pairs") or ())
    return DatasetMeta(str(config.get("dataset") or "model"), tuple(config["classes"]), palette, flip_pairs=flip_pairs)


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    meta: DatasetMeta,
    *,
    options: InferenceOptions | None = None,
    device: str | torch.device | None = None,
    workers: int = 0,
    save_predictions: str | Path | None = None,
    boundary_ratio: float | None = BOUNDARY_RATIO,
    progress: bool = True,
    scoring: Scoring | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Scores (fractions in [0, 1]) of `model` on every image of `dataset`, plus num_images, mode and options.

    `options` (or its fields as keywords) are those of `predict_probs`, with `batch_size` images per forward pass
    (default 1); horizontal flip swaps `meta.flip_pairs`. Logits are resized to the label size before the argmax.
    `device` defaults to the model's; the model is moved there, run in eval mode and put back into the mode it was
    in. `save_predictions` writes one train-id PNG per image (see `PredictionWriter`). `scoring` scores a model of
    other classes through a class map (`cross_taxonomy`); saved predictions keep the model's classes. Under
    torch.distributed every process must call this; all get the same result.
    """
    scoring = scoring or Scoring(meta, meta, meta)
    meta = scoring.model
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if num_classes is not None and num_classes != meta.num_classes:
        raise SegrefineError(
            f"the model predicts {num_classes} classes but dataset {meta.name} has {meta.num_classes} classes"
        )
    options = inference_options(options, settings)
    device = resolve_device(device) if device is not None else model_device(model)
    writer = PredictionWriter(save_predictions, meta) if save_predictions is not None else None
    shard = distributed.shard(dataset)

    def pairs() -> Iterator[tuple[Tensor, Tensor]]:
        for batch in _loader(_Samples(shard), options.batch_size or 1, workers, device):
            for _, group in itertools.groupby(batch, key=_size):
                run = list(group)
                images = torch.stack([s["image"] for s in run]).to(device, non_blocking=True)
                if images.dtype == torch.uint8:
                    images = normalize(images)
                probs = predict_probs(
                    model, images, options, num_classes=meta.num_classes, flip_pairs=meta.flip_pairs,
                    out_size=run[0]["label"].shape[-2:],
                )  # fmt: skip
                preds = class_labels(probs)
                del probs, images
                for sample, pred in zip(run, preds):
                    if writer is not None:
                        writer.write(sample["name"], pred)
                    yield _mapped(pred, scoring.prediction_lut), _mapped(sample["label"], scoring.label_lut)

    was_training = model.training
    model.to(device).eval()
    try:
        scores = _score(
            pairs(), scoring.scored, total=len(shard), device=device, boundary_ratio=boundary_ratio,
            progress=progress, description=f"eval {scoring.dataset.name} ({options.mode})",
        )  # fmt: skip
    finally:
        model.train(was_training)
    return {
        **scores,
        "num_images": len(dataset),
        "mode": options.mode,
        "scales": list(options.scales),
        "flip": options.flip,
        "crop": list(options.crop) if options.crop is not None else None,
        "stride": list(options.stride) if options.stride is not None else None,
        "short_side": options.short_side or None,
        "guided_filter": options.guided_filter,
        "unit": UNIT,
    }


def evaluate_predictions(
    pred_dir: str | Path,
    dataset: Dataset,
    meta: DatasetMeta,
    *,
    device: str | torch.device = "cpu",
    workers: int = 0,
    boundary_ratio: float | None = BOUNDARY_RATIO,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores (fractions in [0, 1]) of saved predictions `<pred_dir>/<image file stem>.png` (train ids).

    A prediction of the wrong size or with values outside 0..K-1 (255 counts as no class) is an error naming the
    file; images without a prediction are an error listing their stems.
    """
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise SegrefineError(f"prediction folder {folder} does not exist or is not a folder")
    device = torch.device(device)
    shard = distributed.shard(dataset)
    missing: list[str] = []

    def pairs() -> Iterator[tuple[Tensor, Tensor]]:
        samples = _Samples(shard, functools.partial(_with_prediction, folder, meta.num_classes))
        for batch in _loader(samples, 1, workers, device):
            for sample in batch:
                if sample["prediction"] is None:
                    missing.append(sample["name"])
                    continue
                yield torch.from_numpy(sample["prediction"]), sample["label"]
        if missing:
            shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise SegrefineError(
                f"{len(missing)} of {len(shard)} images have no prediction <stem>.png in {folder}: {shown}"
            )

    scores = _score(
        pairs(), meta, total=len(shard), device=device, boundary_ratio=boundary_ratio, progress=progress,
        description=f"eval {meta.name} (saved predictions)",
    )  # fmt: skip
    return {**scores, "num_images": len(dataset), "mode": "predictions", "unit": UNIT}


def evaluate(
    weights: str | Path | None = None,
    dataset: str = "camvid",
    *,
    data_root: str | Path | None = None,
    split: str = "val",
    predictions: str | Path | None = None,
    options: InferenceOptions | None = None,
    device: str | torch.device = "auto",
    workers: int = 0,
    save_predictions: str | Path | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    limit: int | None = None,
    progress: bool = False,
    class_map: str | Path | None = None,
    on_message: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Score a model (`weights`: any weights reference, default the shipped model) or saved prediction PNGs
    (`predictions`: a folder of `<image stem>.png` train ids) on a dataset split; every score is a fraction.

    The report holds mIoU, mAcc, aAcc, fwIoU, boundary_mIoU, per_class, num_images, the inference options, and
    dataset, split and weights (or predictions). `class_map` scores a model trained on other classes: a built-in
    map (`cityscapes:camvid`, either way round) or a JSON file {"finer class": "coarser class" or null}; scores
    are then in the coarser classes. `limit` scores only the first N images. `on_message` receives the line naming
    the model, `on_warning` any warning. `options` (or the fields of `InferenceOptions` as keywords) say how the
    model runs; `short_side` defaults to the side of the model's training images. Under torchrun every process
    calls this and gets the report.
    """
    options = inference_options(options, settings)
    if weights is not None and predictions is not None:
        raise SettingError("give either `weights` (score a model) or `predictions` (score saved PNGs), not both")
    # Saved predictions need no model: only a backend and precision (which the CLI always passes) may come along.
    how = replace(options, batch_size=options.batch_size or 1, backend=None, precision=InferenceOptions.precision)
    if predictions is not None and (how != InferenceOptions(batch_size=1) or save_predictions):
        raise SettingError(
            "`mode`, `crop`, `stride`, `scales`, `flip`, `short_side`, `guided_filter`, `batch_size` and `save_predictions` apply only "
            "with `weights`, not with `predictions`"
        )
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise SettingError(f"`limit` must be a whole number of at least 1, got {limit!r}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise SettingError(f"`workers` must be a whole number of at least 0, got {workers!r}")
    if class_map is not None and predictions is not None:
        raise SettingError("`class_map` applies only with `weights`: saved predictions do not say their classes")
    mapping = load_class_map(class_map) if class_map is not None else None
    run_device = resolve_device(device)
    meta = dataset_meta(dataset, data_root)
    data = build_dataset(dataset, data_root, split, **dict(dataset_options or {}))
    if limit is not None:
        data = Subset(data, range(min(limit, len(data))))
    ctx = distributed.setup(run_device.type)
    try:
        if predictions is None:
            # Through a class map the model's classes need not be the dataset's: the map is checked instead.
            warn = on_warning if ctx.is_main else None
            model, config, ref = load_for_dataset(weights, meta if mapping is None else None, run_device, warn=warn)
            scoring = cross_taxonomy(mapping, model_meta(config), meta) if mapping is not None else None
            if mapping is None:  # the dataset's classes, but a flip swaps the pairs the model learnt to swap
                meta = replace(meta, flip_pairs=model_meta(config).flip_pairs)
            if ctx.is_main and on_message is not None:
                on_message(describe(ref, config))
            model = for_inference(model, run_device, backend=options.backend, precision=options.precision)
            options = at_model_scale(options, config, model)
            report = evaluate_model(
                model, data, meta, options=options, device=run_device, workers=workers,
                save_predictions=save_predictions, progress=progress, scoring=scoring,
            )  # fmt: skip
            source = {"weights": ref, **({"class_map": mapping.name} if mapping is not None else {})}
        else:
            report = evaluate_predictions(
                predictions, data, meta, device=run_device, workers=workers, progress=progress
            )
            source = {"predictions": str(predictions)}
    finally:
        distributed.teardown()
    return {**report, "dataset": dataset, "split": split, **source}
