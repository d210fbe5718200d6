"""The model zoo registry (`weights/zoo.json`, installed as `segrefine.weights`): trained checkpoints and ImageNet
backbones.

Only real entries go there: checkpoints published on the Hub, and the embedded default, whose files ship inside the
package (its `repo` is empty until it is published). A backbone's `sha256` may be null when it is not known: its download is then
not hash-checked. A checkpoint's `sha256` is always required and always checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from segrefine.errors import SegrefineError, SettingError

SCHEMA_VERSION = 1
ZOO_PACKAGE = "segrefine.weights"
DEFAULT_TASK = "segmentation"  # the `default_for` value of the checkpoint used when no weights are given
ZOO_FILE = "zoo.json"

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelEntry:
    """A published, trained segrefine checkpoint."""

    name: str
    variant: str
    dataset: str
    num_classes: int
    classes: tuple[str, ...]
    repo: str
    revision: str
    file: str
    sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)
    default_for: tuple[str, ...] = ()
    embedded: str = ""  # folder inside the installed weights package holding config.json + `file`; "" if none


@dataclass(frozen=True)
class BackboneEntry:
    """An ImageNet classifier on the Hub whose state-dict keys match torchvision's ResNet."""

    arch: str
    variants: tuple[str, ...]
    repo: str
    revision: str
    file: str
    sha256: str | None
    description: str = ""


@dataclass(frozen=True)
class Registry:
    models: tuple[ModelEntry, ...]
    backbones: tuple[BackboneEntry, ...]

    def model(self, name: str) -> ModelEntry | None:
        return next((m for m in self.models if m.name == name), None)

    def backbone(self, arch_or_repo: str) -> BackboneEntry | None:
        return next((b for b in self.backbones if arch_or_repo in (b.arch, b.repo)), None)


def load_registry(path: str | Path | None = None) -> Registry:
    """The registry in `path`, or the one shipped with segrefine."""
    if path is None:
        return _packaged()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SegrefineError(f"cannot read the model registry {path}: {e.strerror}") from None
    return parse_registry(text, str(path))


@lru_cache(maxsize=1)
def _packaged() -> Registry:
    return parse_registry(files(ZOO_PACKAGE).joinpath(ZOO_FILE).read_text(), f"{ZOO_PACKAGE}/{ZOO_FILE}")


def embedded_path(entry: ModelEntry) -> Path | None:
    """The installed weights file of an embedded entry, or None when the entry is only on the Hub."""
    if not entry.embedded:
        return None
    return Path(str(files(ZOO_PACKAGE).joinpath(entry.embedded, entry.file)))


def parse_registry(text: str, source: str) -> Registry:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SegrefineError(f"{source} is not valid JSON: {e}") from None
    return validate_registry(data, source)


def validate_registry(data: Any, source: str) -> Registry:
    """Check the registry schema; every problem is a SegrefineError naming the entry and field."""
    _expect(isinstance(data, dict), source, "must be a JSON object")
    _keys(data, source, required={"schema_version", "models", "backbones"}, optional={"about"})
    _expect(data["schema_version"] == SCHEMA_VERSION, f"{source}: schema_version", f"must be {SCHEMA_VERSION}")
    for key in ("models", "backbones"):
        _expect(isinstance(data[key], list), f"{source}: {key}", "must be a list")
    models = tuple(_model(m, f"{source}: models[{i}]") for i, m in enumerate(data["models"]))
    backbones = tuple(_backbone(b, f"{source}: backbones[{i}]") for i, b in enumerate(data["backbones"]))
    _unique([m.name for m in models], f"{source}: models", "name")
    _unique([d for m in models for d in m.default_for], f"{source}: models", "default_for value")
    _unique([b.arch for b in backbones], f"{source}: backbones", "arch")
    _unique([b.repo for b in backbones], f"{source}: backbones", "repo")
    return Registry(models, backbones)


def default_model(dataset: str | None = None, registry: Registry | None = None) -> ModelEntry:
    """The checkpoint used when no weights are given: the dataset's registered default if it has one, else the
    default for segmentation in general."""
    registry = registry or load_registry()
    if dataset is not None and any(dataset in m.default_for for m in registry.models):
        return default_weights(dataset, registry)
    return default_weights(DEFAULT_TASK, registry)


def default_weights(dataset_or_task: str, registry: Registry | None = None) -> ModelEntry:
    """The published checkpoint registered as the default for a dataset or task."""
    registry = registry or load_registry()
    entry = next((m for m in registry.models if dataset_or_task in m.default_for), None)
    if entry is not None:
        return entry
    if not registry.models:
        raise SettingError(
            "the model registry holds no trained segrefine checkpoint yet: train one and pass it as `weights`"
        )
    names = ", ".join(m.name for m in registry.models)
    raise SettingError(
        f"the model registry has no default checkpoint for {dataset_or_task!r} (published: {names}); "
        "pass one as `weights`"
    )


