"""Parsers and shared option definitions for the CLI; parse errors are one line naming the option."""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import Field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from segrefine.engine.inference import check_scales
from segrefine.errors import SegrefineError, SettingError, flag, worded
from segrefine.imageio import folder_problem

_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def output_folder(text: str | Path) -> Path:
    """Parser of --out: refuse an empty name (not the current folder), a file or an unwritable place before any work."""
    if not str(text).strip():
        raise SegrefineError("--out must name a folder, got an empty string")
    out = Path(text)
    problem = folder_problem(out)
    if problem:
        raise SegrefineError(f"--out {problem}")
    return out


def say(line: str) -> None:
    """A library message (the line naming a loaded model) on stderr."""
    print(line, file=sys.stderr)


def warning(message: str) -> None:
    """A library warning on stderr, settings worded as flags."""
    print(f"segrefine: warning: {worded(message)}", file=sys.stderr)


def parse_size(text: str, option: str) -> tuple[int, int]:
    """Parse 'HxW' (e.g. 1024x2048) into positive (H, W)."""
    match = _SIZE.match(text)
    if not match or int(match[1]) <= 0 or int(match[2]) <= 0:
        raise SegrefineError(f"{option} must be HxW with two positive integers (e.g. 1024x2048), got {text!r}")
    return int(match[1]), int(match[2])


def parse_scales(text: str, option: str = "--scales") -> tuple[float, ...]:
    """Parse a comma-separated list of positive numbers (e.g. 0.5,1.0,1.5)."""
    try:
        scales = tuple(float(s) for s in text.split(","))
        check_scales(scales)
    except (ValueError, SettingError):
        raise SegrefineError(f"{option} must be comma-separated positive numbers (e.g. 0.5,1.0,1.5), got {text!r}") from None
    return scales


def parse_key_values(items: list[str] | None, option: str) -> dict[str, object]:
    """Parse repeated KEY=VALUE options; values become ints, floats, HxW tuples, booleans or stay strings."""
    parsed: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SegrefineError(f"{option} must be KEY=VALUE (e.g. {option} length=8), got {item!r}")
        parsed[key.strip().replace("-", "_")] = _value(value.strip(), f"{option} {key.strip()}")
    return parsed


def _value(text: str, option: str) -> object:
    if _SIZE.match(text):
        return parse_size(text, option)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def parse_scale(text: str) -> tuple[float, float]:
    """LOW,HIGH as two numbers; TrainConfig checks that they are finite and 0 < LOW <= HIGH."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise SegrefineError(f"--scale must be LOW,HIGH (two numbers, e.g. 0.5,2.0), got {text!r}") from None
    return low, high


# --- flags made from settings dataclasses (TrainConfig, ModelConfig, InferenceOptions): name, type, choices, help --

# Settings whose flag takes text that typer parses into the setting's value.
_PARSERS: dict[str, Callable[[str], Any]] = {
    "crop": lambda text: parse_size(text, "--crop"),
    "stride": lambda text: parse_size(text, "--stride"),
    "scales": parse_scales,
    "scale": parse_scale,
}
_SCALAR = {"int": int, "float": float, "str": str, "bool": bool}
# Help for settings whose field carries none.
_HELP = {"num_classes": "Number of classes the network predicts."}


def _config_fields(configs: Sequence[type], exclude: Sequence[str]) -> list[Field]:
    return [f for config in configs for f in fields(config) if f.name not in exclude]


def _option(f: Field, defaults: bool) -> inspect.Parameter:
    """The typer option of one field: `batch_size` -> --batch-size, `memory` -> --memory/--no-memory (just --flip
    where the default is False). A flag not given is None, or with `defaults` the field's default."""
    name = flag(f.name)
    default = f.default if defaults and f.name not in _PARSERS else None
    if f.name == "dataset_options":  # repeated: parsed together in `flag_settings`
        annotation: Any = list[str]
    elif f.name in _PARSERS:
        annotation = str
    elif f.metadata.get("choices"):
        annotation = Literal[tuple(str(c) for c in f.metadata["choices"])]
    else:
        annotation = _SCALAR[str(f.type).split("|")[0].strip()]
    if annotation is bool and default is not False:
        name = f"{name}/--no-{name[2:]}"
    option = typer.Option(
        name, help=f.metadata.get("help", _HELP.get(f.name, "")), show_default=default not in (None, False),
        parser=_PARSERS.get(f.name),
    )  # fmt: skip
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[Optional[annotation], option]
    )


def with_config_flags(
    command: Callable[..., Any], configs: Sequence[type], exclude: Sequence[str] = (), *, defaults: bool = False
) -> None:
    """Give `command` (whose last parameter is **values) one flag per field of `configs` (see `_option`)."""
    own = list(inspect.signature(command, eval_str=True).parameters.values())[:-1]
    signature = inspect.Signature(own + [_option(f, defaults) for f in _config_fields(configs, exclude)])
    command.__signature__ = signature  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}


def flag_settings(values: dict[str, Any], configs: Sequence[type], exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The flags given (not None) as settings: the --dataset-option items as one dict, numbers for numeric choices."""
    types = {f.name: str(f.type) for f in _config_fields(configs, exclude)}
    settings = {}
    for name, value in values.items():
        if name == "dataset_options":
            value = parse_key_values(value, "--dataset-option") or None
        elif types[name] == "int" and isinstance(value, str):  # a numeric choice, e.g. --srm-kernel 5
            value = int(value)
        if value is not None:
            settings[name] = value
    return settings


Device = Annotated[str, typer.Option("--device", help="auto (CUDA if available), cpu, cuda, cuda:N or mps.")]

# Options several subcommands share, defined once.
Weights = Annotated[
    Optional[str],
    typer.Option("--weights", help="Run or checkpoint folder, .safetensors file, registry name, Hub id owner/name or owner/name@revision, or an exported .onnx file (default: the shipped model)."),
]
CheckpointWeights = Annotated[
    Optional[str],
    typer.Option("--weights", help="PyTorch checkpoint: run or checkpoint folder, .safetensors file, registry name, Hub id owner/name or owner/name@revision (default: the shipped model)."),
]
DatasetName = Annotated[str, typer.Option("--dataset", help="Dataset adapter (see `segrefine datasets`).")]
DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Folder holding the dataset.")]
DatasetOptions = Annotated[
    Optional[list[str]], typer.Option("--dataset-option", help="Adapter option KEY=VALUE (repeatable).")
]
