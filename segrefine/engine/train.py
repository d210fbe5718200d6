"""The training loop: SGD with poly decay, the heads' losses, the memory update, AMP, DDP, checkpoints, resume."""

from __future__ import annotations

import json
import re
import resource
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from segrefine import __version__
from segrefine.data import build_dataset, dataset_meta
from segrefine.data.statistics import class_frequencies, class_weights
from segrefine.data.transforms import eval_transform, train_transform
from segrefine.engine import distributed
from segrefine.engine.checkpoint import recover, replace_folder, restore_trainer_state, trainer_state, write_trainer_state
from segrefine.engine.config import TrainConfig
from segrefine.engine.losses import segmentation_loss
from segrefine.engine.device import resolve_device
from segrefine.engine.progress import TrainProgress
from segrefine.engine.sampling import SeededSamples, StreamBatchSampler
from segrefine.errors import SegrefineError
from segrefine.imageio import write_text
from segrefine.hub import RUN_BEST_DIR, RUN_LAST_DIR, fetch_backbone, save_pretrained
from segrefine.models import ModelConfig, build_model
from segrefine.models.backbone import load_imagenet_weights

RUNS_ROOT = Path("runs/train")
CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"
EVAL_FILE = "eval.json"


def next_run_dir(root: Path = RUNS_ROOT) -> Path:
    """runs/train/exp, exp2, exp3, … : the first free one."""
    taken = {int(m[1] or 1) for p in root.glob("exp*") if (m := re.fullmatch(r"exp(\d*)", p.name))}
    n = next(i for i in range(1, len(taken) + 2) if i not in taken)
    return root / ("exp" if n == 1 else f"exp{n}")


