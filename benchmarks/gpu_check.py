"""The GPU benchmark, in one short run (under 2 minutes on one H200): `lite` with its switches beside smp FPN-R18 at
1024×2048, channels-last, bf16 autocast (`--dtype`), BatchNorm folded, random weights, 19 classes.

Rows, in the order they run (each row is timed by itself; a failing row is recorded and the rest still run, and rows
that would pass the time budget are recorded as skipped):
- eager, batch 1: lite, srm=bilinear, crm=off, srm=bilinear + crm=off, srm=flow, smp FPN-R18 (skipped without
  segmentation_models_pytorch), then on CUDA lite with the SRM's fused Triton warp (`srm.TRITON_WARP`, opt-in; the
  other network rows run with it off);
- per module of lite (eager, batch 1, CUDA events; modules_ms in the JSON): backbone, CRM, each SRM, laterals, smooths, fusion, classifier;
- the `Predictor` end to end (uint8 image in, labels on the host out) against the bare network, eager bf16: with the
  network's own labels (the pipeline around the network), then with the guided filter `predict` applies by default;
- torch.compile, batch 1: lite, smp FPN-R18, srm=bilinear + crm=off, lite with the Triton warp (on CUDA), then the
  compiled `Predictor` (CUDA graphs);
- eager, batch 8, every network.
Results go to benchmarks/results/gpu-check.json (rewritten after every row, so a run cut short keeps what it did).
The CUDA path checks of before (bf16 AMP training, torchrun NCCL, `segrefine eval`, Predictor rates) run with
`--cuda-paths`.

    python benchmarks/gpu_check.py                                            # the benchmark, on CUDA
    python benchmarks/gpu_check.py --device cpu --size 128x256 --repeats 1    # smoke test (no compile rows on CPU)
    python benchmarks/gpu_check.py --cuda-paths                               # the CUDA path checks
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

TOY_TRAIN = ["--dataset", "toy", "--dataset-option", "length=64", "--dataset-option", "size=256x512"]
TRAIN_ITERS = 30
DDP_STEPS = 20
PREDICT_SIZE = (1024, 2048)
CLASSES = 19


def segrefine(*args: str) -> subprocess.CompletedProcess:
    """Run the segrefine command line of this checkout."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "segrefine", *args], capture_output=True, text=True, env=env)


def checked(result: subprocess.CompletedProcess) -> str:
    """stdout of a command that must succeed; its last stderr line otherwise."""
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no message)"]
        raise RuntimeError(f"exit {result.returncode}: {lines[-1]}")
    return result.stdout


def train(folder: Path) -> str:
    """A few dozen iterations of bf16 AMP training on CUDA through the CLI."""
    start = time.perf_counter()
    checked(segrefine(
        "train", *TOY_TRAIN, "--crop", "256x512", "--iters", str(TRAIN_ITERS), "--batch-size", "8", "--device", "cuda",
        "--amp", "--pretrained-backbone", "none", "--eval-every", "0", "--log-every", "10", "--workers", "2",
        "--out", str(folder / "run"),
    ))  # fmt: skip
    seconds = time.perf_counter() - start
    log = [json.loads(line) for line in (folder / "run" / "log.jsonl").read_text().splitlines() if line.strip()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    return f"{TRAIN_ITERS} iters, batch 8 at 256x512 in {seconds:.0f} s (with start-up); loss {losses[0]:.3f} → {losses[-1]:.3f}"


def ddp() -> str:
    """NCCL + SyncBatchNorm + DDP with bf16 autocast, in a torchrun child process."""
    out = checked(subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", __file__, "--ddp-child"],
        capture_output=True, text=True,
    ))  # fmt: skip
    return out.strip().splitlines()[-1]


