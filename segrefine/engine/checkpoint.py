"""Training checkpoints: weights + everything needed to resume, written so that a kill at any moment leaves the
last complete checkpoint intact.

A checkpoint is a folder (`<run>/checkpoints/last`, `.../best`) holding `config.json` + `model.safetensors` (a valid
weights reference on its own) plus `trainer.safetensors` (optimiser tensors, RNG states) and `trainer.json` (the
rest). Nothing is pickled. A folder is replaced by writing `<name>.tmp`, moving the old one to `<name>.old`, moving
the new one in place and deleting the old one; `recover` undoes an interrupted swap.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from segrefine.imageio import atomic_write

TRAINER_TENSORS = "trainer.safetensors"
TRAINER_STATE = "trainer.json"


def replace_folder(dst: Path, write: Callable[[Path], None]) -> None:
    """Atomically (as far as a folder can be) replace `dst` with what `write(folder)` puts into a fresh folder."""
    tmp, old = dst.with_name(dst.name + ".tmp"), dst.with_name(dst.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    for path in tmp.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def recover(dst: Path) -> Path | None:
    """The last complete version of checkpoint folder `dst` (restoring `<name>.old` after an interrupted swap)."""
    old = dst.with_name(dst.name + ".old")
    if not dst.exists() and old.is_dir():
        os.replace(old, dst)
    shutil.rmtree(dst.with_name(dst.name + ".tmp"), ignore_errors=True)
    return dst if (dst / TRAINER_STATE).is_file() else None


def trainer_state(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    iteration: int,
    extra: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON-able state) of everything besides the weights that resuming needs."""
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    opt = optimizer.state_dict()
    for pid, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"optimizer.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    state = {
        "iteration": iteration,
        "optimizer_param_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng_python": _jsonable(random.getstate()),
        **extra,
    }
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, state


def write_trainer_state(folder: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    atomic_write(folder / TRAINER_TENSORS, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write(folder / TRAINER_STATE, lambda tmp: tmp.write_text(json.dumps(state, indent=1)))


def restore_trainer_state(
    folder: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, Any]:
    """Load optimiser, scheduler, scaler and RNG states from a checkpoint folder; returns its JSON state."""
    state = json.loads((folder / TRAINER_STATE).read_text())
    tensors = load_file(str(folder / TRAINER_TENSORS))
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            slots.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state["optimizer_param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    # By device index: sorted as text, rng.cuda.10 would come before rng.cuda.2.
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(sum(k.startswith("rng.cuda.") for k in tensors))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    random.setstate(_tupled(state["rng_python"]))
    return state


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
