"""`segrefine train`: fit a model on a dataset (1 CPU, 1 GPU, or many GPUs via torchrun).

Its flags are made from the fields of `TrainConfig` and `ModelConfig` (name, type, choices and help), so the command
line and the Python API cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from segrefine.cli.options import flag_settings, with_config_flags
from segrefine.engine.config import TrainConfig, read_config_file, resolve_config
from segrefine.engine.distributed import launched_as_main
from segrefine.engine.run_folder import RunFolder
from segrefine.engine.train import TrainingInterrupted, resume as resume_run, train as run_training
from segrefine.errors import Interrupted, SegrefineError, SettingError, flag
from segrefine.models.config import ModelConfig


EPILOG = (
    "Every setting defaults to the dataset's recipe (or --recipe): `segrefine datasets` lists each recipe's crop, "
    "batch size, iterations, loss, lr and backbone. A --config file (TOML or JSON; a run's config.json works) "
    "overrides the recipe, and flags override both. Multi-GPU: torchrun --nproc-per-node N -m segrefine train …"
)

_CONFIGS = (TrainConfig, ModelConfig)
_NOT_FLAGS = ("model", "num_classes")  # the class count comes from the dataset


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
    flags = flag_settings(values, _CONFIGS, _NOT_FLAGS)
    if resume and overwrite:
        raise SegrefineError("--resume continues a run and --overwrite starts it over: give one of them")
    file_settings, source = {}, None  # where settings not given as flags came from

    def word(setting: str) -> str:
        """A setting in a message: its flag, or where its value came from when that was a file."""
        if flags.get(setting) is None and setting in file_settings:
            return f"{setting} (from {source})"
        if setting == "config" and config is None:  # the only file then read is the resumed run's
            return "the run's settings file"
        return flag(setting)

    if resume and config is not None:
        raise SegrefineError("--resume takes its settings from the run folder; drop --config")
    if config is not None:
        file_settings, source = read_config_file(config), f"--config {config}"
    try:
        if resume:
            source = RunFolder.to_resume(Path(flags["out"]) if "out" in flags else None).config
            file_settings = read_config_file(source)
            run_dir = resume_run(**flags)  # `out` among them when given
        else:
            run_dir = run_training(resolve_config(file_settings, flags), overwrite=overwrite)
    except SettingError as e:
        raise e.worded(word) from None
    except TrainingInterrupted as e:
        resume_command = f"`segrefine train --resume --out {e.run_dir}`"
        raise Interrupted(e.describe(resume_command)) from None
    if launched_as_main():  # under torchrun only rank 0 talks
        typer.echo(f"run folder: {run_dir}")


with_config_flags(train, _CONFIGS, _NOT_FLAGS)
