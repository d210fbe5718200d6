"""`segrefine train`: fit a model on a dataset (1 CPU, 1 GPU, or many GPUs via torchrun).

Its flags are made from the fields of `TrainConfig` and `ModelConfig` (name, type, choices and help), so the command
line and the Python API cannot drift apart.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import Field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from segrefine.cli.options import parse_key_values, parse_size
from segrefine.engine.config import TrainConfig, read_config_file, resolve_config
from segrefine.engine.train import TrainingInterrupted, resumed_config, train as run_training
from segrefine.errors import Interrupted, SegrefineError, SettingError, flag
from segrefine.models.config import ModelConfig


def parse_scale(text: str) -> tuple[float, float]:
    """LOW,HIGH as two numbers; TrainConfig checks that they are finite and 0 < LOW <= HIGH."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise SegrefineError(f"--scale must be LOW,HIGH (two numbers, e.g. 0.5,2.0), got {text!r}") from None
    return low, high

EPILOG = (
    "Every setting defaults to the dataset's recipe (or --recipe): `segrefine datasets` lists each recipe's crop, "
    "batch size, iterations, loss, lr and backbone. A --config file (TOML or JSON; a run's config.json works) "
    "overrides the recipe, and flags override both. Multi-GPU: torchrun --nproc-per-node N -m segrefine train …"
)

# Settings whose flag takes text that is parsed into the setting's value.
_PARSERS: dict[str, Callable[[Any], Any]] = {
    "crop": lambda text: parse_size(text, "--crop"),
    "scale": parse_scale,
    "dataset_options": lambda items: parse_key_values(items, "--dataset-option") or None,
}
_SCALAR = {"int": int, "float": float, "str": str, "bool": bool}
# Settings that are not flags: the class count comes from the dataset.
_NOT_FLAGS = ("model", "num_classes")


def _option(f: Field) -> inspect.Parameter:
    """The typer option of one config field: `batch_size` -> --batch-size, `memory` -> --memory/--no-memory."""
    kind = str(f.type).split("|")[0].strip()
    name = "--dataset-option" if f.name == "dataset_options" else flag(f.name)
    choices = f.metadata.get("choices", ())
    if f.name in _PARSERS:
        annotation: Any = list[str] if f.name == "dataset_options" else str
    elif choices:
        annotation = Literal[tuple(str(c) for c in choices)]
    else:
        annotation = _SCALAR[kind]
    if annotation is bool:
        name = f"{name}/--no-{name[2:]}"
    option = typer.Option(name, help=f.metadata.get("help", ""), show_default=False)
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[annotation], option]
    )


def _flag_fields() -> list[Field]:
    return [f for config in (TrainConfig, ModelConfig) for f in fields(config) if f.name not in _NOT_FLAGS]


def _settings(values: dict[str, Any]) -> dict[str, Any]:
    """Flag values as settings: parsed where a flag takes text, numbers for numeric choices, unset flags left out."""
    types = {f.name: str(f.type) for f in _flag_fields()}
    settings = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in _PARSERS:
            value = _PARSERS[name](value)
        elif types[name] == "int" and isinstance(value, str):  # a numeric choice, e.g. --srm-kernel 5
            value = int(value)
        settings[name] = value
    return settings


def train(
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML or JSON settings file.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out (default: the latest run) from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start the run in --out over, deleting its log, checkpoints and scores.")] = False,
    **values: Any,
) -> None:
    """Train a model; writes config.json, log.jsonl, checkpoints/{last,best} and eval.json into the run folder.

    Settings not given default to the dataset's recipe (see `segrefine datasets`). A --config file overrides the
    recipe, flags override both. A --out folder that already holds a run needs --resume (continue it) or --overwrite
    (start it over).
    """
    flags = _settings(values)
    out = Path(flags["out"]) if "out" in flags else None
    if resume and overwrite:
        raise SegrefineError("--resume continues a run and --overwrite starts it over: give one of them")
    file_settings, source = {}, None  # where settings not given as flags came from
    if resume:
        if config is not None:
            raise SegrefineError("--resume takes its settings from the run folder; drop --config")
        from segrefine.engine.train import latest_run_dir
        from segrefine.hub import CONFIG_NAME

        run_dir = out or latest_run_dir()
        if run_dir is None or not (Path(run_dir) / CONFIG_NAME).is_file():
            raise SegrefineError(f"--resume: no training run found in {out or 'runs/train'} (start one without --resume)")
        source = Path(run_dir) / CONFIG_NAME
        file_settings = read_config_file(source)
    elif config is not None:
        file_settings, source = read_config_file(config), f"--config {config}"

    def word(setting: str) -> str:
        """A setting in a message: its flag, or where its value came from when that was a file."""
        if flags.get(setting) is None and setting in file_settings:
            return f"{setting} (from {source})"
        return flag(setting)

    try:
        settings = resumed_config(Path(run_dir), flags) if resume else resolve_config(file_settings, flags)
        run_dir = run_training(settings, resume=resume, overwrite=overwrite)
    except SettingError as e:
        raise e.worded(word) from None
    except TrainingInterrupted as e:
        resume_command = f"`segrefine train --resume --out {e.run_dir}`"
        raise Interrupted(e.describe(resume_command)) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 talks
        typer.echo(f"run folder: {run_dir}")


_own = list(inspect.signature(train, eval_str=True).parameters.values())[:-1]
train.__signature__ = inspect.Signature(_own + [_option(f) for f in _flag_fields()])  # type: ignore[attr-defined]
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}
