"""The training loop: SGD with poly decay, the heads' losses, the memory update, AMP, DDP, checkpoints, resume."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from segrefine.data import build_dataset, dataset_meta
from segrefine.data.statistics import class_frequencies, class_weights
from segrefine.data.transforms import eval_transform, train_transform
from segrefine.engine import distributed
from segrefine.engine.checkpoint import recover, replace_folder, restore_trainer_state, trainer_state, write_trainer_state
from segrefine.engine.config import TrainConfig
from segrefine.engine.losses import segmentation_loss
from segrefine.engine.device import resolve_device
from segrefine.engine.progress import TrainProgress
from segrefine.engine.sampling import SeededSamples, StreamBatchSampler, collate_or_error
from segrefine.errors import SegrefineError, SettingError
from segrefine.imageio import folder_problem, write_json, write_text
from segrefine.hub import (
    CONFIG_NAME, RUN_BEST_DIR, RUN_CHECKPOINTS, RUN_LAST_DIR, WEIGHTS_NAME, HubUnreachable, SegRefineModel, checkpoint_config, fetch_backbone,
    load_backbone_weights, load_state, load_state_dict_strict, load_weights_file, resolve, save_checkpoint,
)  # fmt: skip

RUNS_ROOT = Path("runs/train")
LOG_FILE = "log.jsonl"
LOCK_FILE = ".lock"  # held by the live run (see run_lock)
EVAL_FILE = "eval.json"


def next_run_dir(root: Path = RUNS_ROOT) -> Path:
    """runs/train/exp, exp2, exp3, … : the first free one."""
    taken = {int(m[1] or 1) for p in root.glob("exp*") if (m := re.fullmatch(r"exp(\d*)", p.name))}
    n = next(i for i in range(1, len(taken) + 2) if i not in taken)
    return root / ("exp" if n == 1 else f"exp{n}")


def latest_run_dir(root: Path = RUNS_ROOT) -> Path | None:
    runs = [p for p in root.glob("exp*") if (p / CONFIG_NAME).is_file()]
    return max(runs, key=lambda p: (p / CONFIG_NAME).stat().st_mtime) if runs else None


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _autocast_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """bf16 where supported, else fp16 (with a grad scaler); None for fp32 (the CPU default)."""
    if not (amp if amp is not None else device.type == "cuda"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _init_backbone(model: nn.Module, source: str) -> None:
    """`imagenet` (the registry's source for this backbone), a Hub repo id, or a local .safetensors file."""
    backbone = model.backbone
    if source == "imagenet":
        source = backbone.name
    if Path(source).is_file():
        state = load_state(source)
    else:
        repo, _, revision = source.partition("@")
        try:
            state = fetch_backbone(repo, revision or None)
        except HubUnreachable as e:
            raise SettingError(
                f"{e}; or set `pretrained_backbone` to none (no ImageNet initialisation) or to a local .safetensors file"
            ) from None
    load_backbone_weights(backbone, state, source)


def _init_network(model: nn.Module, ref: str) -> None:
    """Every weight from a trained checkpoint of the same switches and classes (strict: a misfit names its keys)."""
    try:
        load_state_dict_strict(model, load_state(resolve(ref).weights_path), ref)
    except SettingError:
        raise
    except SegrefineError as e:  # worded as the setting, so the CLI names its flag
        raise SettingError(f"`init_weights`: {e}") from None


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds a training run worth keeping: a checkpoint. A run stopped before its first checkpoint
    left only its config and log, with nothing to resume: that never blocks a new start."""
    checkpoints = folder / RUN_CHECKPOINTS
    return checkpoints.is_dir() and any(p.is_dir() and not p.name.endswith(".tmp") for p in checkpoints.iterdir())


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an OS lock on the run folder (created if missing): a second run on it is refused while this one lives.

    The OS releases the lock when the process ends however it ends (Ctrl-C, a crash, kill -9), so a dead run never
    leaves its folder locked. Windows has no flock: there runs are not guarded.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(run_dir / LOCK_FILE, "a+")
    except OSError as e:
        raise SettingError(f"cannot create `out` {run_dir}: {e.strerror or e}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            raise SettingError(
                f"`out` {run_dir} is in use by another training run{f' (process {holder})' if holder else ''}: wait for "
                "it to end, or choose another `out`"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def _logged_iteration(line: str) -> int | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:  # the half-written last line of a killed run
        return None
    return record.get("iter") if isinstance(record, dict) else None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; says where the last checkpoint is and how to continue from it."""

    def __init__(self, run_dir: Path, iteration: int, saved: int | None) -> None:
        self.run_dir, self.iteration, self.saved = run_dir, iteration, saved
        super().__init__(self.describe("train(config, resume=True) with config.out set to it"))

    def describe(self, how_to_resume: str) -> str:
        """The message, with `how_to_resume` saying how to continue the run."""
        if self.saved is None:
            return (
                f"interrupted at iteration {self.iteration}, before the first checkpoint: nothing to resume in "
                f"{self.run_dir}"
            )
        return (
            f"interrupted at iteration {self.iteration}; the last checkpoint ({self.run_dir / RUN_LAST_DIR}) holds "
            f"iteration {self.saved}: continue with {how_to_resume}"
        )


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Trainer:
    """One training run; `run()` trains to `config.iters`, resuming from the run folder's last checkpoint if asked."""

    def __init__(self, config: TrainConfig, run_dir: Path, resume: bool = False, overwrite: bool = False) -> None:
        self.config, self.run_dir, self.resume, self.overwrite = config, run_dir, resume, overwrite
        self.start = self.step = 0  # the first iteration to run, the last one done
        self.saved: int | None = None  # the iteration checkpoints/last holds
        self.device = resolve_device(config.device)
        self.ctx = distributed.setup(self.device.type)
        if self.device.type == "cuda" and self.ctx.distributed:
            self.device = torch.device("cuda", self.ctx.local_rank)
        if config.batch_size % self.ctx.world_size:
            raise SettingError(
                f"`batch_size` {config.batch_size} is the total batch; it must divide by the {self.ctx.world_size} processes"
            )
        self.meta = dataset_meta(config.dataset, config.data_root)
        options = dict(config.dataset_options)
        self.train_set = build_dataset(
            config.dataset, config.data_root, config.train_split,
            train_transform(config.crop, config.scale, self.meta.flip_pairs, config.photometric), **options,
        )
        self.val_set = build_dataset(config.dataset, config.data_root, config.val_split, eval_transform(), **options)
        if len(self.train_set) == 0:
            raise SegrefineError(f"dataset {config.dataset}: the {config.train_split} split is empty")
        if config.batch_size > len(self.train_set):
            raise SettingError(
                f"`batch_size` {config.batch_size} is more than the {len(self.train_set)} images of the "
                f"{config.dataset} {config.train_split} split: each batch would repeat images; use at most {len(self.train_set)}"
            )
        self.class_weight = class_weights(
            config.class_weight,
            class_frequencies(self.train_set, self.meta.num_classes) if config.class_weight != "none" else None,
        )
        # The network predicts the dataset's classes; the run's config.json records the resolved settings.
        self.config = replace(config, model=replace(config.model, num_classes=self.meta.num_classes))

    # --- setup --------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        model = SegRefineModel(cfg.model, self._info())
        if not self.resume:  # a resumed run takes every weight from its checkpoint below
            if cfg.init_weights != "none":
                _init_network(model, cfg.init_weights)
            elif cfg.pretrained_backbone != "none":
                _init_backbone(model, cfg.pretrained_backbone)
        # channels-last runs the convolutions 1.3-1.5× faster on CPU and on CUDA tensor cores
        model.to(self.device, memory_format=torch.channels_last)
        if self.class_weight is not None:
            self.class_weight = self.class_weight.to(self.device)
        if self.ctx.distributed:
            if self.device.type == "cuda":  # SyncBatchNorm runs on GPUs only; gloo keeps per-process statistics
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = model
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.PolynomialLR(self.optimizer, total_iters=cfg.iters, power=cfg.poly_power)
        self.autocast_dtype = _autocast_dtype(self.device, cfg.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self.best = float("-inf")
        if self.resume:
            folder = recover(self.run_dir / RUN_LAST_DIR)
            if folder is None:
                raise SettingError(
                    f"`resume`: {self.run_dir} has no complete checkpoint to resume from (start it over with `overwrite`)"
                )
            load_weights_file(unwrap(model), folder / WEIGHTS_NAME, str(folder))
            state = restore_trainer_state(folder, self.optimizer, self.scheduler, self.scaler)
            self.start, self.best = state["iteration"], state.get("best_miou", float("-inf"))
            self.saved = self.start
        self.step = self.start

    def _loader(self) -> DataLoader:
        cfg = self.config
        per_process = cfg.batch_size // self.ctx.world_size
        sampler = StreamBatchSampler(len(self.train_set), per_process, cfg.seed, self.start, self.ctx.rank, self.ctx.world_size)
        return DataLoader(
            SeededSamples(self.train_set, cfg.seed),
            batch_sampler=sampler,
            num_workers=cfg.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=cfg.workers > 0,
            generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
            collate_fn=collate_or_error,  # a worker's error arrives as the batch: raised in `run` as one line
        )

    # --- files --------------------------------------------------------------------------------------------------

    def _save(self, folder: Path, iteration: int, metrics: dict[str, Any] | None = None) -> None:
        tensors, state = trainer_state(
            self.optimizer, self.scheduler, self.scaler, iteration, {"best_miou": self.best}
        )
        if self.ctx.is_main:
            replace_folder(self.run_dir / folder, lambda tmp: self._write_checkpoint(tmp, tensors, state, metrics))

    def _write_checkpoint(self, folder: Path, tensors: dict, state: dict, metrics: dict | None) -> None:
        save_checkpoint(unwrap(self.model), folder, **self._info(), metrics=metrics)
        write_trainer_state(folder, tensors, state)

    def _info(self) -> dict[str, Any]:
        """What the run's config.json and its checkpoints record besides the network's switches."""
        meta = self.meta
        return {"dataset": self.config.dataset, "classes": meta.classes, "palette": meta.palette,
                "flip_pairs": meta.flip_pairs, "extra": {"train": self.config.to_dict()}}  # fmt: skip

    def _write_run_config(self) -> None:
        write_json(self.run_dir / CONFIG_NAME, checkpoint_config(self.config.model, **self._info()))

    def _log(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
            try:
                with open(self.run_dir / LOG_FILE, "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:
                raise SegrefineError(f"cannot write {self.run_dir / LOG_FILE}: {e.strerror or e}") from None

    def _prepare_folder(self) -> None:
        """Create the run folder; a resumed run's log loses the lines of iterations it replays, an overwritten run's
        old log, checkpoints and scores go."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SettingError(f"cannot create `out` {self.run_dir}: {e.strerror or e}") from None
        log = self.run_dir / LOG_FILE
        if self.resume:
            if log.is_file():
                lines = log.read_text().splitlines()
                kept = [line for line in lines if (it := _logged_iteration(line)) is not None and it <= self.start]
                write_text(log, "".join(line + "\n" for line in kept))
            return
        log.unlink(missing_ok=True)
        if self.overwrite:
            shutil.rmtree(self.run_dir / RUN_CHECKPOINTS, ignore_errors=True)
            (self.run_dir / EVAL_FILE).unlink(missing_ok=True)

    def _check_finite(self, step: int, loss: torch.Tensor, weights: bool = False) -> None:
        """Stop at a non-finite loss (before its backward pass) or weight (before the next forward pass): NaN and
        infinite values can crash the SRM's sampling in either pass instead of raising."""
        values = [loss.detach().float()]
        if weights:  # parameters and buffers (BatchNorm statistics, the class memory): what a checkpoint saves
            state = [t for t in unwrap(self.model).state_dict().values() if t.is_floating_point()]
            values.append(torch.nn.utils.get_total_norm(state, norm_type=float("inf")).float())
        finite = torch.stack(values).isfinite().all().float()
        if self.ctx.distributed:  # every process stops together
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item():
            return
        where = (
            f"the last good checkpoint, from iteration {self.saved}, is {self.run_dir / RUN_LAST_DIR}"
            if self.saved is not None else "no checkpoint had been saved yet"
        )
        raise SettingError(
            f"training diverged at iteration {step}: the loss or the weights are no longer finite numbers (loss "
            f"{float(loss.detach()):.4g}); lower `lr` (now {self.config.lr:g}) and train again with a new `out` or with "
            f"`overwrite`; {where}"
        )

    # --- loop ---------------------------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        from segrefine.engine.evaluate import evaluate_model

        model = unwrap(self.model)
        model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            result = evaluate_model(
                model, self.val_set, self.meta, device=self.device, workers=self.config.workers, progress=False
            )
        model.train()
        return result

    def run(self) -> dict[str, Any] | None:
        """Build the network and train it, holding the run folder's lock (see `run_lock`) on the main process.

        An existing folder is locked before anything reads it (a resume); a new one is created only once the network
        is built, so a start that fails there (e.g. no Hub for the backbone) leaves nothing behind.
        """
        with contextlib.ExitStack() as held:
            existed = self.run_dir.exists()
            if existed:
                held.enter_context(self._lock())
            self._build()
            if not existed:
                held.enter_context(self._lock())
            return self._train()

    def _lock(self) -> contextlib.AbstractContextManager:
        return run_lock(self.run_dir) if self.ctx.is_main else contextlib.nullcontext()

    def _train(self) -> dict[str, Any] | None:
        cfg = self.config
        if self.resume and self.start >= cfg.iters:
            if self.ctx.is_main:
                TrainProgress(cfg.iters).note(
                    f"run {self.run_dir} is already complete ({self.start} of {cfg.iters} iterations): nothing to resume"
                )
            return None
        if self.ctx.is_main:
            self._prepare_folder()
            self._write_run_config()
        distributed.barrier()
        eval_every = cfg.eval_every or cfg.iters
        save_every = cfg.save_every or eval_every
        model, metrics = self.model, None
        model.train()
        progress = TrainProgress(cfg.iters, self.start, enabled=self.ctx.is_main)
        if self.resume:
            progress.note(f"resuming from iteration {self.start}")
        window: dict[str, float] = {}
        window_start, window_images, window_steps = time.perf_counter(), 0, 0
        batches = iter(self._loader())
        with progress:
            for it in range(self.start, cfg.iters):
                batch = next(batches)
                if isinstance(batch, SegrefineError):  # raised by a DataLoader worker
                    raise batch
                images = batch["image"].to(self.device, non_blocking=True, memory_format=torch.channels_last)
                labels = batch["label"].to(self.device, non_blocking=True)
                lr = self.scheduler.get_last_lr()[0]
                with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                    enabled=self.autocast_dtype is not None):
                    outputs = model(images)
                    losses = segmentation_loss(outputs, labels, cfg.loss, self.class_weight)
                self._check_finite(it + 1, losses["total"])
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(losses["total"]).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                if self.config.model.memory:
                    unwrap(model).memory.update(outputs["features"].detach(), labels, 0.9 * lr / cfg.lr)
                self._check_finite(it + 1, losses["total"], weights=True)
                step = self.step = it + 1
                for k, v in losses.items():
                    window[k] = window.get(k, 0.0) + float(v.detach())
                window_images += images.shape[0] * self.ctx.world_size
                window_steps += 1
                if step % cfg.log_every == 0 or step == cfg.iters:
                    seconds = time.perf_counter() - window_start
                    losses_mean = {("loss" if k == "total" else f"loss_{k}"): v / window_steps for k, v in window.items()}
                    record = {"iter": step, **losses_mean, "lr": lr, "images_per_s": window_images / max(seconds, 1e-9),
                              "memory_mb": _memory_mb(self.device), "time": round(time.time(), 3)}
                    self._log(record)
                    progress.update(step, record)
                    window, window_start, window_images, window_steps = {}, time.perf_counter(), 0, 0
                else:
                    progress.update(step, None)
                if step % eval_every == 0 or step == cfg.iters:
                    summary = self.evaluate()
                    metrics = {k: summary[k] for k in ("mIoU", "mAcc", "aAcc", "fwIoU", "boundary_mIoU")}
                    self._log({"iter": step, "val": metrics, "time": round(time.time(), 3)})
                    progress.note(f"iter {step}: val mIoU {metrics['mIoU']:.4f}")
                    if metrics["mIoU"] > self.best:
                        self.best = metrics["mIoU"]
                        self._save(RUN_BEST_DIR, step, metrics)
                    if step == cfg.iters and self.ctx.is_main:
                        write_json(self.run_dir / EVAL_FILE, {"iter": step, **summary})
                if step % save_every == 0 or step == cfg.iters:
                    self._save(RUN_LAST_DIR, step, metrics)
                    self.saved = step
                    distributed.barrier()
        return metrics


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Train (or resume) a run; returns the run folder. Under torchrun every process calls this.

    A folder `config.out` that already holds a run is continued with `resume` or started over with `overwrite`, and
    refused otherwise. Ctrl-C raises TrainingInterrupted (a KeyboardInterrupt) saying where the last checkpoint is.
    """
    if resume:
        run_dir = Path(config.out) if config.out else latest_run_dir()
        if run_dir is None or not (run_dir / CONFIG_NAME).is_file():
            where = config.out or RUNS_ROOT
            raise SettingError(f"`resume`: no training run found in {where} (start one without `resume`)")
    else:
        run_dir = Path(config.out) if config.out else None
        if run_dir is not None and run_dir.is_dir() and holds_run(run_dir) and not overwrite:
            raise SettingError(
                f"`out` {run_dir} already holds a training run: continue it with `resume`, replace it with "
                f"`overwrite`, or choose another `out`"
            )
    problem = folder_problem(run_dir or RUNS_ROOT)
    if problem:
        raise SettingError(f"`out` {problem}")
    trainer = Trainer(config, run_dir or RUNS_ROOT, resume=resume, overwrite=overwrite)  # validates before any write
    if run_dir is None:
        run_dir = _agreed_run_dir(trainer.ctx)
        trainer.run_dir = run_dir
    try:
        trainer.run()
    except KeyboardInterrupt:
        raise TrainingInterrupted(run_dir, trainer.step, trainer.saved) from None
    finally:
        distributed.teardown()
    return run_dir


def _agreed_run_dir(ctx: distributed.Context) -> Path:
    """Rank 0 picks the next free run folder and tells the others."""
    chosen = [str(next_run_dir())] if ctx.is_main else [None]
    if ctx.distributed:
        dist.broadcast_object_list(chosen, src=0)
    return Path(chosen[0])


def resumed_config(run_dir: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The settings of an existing run; only runtime settings (device, workers, AMP) may change."""
    from segrefine.engine.config import read_config_file

    settings = read_config_file(run_dir / CONFIG_NAME)
    allowed = {"device", "workers", "amp", "out"}
    changed = sorted(k for k, v in overrides.items() if v is not None and k not in allowed and settings.get(k) != v)
    if changed:
        raise SettingError(f"`resume` continues {run_dir} as configured; cannot change: {', '.join(changed)}")
    settings.update({k: v for k, v in overrides.items() if v is not None and k in allowed})
    settings["out"] = str(run_dir)
    return TrainConfig.from_dict(settings)

