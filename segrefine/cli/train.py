"""`segrefine train`: fit a model on a dataset (1 CPU, 1 GPU, or many GPUs via torchrun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from segrefine.cli.options import CrmMode, SrmKernel, SrmMask, SrmMode, Variant, flag, parse_key_values, parse_size
from segrefine.engine.config import read_config_file, resolve_config
from segrefine.engine.train import TrainingInterrupted, resumed_config, train as run_training
from segrefine.errors import Interrupted, SegrefineError, SettingError


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


def train(
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset adapter (see `segrefine datasets`).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder holding the dataset.")] = None,
    recipe: Annotated[Optional[str], typer.Option("--recipe", help="Named recipe for the dataset (default: the dataset's own; see `segrefine datasets`).")] = None,
    train_split: Annotated[Optional[str], typer.Option("--train-split", help="Split to train on (camvid: trainval for the papers' protocol).")] = None,
    val_split: Annotated[Optional[str], typer.Option("--val-split", help="Split to validate on.")] = None,
    dataset_option: Annotated[Optional[list[str]], typer.Option("--dataset-option", help="Adapter option KEY=VALUE (repeatable), e.g. length=64 for toy.")] = None,
    variant: Annotated[Optional[Variant], typer.Option("--variant", help="Network variant.")] = None,
    memory: Annotated[Optional[bool], typer.Option("--memory/--no-memory", help="Add the MCIBI class memory.")] = None,
    srm: Annotated[Optional[SrmMode], typer.Option("--srm", help="SRM mode.")] = None,
    srm_kernel: Annotated[Optional[SrmKernel], typer.Option("--srm-kernel", help="SRM neighbourhood size.")] = None,
    srm_mask: Annotated[Optional[SrmMask], typer.Option("--srm-mask", help="SRM mask activation.")] = None,
    crm: Annotated[Optional[CrmMode], typer.Option("--crm", help="CRM mode.")] = None,
    iters: Annotated[Optional[int], typer.Option("--iters", help="Training iterations.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Total batch size over all processes.")] = None,
    crop: Annotated[Optional[str], typer.Option("--crop", help="Training crop HxW.")] = None,
    scale: Annotated[Optional[str], typer.Option("--scale", help="Random rescaling range LOW,HIGH (e.g. 0.5,2.0).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base learning rate (poly decay, power 0.9).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="SGD weight decay.")] = None,
    loss: Annotated[Optional[Literal["ce", "ohem"]], typer.Option("--loss", help="Cross-entropy or OHEM cross-entropy.")] = None,
    class_weight: Annotated[Optional[Literal["none", "enet", "median"]], typer.Option("--class-weight", help="Weight classes in the loss by their pixel frequency in the training split.")] = None,
    pretrained_backbone: Annotated[Optional[str], typer.Option("--pretrained-backbone", help="imagenet, a Hub repo id, a .safetensors file, or none.")] = None,
    eval_every: Annotated[Optional[int], typer.Option("--eval-every", help="Validate every N iterations (0: at the end only).")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", help="Write the `last` checkpoint every N iterations (0: at each validation).")] = None,
    log_every: Annotated[Optional[int], typer.Option("--log-every", help="Log every N iterations.")] = None,
    device: Annotated[Optional[Literal["auto", "cpu", "cuda"]], typer.Option("--device", help="Where to train.")] = None,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="Mixed precision (default: on for CUDA, off on CPU).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Data-loading worker processes.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default: runs/train/expN).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML or JSON settings file.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out (default: the latest run) from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start the run in --out over, deleting its log, checkpoints and scores.")] = False,
) -> None:
    """Train a model; writes config.json, log.jsonl, checkpoints/{last,best} and eval.json into the run folder.

    Settings not given default to the dataset's recipe (see `segrefine datasets`). A --out folder that already
    holds a run needs --resume (continue it) or --overwrite (start it over).
    """
    flags = {
        "dataset": dataset, "recipe": recipe, "train_split": train_split, "val_split": val_split,
        "scale": parse_scale(scale) if scale else None, "class_weight": class_weight, "data_root": str(data_root) if data_root else None,
        "dataset_options": parse_key_values(dataset_option, "--dataset-option") if dataset_option else None,
        "variant": variant, "memory": memory, "srm": srm, "srm_kernel": int(srm_kernel) if srm_kernel else None,
        "srm_mask": srm_mask, "crm": crm, "iters": iters, "batch_size": batch_size,
        "crop": parse_size(crop, "--crop") if crop else None, "lr": lr, "weight_decay": weight_decay, "loss": loss,
        "pretrained_backbone": pretrained_backbone, "eval_every": eval_every, "save_every": save_every,
        "log_every": log_every, "device": device, "amp": amp, "seed": seed, "workers": workers,
        "out": str(out) if out else None,
    }
    if resume and overwrite:
        raise SegrefineError("--resume continues a run and --overwrite starts it over: give one of them")
    file_settings, source = {}, None  # where settings not given as flags came from
    if resume:
        if config is not None:
            raise SegrefineError("--resume takes its settings from the run folder; drop --config")
        from segrefine.engine.train import CONFIG_FILE, latest_run_dir

        run_dir = out or latest_run_dir()
        if run_dir is None or not (Path(run_dir) / CONFIG_FILE).is_file():
            raise SegrefineError(f"--resume: no training run found in {out or 'runs/train'} (start one without --resume)")
        source = Path(run_dir) / CONFIG_FILE
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