def latest_run_dir(root: Path = RUNS_ROOT) -> Path | None:
    runs = [p for p in root.glob("exp*") if (p / CONFIG_FILE).is_file()]
    return max(runs, key=lambda p: (p / CONFIG_FILE).stat().st_mtime) if runs else None


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
        from segrefine.hub import load_state

        state = load_state(source)
    else:
        repo, _, revision = source.partition("@")
        state = fetch_backbone(repo, revision or None)
    load_imagenet_weights(backbone, state, source)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Trainer:
    """One training run; `run()` trains to `config.iters`, resuming from the run folder's last checkpoint if asked."""

    def __init__(self, config: TrainConfig, run_dir: Path, resume: bool = False) -> None:
        self.config, self.run_dir, self.resume = config, run_dir, resume
        self.device = resolve_device(config.device)
        self.ctx = distributed.setup(self.device.type)
        if self.device.type == "cuda" and self.ctx.distributed:
            self.device = torch.device("cuda", self.ctx.local_rank)
        if config.batch_size % self.ctx.world_size:
            raise SegrefineError(
                f"--batch-size {config.batch_size} is the total batch; it must divide by the {self.ctx.world_size} processes"
            )
        self.meta = dataset_meta(config.dataset, config.data_root)
        options = dict(config.dataset_options)
        self.train_set = build_dataset(
            config.dataset, config.data_root, config.train_split,
            train_transform(config.crop, config.scale, self.meta.flip_pairs), **options,
        )
        self.val_set = build_dataset(config.dataset, config.data_root, config.val_split, eval_transform(), **options)
        if len(self.train_set) == 0:
            raise SegrefineError(f"dataset {config.dataset}: the {config.train_split} split is empty")
        self.class_weight = class_weights(
            config.class_weight,
            class_frequencies(self.train_set, self.meta.num_classes) if config.class_weight != "none" else None,
        )
        self.model_config = ModelConfig(
            variant=config.variant, num_classes=len(self.meta.classes), memory=config.memory, srm=config.srm,
            srm_kernel=config.srm_kernel, srm_mask=config.srm_mask, crm=config.crm,
        )

    # --- setup --------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        model = build_model(self.model_config)
        if cfg.pretrained_backbone != "none":
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
        self.start, self.best = 0, float("-inf")
        if self.resume:
            folder = recover(self.run_dir / RUN_LAST_DIR)
            if folder is None:
                raise SegrefineError(f"--resume: {self.run_dir} has no complete checkpoint to resume from")
            from segrefine.hub import load_state, load_state_dict_strict

            load_state_dict_strict(unwrap(model), load_state(folder / "model.safetensors"), str(folder))
            state = restore_trainer_state(folder, self.optimizer, self.scheduler, self.scaler)
            self.start, self.best = state["iteration"], state.get("best_miou", float("-inf"))

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
        )

    # --- files --------------------------------------------------------------------------------------------------

    def _save(self, folder: Path, iteration: int, metrics: dict[str, Any] | None = None) -> None:
        tensors, state = trainer_state(
            self.optimizer, self.scheduler, self.scaler, iteration, {"best_miou": self.best}
        )
        if self.ctx.is_main:
            replace_folder(self.run_dir / folder, lambda tmp: self._write_checkpoint(tmp, tensors, state, metrics))

    def _write_checkpoint(self, folder: Path, tensors: dict, state: dict, metrics: dict | None) -> None:
        save_pretrained(
            unwrap(self.model), folder, dataset=self.config.dataset, classes=self.meta.classes,
            palette=self.meta.palette, flip_pairs=self.meta.flip_pairs, metrics=metrics,
            extra={"train": self.config.to_dict()},
        )
        write_trainer_state(folder, tensors, state)

    def _write_run_config(self) -> None:
        config = {
            "segrefine_version": __version__,
            "model": self.model_config.to_dict(),
            "dataset": self.config.dataset,
            "classes": list(self.meta.classes),
            "palette": [list(c) for c in self.meta.palette],
            "flip_pairs": [list(p) for p in self.meta.flip_pairs],
            "train": self.config.to_dict(),
        }
        write_text(self.run_dir / CONFIG_FILE, json.dumps(config, indent=2))

    def _log(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
            with open(self.run_dir / LOG_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")

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
        cfg = self.config
        self._build()
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not self.resume:
                (self.run_dir / LOG_FILE).unlink(missing_ok=True)
            self._write_run_config()
        distributed.barrier()
        eval_every = cfg.eval_every or cfg.iters
        save_every = cfg.save_every or eval_every
        model, metrics = self.model, None
        model.train()
        progress = TrainProgress(cfg.iters, self.start, enabled=self.ctx.is_main)
        window: dict[str, float] = {}
        window_start, window_images, window_steps = time.perf_counter(), 0, 0
        batches = iter(self._loader())
        with progress:
            for it in range(self.start, cfg.iters):
                batch = next(batches)
                images = batch["image"].to(self.device, non_blocking=True, memory_format=torch.channels_last)
                labels = batch["label"].to(self.device, non_blocking=True)
                lr = self.scheduler.get_last_lr()[0]
                with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                    enabled=self.autocast_dtype is not None):
                    outputs = model(images)
                    losses = segmentation_loss(outputs, labels, cfg.loss, self.class_weight)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(losses["total"]).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                if self.model_config.memory:
                    unwrap(model).memory.update(outputs["features"].detach(), labels, 0.9 * lr / cfg.lr)
                for k, v in losses.items():
                    window[k] = window.get(k, 0.0) + float(v.detach())
                window_images += images.shape[0] * self.ctx.world_size
                window_steps += 1
                step = it + 1
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
                    progress.note(f"iter {step}: val mIoU {100 * metrics['mIoU']:.2f}%")
                    if metrics["mIoU"] > self.best:
                        self.best = metrics["mIoU"]
                        self._save(RUN_BEST_DIR, step, metrics)
                    if step == cfg.iters and self.ctx.is_main:
                        write_text(self.run_dir / EVAL_FILE, json.dumps({"iter": step, **summary}, indent=2))
                if step % save_every == 0 or step == cfg.iters:
                    self._save(RUN_LAST_DIR, step, metrics)
                    distributed.barrier()
        return metrics


def train(config: TrainConfig, *, resume: bool = False) -> Path:
    """Train (or resume) a run; returns the run folder. Under torchrun every process calls this."""
    if resume:
        run_dir = Path(config.out) if config.out else latest_run_dir()
        if run_dir is None or not (run_dir / CONFIG_FILE).is_file():
            where = config.out or RUNS_ROOT
            raise SegrefineError(f"--resume: no training run found in {where} (start one without --resume)")
    else:
        run_dir = Path(config.out) if config.out else None
    trainer = Trainer(config, run_dir or RUNS_ROOT, resume=resume)  # validates everything before any file is written
    if run_dir is None:
        run_dir = _agreed_run_dir(trainer.ctx)
        trainer.run_dir = run_dir
    try:
        trainer.run()
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

    settings = read_config_file(run_dir / CONFIG_FILE)
    allowed = {"device", "workers", "amp", "out"}
    changed = sorted(k for k, v in overrides.items() if v is not None and k not in allowed and settings.get(k) != v)
    if changed:
        raise SegrefineError(f"--resume continues {run_dir} as configured; cannot change: {', '.join(changed)}")
    settings.update({k: v for k, v in overrides.items() if v is not None and k in allowed})
    settings["out"] = str(run_dir)
    for key in ("crop", "scale"):
        settings[key] = tuple(settings[key])
    return TrainConfig(**settings)