def ddp_child() -> None:
    """Body of the torchrun process: a few DDP steps of `lite` with SyncBatchNorm over NCCL."""
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from segrefine import build_model

    dist.init_process_group("nccl")
    rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(rank)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(build_model(variant="lite", num_classes=CLASSES)).cuda()
    model = DistributedDataParallel(model.to(memory_format=torch.channels_last), device_ids=[rank])
    synced = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(4, 3, 256, 512, device="cuda").contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, CLASSES, (4, 256, 512), device="cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(DDP_STEPS):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outputs = model(images)
            # Every head in the loss: DDP refuses parameters that take no part in it.
            loss = F.cross_entropy(outputs["out"], labels) + 0.4 * F.cross_entropy(outputs["aux"], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    dist.barrier()
    print(f"backend {dist.get_backend()}, {synced} SyncBatchNorm layers, {DDP_STEPS} steps at 4x256x512: "
          f"{1000 * seconds / DDP_STEPS:.0f} ms per step, loss {loss.item():.3f}")  # fmt: skip
    dist.destroy_process_group()


def evaluate(folder: Path) -> str:
    """`segrefine eval` on CUDA with the weights just trained."""
    start = time.perf_counter()
    report = json.loads(checked(segrefine(
        "eval", "--dataset", "toy", "--dataset-option", "length=16", "--dataset-option", "size=512x1024",
        "--weights", str(folder / "run"), "--device", "cuda", "--workers", "2", "--json",
    )))  # fmt: skip
    return f"{report['num_images']} images at 512x1024 in {time.perf_counter() - start:.0f} s; mIoU {report['mIoU']:.3f}"


def predict_rates(warmup: int, iters: int) -> dict[str, str]:
    """Images per second of the Predictor (uint8 in, labels on the host out) at 1024x2048, batch 1."""
    from segrefine.data.meta import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    from segrefine.data.toy import render
    from segrefine.engine.backends import Autocast
    from segrefine.engine.predictor import Predictor
    from segrefine import build_model

    image, _ = render(np.random.default_rng(0), *PREDICT_SIZE)
    device = torch.device("cuda")
    config = {"classes": list(CITYSCAPES_CLASSES), "palette": [list(c) for c in CITYSCAPES_PALETTE]}
    variants: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = {
        "fp32": lambda m: m,
        "bf16": Autocast,
        "compile + bf16": lambda m: Autocast(torch.compile(m)),
    }
    rates = {}
    for name, wrap in variants.items():
        try:
            model = build_model(variant="lite", num_classes=CLASSES, aux=False).to(device).eval()
            model = model.to(memory_format=torch.channels_last)
            predictor = Predictor(wrap(model), {**config, "model": model.config.to_dict()}, device, batch_size=1)
            for _ in range(warmup):
                predictor.predict(image)
            start = time.perf_counter()
            for _ in range(iters):
                predictor.predict(image)  # ends with a device-to-host copy: synchronised
            rate = iters / (time.perf_counter() - start)
            rates[f"predict {name}"] = f"{rate:.1f} images/s ({1000 / rate:.0f} ms per image)"
        except Exception as e:  # noqa: BLE001 - a check script reports each failure and carries on
            rates[f"predict {name}"] = f"FAILED: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return rates



RESULTS = Path(__file__).resolve().parent / "results" / "gpu-check.json"
SWITCHES: dict[str, dict[str, str]] = {
    "lite": {}, "srm=bilinear": {"srm": "bilinear"}, "crm=off": {"crm": "off"},
    "srm=bilinear, crm=off": {"srm": "bilinear", "crm": "off"}, "srm=flow": {"srm": "flow"},
}  # fmt: skip
FPN = "smp FPN-R18"
TRITON = "lite, triton warp"  # lite with srm.TRITON_WARP on, to decide its default: rows on CUDA only, where it runs
COMPILED = ("lite", FPN, "srm=bilinear, crm=off")  # the rows the issue's targets compare
# Seconds a row is expected to take at most, to skip rather than start rows that would pass the budget.
ESTIMATE = {"eager": 3.0, "compile": 30.0}
MODULES = ("backbone", "crm", "lateral", "srm.c4", "srm.c3", "srm.c2", "smooth", "fusion", "classifier")


class OutOfTime(Exception):
    """The run's time budget ran out inside a row."""


def build(name: str, device: torch.device) -> nn.Module:
    """A network of the table, folded, channels-last, in eval mode on `device` (smp imported only here)."""
    from segrefine import build_model
    from segrefine.models import fold_batchnorm

    if name == FPN:
        try:
            import segmentation_models_pytorch as smp
        except ImportError:
            raise ModuleNotFoundError("segmentation_models_pytorch is not installed") from None
        model = smp.FPN("resnet18", encoder_weights=None, classes=CLASSES)
    else:
        switches = SWITCHES["lite" if name == TRITON else name]
        model = build_model(variant="lite", num_classes=CLASSES, aux=False, **switches)
    return fold_batchnorm(model).to(device, memory_format=torch.channels_last)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_per_call(call: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Mean milliseconds of `call` over `repeats` after `warmup` untimed calls, the device synchronised."""
    for _ in range(warmup):
        call()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    sync(device)
    return 1000 * (time.perf_counter() - start) / repeats


def autocast(model: Callable[[torch.Tensor], torch.Tensor], args: argparse.Namespace) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` under inference mode, and bf16 autocast unless the run is in fp32."""

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            return model(x)

    return run


class Run:
    """The rows measured so far, the time budget, and the JSON file they are written to after every row."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.start = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        self.modules: dict[str, float] = {}
        self.failed = False

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.start)

    def row(self, fields: dict[str, Any], kind: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one row within the budget; a failure or a skip is recorded in the row, never raised."""
        row = dict(fields)
        if self.left() < ESTIMATE[kind]:
            row["skipped"] = f"time budget ({self.args.budget:.0f} s) would be passed"
        else:
            try:
                with deadline(self.left()):
                    row.update(measure())
            except Exception as e:  # noqa: BLE001 - a benchmark records each failure and carries on
                row["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                self.failed = self.failed or not isinstance(e, (ModuleNotFoundError, OutOfTime))
        self.rows.append(row)
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        self.save()
        return row

    def save(self) -> None:
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        report = {
            "device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "size": self.args.size, "dtype": self.args.dtype,
            "repeats": self.args.repeats, "seconds": round(time.perf_counter() - self.start, 1), "rows": self.rows,
            "modules_ms": self.modules,
        }  # fmt: skip
        self.args.json.parent.mkdir(parents=True, exist_ok=True)
        self.args.json.write_text(json.dumps(report, indent=1) + "\n")


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise OutOfTime in the main thread once `seconds` have passed (a compile that runs long stops here)."""

    def stop(signum: int, frame: object) -> None:
        raise OutOfTime("stopped at the time budget")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.1))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def network_row(run: Run, name: str, mode: str, batch: int) -> dict[str, Any]:
    """ms per forward and images per second of one network at one batch size, eager or compiled."""
    args, device = run.args, run.device

    def measure() -> dict[str, Any]:
        model = build(name, device)
        net = torch.compile(model, dynamic=False) if mode == "compile" else model
        x = torch.randn(batch, 3, *args.hw, device=device).contiguous(memory_format=torch.channels_last)
        with triton_warp(name == TRITON):
            ms = ms_per_call(lambda: autocast(net, args)(x), device, args.warmup, args.repeats)
        return {"ms": round(ms, 3), "images_per_s": round(1000 * batch / ms, 1)}

    return run.row({"network": name, "mode": mode, "batch": batch}, "compile" if mode == "compile" else "eager", measure)


@contextmanager
def triton_warp(on: bool) -> Iterator[None]:
    """The SRM's fused Triton warp on or off, whatever SEGREFINE_TRITON_WARP says (torch.compile's work in here too)."""
    from segrefine.models import srm

    if on:
        import triton  # noqa: F401 - missing, it is the row's error, as smp is FPN-R18's

    previous, srm.TRITON_WARP = srm.TRITON_WARP, on
    try:
        yield
    finally:
        srm.TRITON_WARP = previous


def module_table(run: Run) -> None:
    """Per-module milliseconds of lite (eager, bf16, batch 1): CUDA events on CUDA, host clocks elsewhere."""
    args, device = run.args, run.device

    def measure() -> dict[str, Any]:
        model = build("lite", device)
        times: dict[str, list[float]] = {name: [] for name in MODULES}
        marks: dict[str, Any] = {}

        def now() -> Any:
            if device.type != "cuda":
                return time.perf_counter()
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event

        def elapsed(start: Any, end: Any) -> float:
            return start.elapsed_time(end) if device.type == "cuda" else 1000 * (end - start)

        handles = []
        for name in MODULES:
            for child_name, child in _children(model, name):
                handles.append(child.register_forward_pre_hook(lambda m, i, key=child_name: marks.__setitem__(key, now())))
                handles.append(child.register_forward_hook(
                    lambda m, i, o, key=child_name, group=name: times[group].append((marks[key], now()))
                ))  # fmt: skip
        x = torch.randn(1, 3, *args.hw, device=device).contiguous(memory_format=torch.channels_last)
        forward = autocast(model, args)
        for _ in range(args.warmup):
            forward(x)
        for values in times.values():
            values.clear()
        for _ in range(args.repeats):
            forward(x)
        sync(device)
        for handle in handles:
            handle.remove()
        run.modules.update({
            name: round(sum(elapsed(a, b) for a, b in pairs) / args.repeats, 3) for name, pairs in times.items()
        })  # fmt: skip
        return {"modules_ms": run.modules}

    run.row({"network": "lite", "mode": "per module", "batch": 1}, "eager", measure)


def _children(model: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    """(`name`, module), or each entry of a ModuleDict (`lateral`, `smooth`) under its own name."""
    module = model.get_submodule(name)
    if isinstance(module, nn.ModuleDict):
        return [(f"{name}.{key}", child) for key, child in module.items()]
    return [(name, module)]


def predictor_row(run: Run, compiled: bool, bare: dict[str, Any], guided_filter: bool = False) -> None:
    """The Predictor end to end (uint8 in, labels out), batch 1, beside the bare network's rate: the network's own
    labels (the pipeline around the network), or with the guided filter that `predict` applies by default."""
    from segrefine.engine.backends import Autocast
    from segrefine.engine.predictor import Predictor

    args, device = run.args, run.device

    def measure() -> dict[str, Any]:
        model = build("lite", device)
        predictor = Predictor(Autocast(model) if args.dtype == "bf16" else model, {"model": model.config.to_dict()}, device,
                              batch_size=1, compile=compiled, guided_filter=guided_filter)  # fmt: skip
        image = np.random.default_rng(0).integers(0, 256, (*args.hw, 3), dtype=np.uint8)
        ms = ms_per_call(lambda: predictor.predict(image), device, args.warmup, args.repeats)
        row = {"ms": round(ms, 3), "images_per_s": round(1000 / ms, 1)}
        if "images_per_s" in bare:
            row["of_bare_network"] = round(row["images_per_s"] / bare["images_per_s"], 3)
        return row

    mode = "compile" if compiled else "eager"
    label = f"Predictor {mode}" + (" + guided filter" if guided_filter else "")
    run.row({"network": "lite", "mode": label, "batch": 1}, mode, measure)


def benchmark(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device (run the smoke test with --device cpu)")
    compile_rows = args.compile if args.compile is not None else device.type == "cuda"
    run = Run(args, device)
    print(f"{args.size}, {device}, {args.dtype}, budget {args.budget:.0f} s; results to {args.json}", flush=True)
    triton = (TRITON,) if device.type == "cuda" else ()
    eager = {name: network_row(run, name, "eager", 1) for name in (*SWITCHES, FPN, *triton)}
    module_table(run)
    for guided_filter in (False, True):
        predictor_row(run, False, eager["lite"], guided_filter)
    if compile_rows:
        compiled = {name: network_row(run, name, "compile", 1) for name in (*COMPILED, *triton)}
        for guided_filter in (False, True):
            predictor_row(run, True, compiled["lite"], guided_filter)
    for batch in args.batches:
        if batch != 1:
            for name in (*SWITCHES, FPN):
                network_row(run, name, "eager", batch)
    run.save()
    print(f"done in {time.perf_counter() - run.start:.0f} s: {args.json}")
    return 1 if run.failed else 0


def cuda_paths(args: argparse.Namespace) -> None:
    """The CUDA path checks: training, torchrun, eval and Predictor rates, printed as one table."""
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    rows: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, step in (("train bf16 AMP", lambda: train(Path(tmp))), ("torchrun NCCL SyncBatchNorm", ddp),
                           ("eval", lambda: evaluate(Path(tmp)))):  # fmt: skip
            try:
                rows[name] = step()
            except Exception as e:  # noqa: BLE001 - a check script reports each failure and carries on
                rows[name] = f"FAILED: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
            print(f"{name}: {rows[name]}", flush=True)
        rows.update(predict_rates(5, args.iters))
    name = torch.cuda.get_device_name()
    print(f"\n{name}, torch {torch.__version__}, CUDA {torch.version.cuda}\n")
    print("| check | result |\n|---|---|")
    for key, value in rows.items():
        print(f"| {key} | {value} |")
    sys.exit(1 if any(v.startswith("FAILED") for v in rows.values()) else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ddp-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cuda-paths", action="store_true", help="the CUDA path checks instead of the benchmark")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (smoke test)")
    parser.add_argument("--size", default="1024x2048", help="HxW of the benchmark's inputs")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes of the eager rows")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per row (default: 3, 1 on CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="the torch.compile rows (default: on CUDA only)")  # fmt: skip
    parser.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                        help="bf16 autocast or fp32 (auto: bf16 unless the device lacks it, as CPUs without AMX do)")
    parser.add_argument("--budget", type=float, default=95.0, help="seconds: later rows are skipped past this")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where the results go")
    parser.add_argument("--iters", type=int, default=20, help="--cuda-paths: timed predictions per variant")
    args = parser.parse_args()
    if args.ddp_child:
        ddp_child()
        return
    if args.cuda_paths:
        cuda_paths(args)
        return
    args.hw = tuple(int(v) for v in args.size.lower().split("x"))
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.dtype == "auto":
        from segrefine.engine.backends import bf16_problem

        args.dtype = "fp32" if bf16_problem(torch.device(args.device)) else "bf16"
    if args.warmup is None:
        args.warmup = 3 if args.device.startswith("cuda") else 1
    sys.exit(benchmark(args))


if __name__ == "__main__":
    main()
