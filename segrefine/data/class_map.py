"""Class maps between taxonomies, for scoring a model on a dataset labelled with other classes.

A class map sends each class of a finer taxonomy to one class of a coarser one, or to nothing (ignored). Whichever
side of an evaluation is the finer one is mapped: a CamVid model on Cityscapes labels has the labels mapped, a
Cityscapes model on CamVid labels has its predictions mapped; scores are always in the coarser taxonomy's classes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segrefine.data.meta import IGNORE_INDEX, DatasetMeta
from segrefine.errors import SettingError

# Terrain (grass, soil, sand beside the road) is ignored: CamVid has no such class, and its annotators put such
# ground partly under Tree (its "vegetation misc") and partly under Road or Pavement (road shoulder, verge), so
# any one choice would score a model for a disagreement between the two taxonomies, not for its mistakes.
CITYSCAPES_TO_CAMVID: dict[str, str | None] = {
    "road": "Road",
    "sidewalk": "Pavement",
    "building": "Building",
    "wall": "Building",
    "fence": "Fence",
    "pole": "Pole",
    "traffic light": "SignSymbol",
    "traffic sign": "SignSymbol",
    "vegetation": "Tree",
    "terrain": None,
    "sky": "Sky",
    "person": "Pedestrian",
    "rider": "Bicyclist",
    "car": "Car",
    "truck": "Car",
    "bus": "Car",
    "train": None,
    "motorcycle": "Bicyclist",
    "bicycle": "Bicyclist",
}

CLASS_MAPS: dict[str, dict[str, str | None]] = {"cityscapes:camvid": CITYSCAPES_TO_CAMVID}


@dataclass(frozen=True)
class ClassMap:
    """`table`: class name of the finer taxonomy -> class name of the coarser one, or None (ignored)."""

    name: str
    table: Mapping[str, str | None]

    def lut(self, source: Sequence[str], target: Sequence[str]) -> np.ndarray:
        """256-entry lookup table from `source` class ids to `target` class ids (255 for ignored and unlisted)."""
        lut = np.full(256, IGNORE_INDEX, np.uint8)
        index = {name: i for i, name in enumerate(target)}
        for i, name in enumerate(source):
            mapped = self.table.get(name)
            if mapped is not None:
                lut[i] = index[mapped]
        return lut

    def problems(self, source: Sequence[str], target: Sequence[str], source_name: str, target_name: str) -> str:
        """Why this map cannot send classes `source` to classes `target` ("" if it can)."""
        unknown_source = [name for name in self.table if name not in source]
        unknown_target = sorted({t for t in self.table.values() if t is not None and t not in target})
        found = []
        if unknown_source:
            found.append(f"maps from {', '.join(map(repr, unknown_source))}, which {source_name} does not have")
        if unknown_target:
            found.append(f"maps to {', '.join(map(repr, unknown_target))}, which {target_name} does not have")
        return "; ".join(found)


def load_class_map(spec: str | Path) -> ClassMap:
    """A built-in map by name (`cityscapes:camvid`) or a JSON file {"finer class": "coarser class" or null}."""
    text = str(spec)
    if text in CLASS_MAPS:
        return ClassMap(text, CLASS_MAPS[text])
    path = Path(text).expanduser()
    if not path.is_file():
        known = ", ".join(CLASS_MAPS)
        raise SettingError(f"`class_map` {text!r} is neither a built-in map ({known}) nor a JSON file")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SettingError(f"`class_map` {path}: cannot read it as JSON ({e})") from None
    if not isinstance(table, dict) or not table or not all(
        isinstance(v, str) or v is None for v in table.values()
    ):
        raise SettingError(
            f'`class_map` {path} must be a non-empty JSON object of class names, {{"finer class": "coarser class" '
            f"or null}}"
        )
    return ClassMap(str(path), table)


@dataclass(frozen=True)
class Scoring:
    """How a model with the classes of `model` is scored on labels with the classes of `dataset`: in the classes
    of `scored`, with labels and/or predictions sent there through lookup tables (None: unchanged)."""

    model: DatasetMeta
    dataset: DatasetMeta
    scored: DatasetMeta
    label_lut: np.ndarray | None = None
    prediction_lut: np.ndarray | None = None


def cross_taxonomy(class_map: ClassMap, model: DatasetMeta, dataset: DatasetMeta) -> Scoring:
    """Score `model` on `dataset` through `class_map`, mapping whichever side the map starts from."""
    dataset_name, model_name = f"dataset {dataset.name}", f"the model ({model.name})"
    from_dataset = class_map.problems(dataset.classes, model.classes, dataset_name, model_name)
    if not from_dataset:
        return Scoring(model, dataset, model, label_lut=class_map.lut(dataset.classes, model.classes))
    if not class_map.problems(model.classes, dataset.classes, model_name, dataset_name):
        return Scoring(model, dataset, dataset, prediction_lut=class_map.lut(model.classes, dataset.classes))
    raise SettingError(f"`class_map` {class_map.name} does not fit: it {from_dataset}")
