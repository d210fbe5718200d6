"""The training loop: SGD with poly decay, the heads' losses, the memory update, AMP, DDP, checkpoints, resume."""

from __future__ import annotations

import contextlib
import resource
import shutil
import time
from dataclasses import dataclass, field, replace
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
from segrefine.engine.config import TrainConfig, read_config_file
from segrefine.engine.losses import segmentation_loss
from segrefine.engine.device import resolve_device
from segrefine.engine.progress import TrainProgress
from segrefine.engine.run_folder import RUNS_ROOT, RunFolder
from segrefine.engine.sampling import SeededSamples, StreamBatchSampler, collate_or_error
from segrefine.errors import SegrefineError, SettingError
from segrefine.hub import (
    WEIGHTS_NAME, HubUnreachable, SegRefineModel, checkpoint_config, fetch_backbone,
    load_backbone_weights, load_state, load_state_dict_strict, load_weights_file, resolve, save_checkpoint,
)  # fmt: skip

RUNTIME_SETTINGS = ("device", "workers", "amp")  # what a resumed run may change: how it runs, not what it trains


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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; says where the last checkpoint is and how to continue from it."""

    def __init__(self, run_dir: Path, iteration: int, saved: int | None) -> None:
        self.run_dir, self.iteration, self.saved = run_dir, iteration, saved
        super().__init__(self.describe(f"segrefine.resume({str(run_dir)!r})"))

    def describe(self, how_to_resume: str) -> str:
        """The message, with `how_to_resume` saying how to continue the run."""
        if self.saved is None:
            return (
                f"interrupted at iteration {self.iteration}, before the first checkpoint: nothing to resume in "
                f"{self.run_dir}"
            )
        return (
            f"interrupted at iteration {self.iteration}; the last checkpoint ({RunFolder(self.run_dir).last}) holds "
            f"iteration {self.saved}: continue with {how_to_resume}"
        )


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class _LogWindow:
    """The losses and images summed over the steps since the last log line; saved with each checkpoint, so that a
    resumed run writes the log lines the uninterrupted one would."""

    losses: dict[str, float] = field(default_factory=dict)
    images: int = 0
    steps: int = 0
    earlier: float = 0.0  # seconds of this window spent before a resume
    start: float = field(default_factory=time.perf_counter)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the window (all but its clock's start)."""
        seconds = self.earlier + time.perf_counter() - self.start
        return {"losses": self.losses, "images": self.images, "steps": self.steps, "earlier": seconds}

    def add(self, losses: dict[str, torch.Tensor], images: int) -> None:
        for k, v in losses.items():
            self.losses[k] = self.losses.get(k, 0.0) + float(v.detach())
        self.images += images
        self.steps += 1

    def record(self, step: int, lr: float, device: torch.device) -> dict[str, Any]:
        """The log line: mean losses, throughput and peak memory over the window."""
        seconds = self.earlier + time.perf_counter() - self.start
        means = {("loss" if k == "total" else f"loss_{k}"): v / self.steps for k, v in self.losses.items()}
        return {"iter": step, **means, "lr": lr, "images_per_s": self.images / max(seconds, 1e-9),
                "memory_mb": _memory_mb(device), "time": round(time.time(), 3)}  # fmt: skip


