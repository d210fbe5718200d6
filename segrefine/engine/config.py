"""Training settings: one dataclass, resolved as recipe defaults ← config file ← command-line flags."""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from segrefine.engine.recipes import RECIPES
from segrefine.data.statistics import CLASS_WEIGHTS
from segrefine.errors import SegrefineError, SettingError
from segrefine.models import OUTPUT_STRIDE


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    recipe: str = ""  # empty: the dataset's default recipe
    data_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    variant: str = "lite"
    memory: bool = False
    srm: str = "full"
    srm_kernel: int = 3
    srm_mask: str = "softmax"
    crm: str = "attention"
    iters: int = 0
    batch_size: int = 0  # total over all processes
    crop: tuple[int, int] = (0, 0)
    scale: tuple[float, float] = (0.5, 2.0)
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    poly_power: float = 0.9
    loss: str = "ce"
    class_weight: str = "none"  # "none", "enet" (1 / ln(1.02 + p)) or "median" (median frequency balancing)
    train_split: str = "train"
    val_split: str = "val"
    pretrained_backbone: str = "none"
    eval_every: int = 0  # 0: only at the end
    save_every: int = 0  # 0: at each evaluation
    log_every: int = 10
    device: str = "auto"
    amp: bool | None = None  # None: on for CUDA, off for CPU
    seed: int = 0
    workers: int = 2
    out: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        for name in ("iters", "batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise SettingError(f"`{name}` must be a positive integer, got {getattr(self, name)}")
        for name in ("eval_every", "save_every", "workers"):
            if getattr(self, name) < 0:
                raise SettingError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if min(self.crop) < OUTPUT_STRIDE:
            raise SettingError(
                f"`crop` {self.crop[0]}×{self.crop[1]} is smaller than the network's output stride {OUTPUT_STRIDE}: "
                f"each side must be at least {OUTPUT_STRIDE} pixels (H×W)"
            )
        if not 0 < self.scale[0] <= self.scale[1]:
            raise SettingError(f"`scale` must be LOW,HIGH with 0 < LOW <= HIGH, got {self.scale}")
        if self.lr <= 0:
            raise SettingError(f"`lr` must be positive, got {self.lr}")
        for name in ("weight_decay", "momentum", "poly_power"):
            if getattr(self, name) < 0:
                raise SettingError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if self.loss not in ("ce", "ohem"):
            raise SettingError(f"`loss` must be ce or ohem, got {self.loss!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise SettingError(f"`class_weight` must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weight!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise SettingError(f"`device` must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TUPLES = ("crop", "scale")
_KINDS = {"int": "an integer", "float": "a finite number", "str": "a string", "bool": "true or false"}


def _check_type(name: str, value: Any, annotation: str) -> None:
    """A setting's value against its field's annotation (e.g. "int", "str | None", "tuple[int, int]");
    numbers must be finite."""
    options = [a.strip() for a in annotation.split("|")]
    if value is None and "None" in options:
        return
    kind = options[0]
    if kind.startswith("tuple["):
        items = [i.strip() for i in kind[len("tuple["):-1].split(",")]
        ok = isinstance(value, tuple) and len(value) == len(items) and all(_fits(v, i) for v, i in zip(value, items))
        what = f"{len(items)} {'integers' if items[0] == 'int' else 'finite numbers'}"
    elif kind.startswith("dict["):
        ok, what = isinstance(value, dict), "a table of KEY = VALUE options"
    else:
        ok, what = _fits(value, kind), _KINDS[kind]
    if not ok:
        shown = list(value) if isinstance(value, tuple) else value
        raise SettingError(f"`{name}` must be {what}{' or none' if 'None' in options else ''}, got {shown!r}")


def _fits(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, str)


def resolve_config(file_settings: dict[str, Any], flags: dict[str, Any]) -> TrainConfig:
    """Recipe defaults of the chosen dataset, then the config file's settings, then the flags given."""
    settings = {**file_settings, **{k: v for k, v in flags.items() if v is not None}}
    dataset = settings.get("dataset")
    if not dataset:
        raise SegrefineError("--dataset is required (or a `dataset` entry in --config)")
    from segrefine.data import DATASETS, dataset_meta  # noqa: F401  (validates the name with a suggestion)

    if dataset not in DATASETS:
        dataset_meta(dataset)
    recipe_name = settings.get("recipe") or dataset
    if recipe_name not in RECIPES:
        raise SegrefineError(f"unknown recipe {recipe_name!r}; known recipes: {', '.join(RECIPES)}")
    recipe = asdict(RECIPES[recipe_name])
    if recipe["dataset"] != dataset:
        raise SegrefineError(f"--recipe {recipe_name} is for dataset {recipe['dataset']}, not {dataset}")
    settings["recipe"] = recipe_name
    for key in _TUPLES:
        if isinstance(settings.get(key), list):  # TOML and JSON have no tuples
            settings[key] = tuple(settings[key])
    return TrainConfig(**{**recipe, **settings})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file; a run's own config.json (settings under "train") works as it is."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SegrefineError(f"--config {path}: cannot read it ({e.strerror})") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise SegrefineError(f"--config {path} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise SegrefineError(f"--config {path} must hold a table/object of settings")
    known = {f.name for f in fields(TrainConfig)}
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SegrefineError(f"--config {path} has unknown settings: {', '.join(unknown)}")
    return data
