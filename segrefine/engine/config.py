"""Training settings: one dataclass, resolved as recipe defaults ← config file ← command-line flags."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI, before it joined the standard library
    import tomli as tomllib

from segrefine.data import DATASETS, dataset_meta
from segrefine.data.statistics import CLASS_WEIGHTS
from segrefine.data.transforms import PHOTOMETRIC
from segrefine.engine.recipes import RECIPES
from segrefine.errors import SegrefineError, SettingError, check_fields
from segrefine.models.config import OUTPUT_STRIDE, ModelConfig


LOSSES = ("ce", "ohem")
# A crop larger than the scaled image is padded, so past a few thousand pixels a side it adds only padding; the
# recipes' largest is 1024, and 8192 still fits one sample in memory while catching slips like 100000x100000.
MAX_CROP = 8192
# Ten million iterations is 60 times the longest recipe (160k) and weeks of training; more is a slip of the keyboard.
MAX_ITERS = 10_000_000
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")  # what `device` settings may name (checked again when resolved)


def _help(text: str, choices: tuple = ()) -> dict[str, Any]:
    """Field metadata: the flag's help, and its choices when it has a fixed set."""
    return {"help": text, "choices": choices}


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; the train command's flags are made from these fields and their help."""

    dataset: str = field(metadata=_help("Dataset adapter (see `segrefine datasets`)."))
    recipe: str = field(default="", metadata=_help("Named recipe for the dataset (default: the dataset's own)."))
    data_root: str | None = field(default=None, metadata=_help("Folder holding the dataset."))
    dataset_options: dict[str, Any] = field(default_factory=dict, metadata=_help("Adapter option KEY=VALUE (repeatable), e.g. length=64 for toy."))
    model: ModelConfig = field(default_factory=ModelConfig)  # num_classes comes from the dataset
    iters: int = field(default=0, metadata=_help("Training iterations."))
    batch_size: int = field(default=0, metadata=_help("Total batch size over all processes."))
    crop: tuple[int, int] = field(default=(0, 0), metadata=_help("Training crop HxW."))
    scale: tuple[float, float] = field(default=(0.5, 2.0), metadata=_help("Random rescaling range LOW,HIGH (e.g. 0.5,2.0)."))
    lr: float = field(default=0.01, metadata=_help("Base learning rate (poly decay)."))
    weight_decay: float = field(default=5e-4, metadata=_help("SGD weight decay."))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum."))
    poly_power: float = field(default=0.9, metadata=_help("Power of the poly learning-rate decay."))
    loss: str = field(default="ce", metadata=_help("Cross-entropy or OHEM cross-entropy.", LOSSES))
    class_weight: str = field(default="none", metadata=_help("Weight classes by their pixel frequency in the training split: enet 1/ln(1.02+p), median frequency balancing.", CLASS_WEIGHTS))
    train_split: str = field(default="train", metadata=_help("Split to train on (camvid: trainval for the papers' protocol)."))
    val_split: str = field(default="val", metadata=_help("Split to validate on."))
    pretrained_backbone: str = field(default="none", metadata=_help("imagenet, a Hub repo id, a .safetensors file, or none."))
    init_weights: str = field(default="none", metadata=_help("Start from a trained network of the same switches and classes (a registry name, checkpoint folder or Hub repo): fine-tuning; none starts from `pretrained_backbone`."))
    photometric: str = field(default="jitter", metadata=_help("Image-only distortions: jitter (colour jitter) or camera (white balance, tone curve, monochrome, blur, noise, JPEG, vignetting: for photos from other cameras).", PHOTOMETRIC))
    eval_every: int = field(default=0, metadata=_help("Validate every N iterations (0: at the end only)."))
    save_every: int = field(default=0, metadata=_help("Write the `last` checkpoint every N iterations (0: at each validation)."))
    log_every: int = field(default=10, metadata=_help("Log every N iterations."))
    device: str = field(default="auto", metadata=_help("auto (CUDA if available), cpu, cuda, cuda:N or mps."))
    amp: bool | None = field(default=None, metadata=_help("Mixed precision (default: on for CUDA, off on CPU)."))
    seed: int = field(default=0, metadata=_help("Random seed."))
    workers: int = field(default=2, metadata=_help("Data-loading worker processes."))
    out: str | None = field(default=None, metadata=_help("Run folder (default: runs/train/expN)."))

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("iters", "batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise SettingError(f"`{name}` must be a positive integer, got {getattr(self, name)}")
        if self.iters > MAX_ITERS:
            raise SettingError(f"`iters` must be at most {MAX_ITERS}, got {self.iters}")
        if self.out is not None and not self.out.strip():
            raise SettingError("`out` must name a folder, got an empty string")
        self._check_not_negative("eval_every", "save_every", "workers")
        if min(self.crop) < OUTPUT_STRIDE:
            raise SettingError(
                f"`crop` {self.crop[0]}×{self.crop[1]} is smaller than the network's output stride {OUTPUT_STRIDE}: "
                f"each side must be at least {OUTPUT_STRIDE} pixels (H×W)"
            )
        if max(self.crop) > MAX_CROP:
            raise SettingError(f"`crop` {self.crop[0]}×{self.crop[1]} is too large: each side must be at most {MAX_CROP} pixels (H×W)")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise SettingError(f"`scale` must be LOW,HIGH with 0 < LOW <= HIGH, got {self.scale}")
        if self.lr <= 0:
            raise SettingError(f"`lr` must be positive, got {self.lr}")
        self._check_not_negative("weight_decay", "momentum", "poly_power")
        if self.loss not in LOSSES:
            raise SettingError(f"`loss` must be ce or ohem, got {self.loss!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise SettingError(f"`class_weight` must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weight!r}")
        if self.photometric not in PHOTOMETRIC:
            raise SettingError(f"`photometric` must be one of {', '.join(PHOTOMETRIC)}, got {self.photometric!r}")
        if not self.init_weights:
            raise SettingError("`init_weights` must name weights, or be none")
        if not DEVICE.fullmatch(self.device):
            raise SettingError(f"`device` must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _check_not_negative(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) < 0:
                raise SettingError(f"`{name}` must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_recipe(cls, dataset: str, recipe: str = "", **settings: Any) -> "TrainConfig":
        """The dataset's recipe (or the named one) with `settings` changed, e.g.
        `TrainConfig.from_recipe("toy", iters=50, srm="bilinear")`; network switches may be given flat or as `model`."""
        return resolve_config({}, {"dataset": dataset, "recipe": recipe or None, **settings})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Settings as stored in a run's config.json ("train") or a config file: `model` a table of ModelConfig
        fields (older runs list them at the top level), tuples as lists."""
        data, model = _split_model(data)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise SettingError(f"unknown settings: {', '.join(f'`{name}`' for name in unknown)}")
        for key in ("crop", "scale"):
            if isinstance(data.get(key), list):  # TOML and JSON have no tuples
                data[key] = tuple(data[key])
        return cls(**data, model=ModelConfig.from_dict(model))


def resolve_config(file_settings: dict[str, Any], flags: dict[str, Any]) -> TrainConfig:
    """Recipe defaults of the chosen dataset, then the config file's settings, then the flags given."""
    settings = {**file_settings, **{k: v for k, v in flags.items() if v is not None}}
    dataset = settings.get("dataset")
    if not dataset:
        raise SettingError("`dataset` is required (or a `dataset` entry in the `config` file)")
    if dataset not in DATASETS:
        dataset_meta(dataset)  # raises, suggesting a known name
    recipe_name = settings.get("recipe") or dataset
    if recipe_name not in RECIPES and not settings.get("recipe"):
        raise SettingError(f"`dataset` {dataset} has no training recipe: segrefine scores models on it, not trains them")
    if recipe_name not in RECIPES:
        raise SegrefineError(f"unknown recipe {recipe_name!r}; known recipes: {', '.join(RECIPES)}")
    recipe = asdict(RECIPES[recipe_name])
    if recipe["dataset"] != dataset:
        raise SettingError(f"`recipe` {recipe_name} is for dataset {recipe['dataset']}, not {dataset}")
    settings["recipe"] = recipe_name
    # Dataset options add up key by key: a flag changes one option, not the whole table of the file or the recipe.
    tables = [recipe.get("dataset_options"), file_settings.get("dataset_options"), flags.get("dataset_options")]
    if all(table is None or isinstance(table, dict) for table in tables):  # else from_dict says what is wrong
        settings["dataset_options"] = {k: v for table in tables if table for k, v in table.items()}
    return TrainConfig.from_dict({**recipe, **settings})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file; a run's own config.json (settings under "train") works as it is."""
    path = Path(path)
    kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
    if path.suffix.lower() not in (".toml", ".json"):
        raise SettingError(f"`config` {path} must be a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SettingError(f"`config` {path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise SettingError(f"`config` {path} is not a UTF-8 text file, as {kind} must be") from None
    try:
        data = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise SettingError(f"`config` {path} is not valid {kind}: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise SettingError(f"`config` {path} must hold a table/object of settings")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    if not isinstance(data.get("model", {}), dict):
        raise SettingError(f"`config` {path}: its model entry must be a table of network switches")
    data, model = _split_model(data)
    known_model = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(data) - {f.name for f in fields(TrainConfig)}) + sorted(f"model.{k}" for k in set(model) - known_model)
    if unknown:
        raise SettingError(f"`config` {path} has unknown settings: {', '.join(unknown)}")
    return {**data, **model}


def _split_model(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, network switches): the `model` table merged with switches given at the top level."""
    settings = dict(settings)
    model = {k.replace("-", "_"): v for k, v in dict(settings.pop("model", None) or {}).items()}
    model.update({f.name: settings.pop(f.name) for f in fields(ModelConfig) if f.name in settings})
    return settings, model