def _model(entry: Any, where: str) -> ModelEntry:
    from segrefine.models.registry import VARIANTS

    _expect(isinstance(entry, dict), where, "must be a JSON object")
    required = {"name", "variant", "dataset", "num_classes", "classes", "repo", "revision", "file", "sha256", "metrics"}
    _keys(entry, where, required=required, optional={"default_for", "embedded"})
    _field(entry, where, "name", lambda v: isinstance(v, str) and _NAME.fullmatch(v), "lower-case letters, digits, . _ -")
    where = f"{where} ({entry['name']})"
    _field(entry, where, "variant", lambda v: v in VARIANTS, f"one of {', '.join(VARIANTS)}")
    _field(entry, where, "dataset", _text, "a non-empty string")
    _field(entry, where, "num_classes", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer")
    _field(
        entry,
        where,
        "classes",
        lambda v: isinstance(v, list) and len(v) == entry["num_classes"] and all(map(_text, v)),
        "a list of num_classes non-empty names",
    )
    embedded = entry.get("embedded", "")
    _field(entry, where, "embedded", lambda v: isinstance(v, str) and _NAME.fullmatch(v), "a folder name in weights/")
    unpublished = embedded and entry["repo"] == ""
    _field(
        entry, where, "repo", lambda v: unpublished or is_repo_id(v),
        "a Hub repo id owner/name (empty only for an embedded checkpoint not yet published)",
    )  # fmt: skip
    _field(entry, where, "revision", lambda v: _text(v) or (unpublished and v == ""), "a branch, tag or commit")
    _field(entry, where, "file", _repo_file, "a relative path ending in .safetensors")
    _field(entry, where, "sha256", lambda v: isinstance(v, str) and _SHA256.fullmatch(v), "64 lower-case hex digits")
    _field(
        entry,
        where,
        "metrics",
        lambda v: isinstance(v, dict) and all(isinstance(x, (int, float, str, bool)) for x in v.values()),
        "an object of numbers, strings or booleans (e.g. held_out: false)",
    )
    _field(entry, where, "default_for", lambda v: isinstance(v, list) and all(map(_text, v)), "a list of dataset or task names")
    # every key was checked against the fields above: the JSON lists become tuples, the entry its dataclass
    lists = {"classes": tuple(entry["classes"]), "default_for": tuple(entry.get("default_for", ()))}
    return ModelEntry(**{**entry, **lists, "metrics": dict(entry["metrics"]), "embedded": embedded})


def _backbone(entry: Any, where: str) -> BackboneEntry:
    _expect(isinstance(entry, dict), where, "must be a JSON object")
    _keys(entry, where, required={"arch", "variants", "repo", "revision", "file", "sha256"}, optional={"description"})
    _field(entry, where, "arch", lambda v: isinstance(v, str) and _NAME.fullmatch(v), "lower-case letters, digits, . _ -")
    where = f"{where} ({entry['arch']})"
    _field(entry, where, "variants", lambda v: isinstance(v, list) and all(map(_text, v)), "a list of variant names")
    _field(entry, where, "repo", is_repo_id, "a Hub repo id owner/name")
    _field(entry, where, "revision", _text, "a branch, tag or commit")
    _field(entry, where, "file", _repo_file, "a relative path ending in .safetensors")
    _field(entry, where, "sha256", lambda v: v is None or (isinstance(v, str) and _SHA256.fullmatch(v)), "null or 64 lower-case hex digits")
    _field(entry, where, "description", lambda v: isinstance(v, str), "a string")
    return BackboneEntry(**{**entry, "variants": tuple(entry["variants"])})


def is_repo_id(value: Any) -> bool:
    """Whether `value` is a Hub repo id owner/name, by huggingface_hub's own rules."""
    if not isinstance(value, str) or value.count("/") != 1:
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _repo_file(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value.endswith(".safetensors")
        and not value.startswith("/")
        and ".." not in value.split("/")
    )


def _field(entry: dict, where: str, key: str, ok: Callable[[Any], Any], expected: str) -> None:
    if key in entry and not ok(entry[key]):
        raise SegrefineError(f"{where}: {key} must be {expected}, got {entry[key]!r}")


def _keys(entry: dict, where: str, *, required: set[str], optional: set[str]) -> None:
    missing = sorted(required - set(entry))
    unknown = sorted(set(entry) - required - optional)
    _expect(not missing, where, f"lacks {', '.join(missing)}")
    _expect(not unknown, where, f"has unknown keys {', '.join(unknown)}")


def _unique(values: list[str], where: str, what: str) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    _expect(not repeated, where, f"repeat the {what} {', '.join(repeated)}")


def _expect(condition: Any, where: str, message: str) -> None:
    if not condition:
        raise SegrefineError(f"{where} {message}")