class Trainer:
    """One training run; `run()` trains to `config.iters`, resuming from the run folder's last checkpoint if asked."""

    def __init__(self, config: TrainConfig, run_dir: Path, resume: bool = False, overwrite: bool = False) -> None:
        self.folder, self.resume, self.overwrite = RunFolder(run_dir), resume, overwrite
        self.start = self.step = 0  # the first iteration to run, the last one done
        self.saved: int | None = None  # the iteration checkpoints/last holds
        self.window = _LogWindow()
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

    @property
    def run_dir(self) -> Path:
        return self.folder.path

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
            folder = recover(self.folder.last)
            if folder is None:
                raise SettingError(
                    f"`resume`: {self.run_dir} has no complete checkpoint to resume from (start it over with `overwrite`)"
                )
            load_weights_file(unwrap(model), folder / WEIGHTS_NAME, str(folder))
            state = restore_trainer_state(folder, self.optimizer, self.scheduler, self.scaler)
            self.start, self.best = state["iteration"], state.get("best_miou", float("-inf"))
            self.saved = self.start
            self.window = _LogWindow(**state.get("log_window", {}))  # older checkpoints: a new window
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

    def _save(self, folder: Path, iteration: int, metrics: dict[str, Any] | None = None) -> None:
        if not self.ctx.is_main:
            return
        extra = {"best_miou": self.best, "log_window": self.window.state()}
        tensors, state = trainer_state(self.optimizer, self.scheduler, self.scaler, iteration, extra)

        def write(tmp: Path) -> None:
            save_checkpoint(unwrap(self.model), tmp, **self._info(), metrics=metrics)
            write_trainer_state(tmp, tensors, state)

        replace_folder(folder, write)

    def _info(self) -> dict[str, Any]:
        """What the run's config.json and its checkpoints record besides the network's switches."""
        meta = self.meta
        return {"dataset": self.config.dataset, "classes": meta.classes, "palette": meta.palette,
                "flip_pairs": meta.flip_pairs, "extra": {"train": self.config.to_dict()}}  # fmt: skip

    def _log(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
            self.folder.append_log(record)

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
            f"the last good checkpoint, from iteration {self.saved}, is {self.folder.last}"
            if self.saved is not None else "no checkpoint had been saved yet"
        )
        raise SettingError(
            f"training diverged at iteration {step}: the loss or the weights are no longer finite numbers (loss "
            f"{float(loss.detach()):.4g}); lower `lr` (now {self.config.lr:g}) and train again with a new `out` or with "
            f"`overwrite`; {where}"
        )

    def evaluate(self) -> dict[str, Any]:
        from segrefine.engine.evaluate import evaluate_model
        from segrefine.engine.inference import InferenceOptions, at_model_scale

        model = unwrap(self.model)
        if self.ctx.distributed:  # each process's last step moved its own BatchNorm statistics (and memory): score
            for buffer in model.buffers():  # the network that is saved, rank 0's, on every process
                dist.broadcast(buffer, src=0)
        model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            scale = at_model_scale(InferenceOptions(), {"dataset": self.config.dataset})  # as `segrefine eval` runs
            result = evaluate_model(
                model, self.val_set, self.meta, options=scale, device=self.device, workers=self.config.workers,
                progress=False,
            )  # fmt: skip
        model.train()
        return result

    def run(self) -> dict[str, Any] | None:
        """Build the network and train it, holding the run folder's lock (see `RunFolder.lock`) on the main process.

        An existing folder is locked before anything reads it (a resume); a new one is created only once the network
        is built, so a start that fails there (e.g. no Hub for the backbone) leaves nothing behind, and removed again
        when training fails before its first checkpoint (e.g. on a bad label file).
        """
        with contextlib.ExitStack() as held:
            existed = self.run_dir.exists()
            if existed:
                held.enter_context(self._lock())
            self._build()
            if not existed:
                held.enter_context(self._lock())
            try:
                return self._train()
            except SegrefineError:
                if not existed and self.saved is None and self.ctx.is_main:
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                raise

    def _lock(self) -> contextlib.AbstractContextManager:
        return self.folder.lock() if self.ctx.is_main else contextlib.nullcontext()

    def _train(self) -> dict[str, Any] | None:
        """Train from `start` to `config.iters`: step, log each window, validate, save; returns the last scores (None,
        said once, when a resumed run has no iterations left)."""
        cfg = self.config
        if self.resume and self.start >= cfg.iters:
            if self.ctx.is_main:
                TrainProgress(cfg.iters).note(
                    f"run {self.run_dir} is already complete ({self.start} of {cfg.iters} iterations): nothing to resume"
                )
            return None
        if self.ctx.is_main:
            self.folder.prepare(self.start if self.resume else None, self.overwrite)
            self.folder.write_config(checkpoint_config(cfg.model, **self._info()))
        distributed.barrier()
        eval_every = cfg.eval_every or cfg.iters
        save_every = cfg.save_every or eval_every
        metrics = None
        self.model.train()
        progress = TrainProgress(cfg.iters, self.start, enabled=self.ctx.is_main)
        if self.resume:
            progress.note(f"resuming from iteration {self.start}")
        self.window.start = time.perf_counter()  # the clock of a restored window runs on from here
        batches = iter(self._loader())
        with progress:
            for step in range(self.start + 1, cfg.iters + 1):
                lr = self.scheduler.get_last_lr()[0]
                self.window.add(*self._step(next(batches), step, lr))
                self.step = step
                record = None
                if self._due(step, cfg.log_every):
                    record, self.window = self.window.record(step, lr, self.device), _LogWindow()
                    self._log(record)
                progress.update(step, record)
                if self._due(step, eval_every):
                    metrics = self._validate(step, progress)
                if self._due(step, save_every):
                    self._save(self.folder.last, step, metrics)
                    self.saved = step
                    distributed.barrier()
        return metrics

    def _due(self, step: int, every: int) -> bool:
        """Whether something done every `every` iterations (and at the last one) is due after `step`."""
        return step % every == 0 or step == self.config.iters

    def _step(self, batch: dict[str, torch.Tensor] | SegrefineError, step: int, lr: float) -> tuple[dict, int]:
        """One optimisation step, the `step`-th, at learning rate `lr`; returns its losses and the images it saw."""
        if isinstance(batch, SegrefineError):  # raised by a DataLoader worker
            raise batch
        cfg = self.config
        images = batch["image"].to(self.device, non_blocking=True, memory_format=torch.channels_last)
        labels = batch["label"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            outputs = self.model(images)
            losses = segmentation_loss(outputs, labels, cfg.loss, self.class_weight)
        self._check_finite(step, losses["total"])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if cfg.model.memory:
            unwrap(self.model).memory.update(outputs["features"].detach(), labels, 0.9 * lr / cfg.lr)
        self._check_finite(step, losses["total"], weights=True)
        return losses, images.shape[0] * self.ctx.world_size

    def _validate(self, step: int, progress: TrainProgress) -> dict[str, float]:
        """Score the validation split after `step`: log it, keep the best checkpoint, write eval.json at the end."""
        summary = self.evaluate()
        metrics = {k: summary[k] for k in ("mIoU", "mAcc", "aAcc", "fwIoU", "boundary_mIoU")}
        self._log({"iter": step, "val": metrics, "time": round(time.time(), 3)})
        progress.note(f"iter {step}: val mIoU {metrics['mIoU']:.4f}")
        if metrics["mIoU"] > self.best:
            self.best = metrics["mIoU"]
            self._save(self.folder.best, step, metrics)
        if step == self.config.iters and self.ctx.is_main:
            self.folder.write_eval({"iter": step, **summary})
        return metrics


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Train (or resume) a run; returns the run folder. Under torchrun every process calls this.

    A folder `config.out` that already holds a run is continued with `resume` or started over with `overwrite`, and
    refused otherwise. Ctrl-C raises TrainingInterrupted (a KeyboardInterrupt) saying where the last checkpoint is.
    """
    if resume:
        run: RunFolder | None = RunFolder.to_resume(config.out)
    else:
        run = RunFolder(Path(config.out)) if config.out else None
    (run or RunFolder(RUNS_ROOT)).check_start(resume, overwrite)  # without `out`: the root of the numbered runs
    trainer = Trainer(config, run.path if run else RUNS_ROOT, resume=resume, overwrite=overwrite)  # validates first
    if run is None:
        trainer.folder = run = _agreed_run(trainer.ctx)
    try:
        trainer.run()
    except KeyboardInterrupt:
        raise TrainingInterrupted(run.path, trainer.step, trainer.saved) from None
    finally:
        distributed.teardown()
    return run.path


def resume(out: str | Path | None = None, **overrides: Any) -> Path:
    """Continue the run in `out` (default: the latest in runs/train) from its last checkpoint; returns its folder.

    The run keeps its settings: `overrides` may change only the runtime ones (device, workers, amp).
    """
    run = RunFolder.to_resume(out)
    settings = read_config_file(run.config)
    given = {k: v for k, v in overrides.items() if v is not None}
    stored, wanted = TrainConfig.from_dict(settings), TrainConfig.from_dict({**settings, **given})

    def value(config: TrainConfig, name: str) -> Any:  # a training setting, or a network switch given flat
        return getattr(config, name) if hasattr(config, name) else getattr(config.model, name)

    changed = sorted(k for k in given if k not in RUNTIME_SETTINGS and value(wanted, k) != value(stored, k))
    if changed:
        raise SettingError(
            f"`resume` continues {run.path} as configured; cannot change: {', '.join(f'`{k}`' for k in changed)}"
        )
    runtime = {k: getattr(wanted, k) for k in RUNTIME_SETTINGS}
    return train(replace(stored, **runtime, out=str(run.path)), resume=True)


def _agreed_run(ctx: distributed.Context) -> RunFolder:
    """Rank 0 picks the next free run folder and tells the others."""
    chosen = [str(RunFolder.next().path)] if ctx.is_main else [None]
    if ctx.distributed:
        dist.broadcast_object_list(chosen, src=0)
    return RunFolder(Path(chosen[0]))
