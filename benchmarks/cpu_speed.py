"""CPU inference speed of `lite` beside smp FPN-R18, in one run: ms per image, GMAC/s and the share of the machine's
fp32 matmul peak, measured in the same run.

Paths for `lite`: PyTorch eager (the network as built, NCHW input), channels-last (as `segrefine predict` runs it:
BatchNorm folded, channels-last weights and input), torch.compile and bf16 autocast of that, onnxruntime fp32 and
onnxruntime int8 (static, calibrated on a few toy scenes: speed does not depend on the ranges). smp FPN-R18
(segmentation-models-pytorch, a benchmark-only dependency) runs eager, channels-last (BatchNorm folded, as lite's row)
and on onnxruntime. Weights are random, 19 classes; the ONNX files are exported for the fixed size measured. smp's FPN
needs sides that are multiples of 32: it runs on the input padded up to them, and its GMACs are counted at that size.
The paths of one size are timed in interleaved rounds (one call of each per round), so that a machine whose speed
drifts during the run slows them alike.

    python benchmarks/cpu_speed.py                         # 512x1024 and 360x480, every path (several minutes)
    python benchmarks/cpu_speed.py --sizes 64x128 --iters 1 --warmup 1 --skip compile   # a quick check that it runs
    python benchmarks/cpu_speed.py --sizes 512x1024 --skip eager,channels-last,compile,bf16,ort-int8,smp-eager,\
        smp-channels-last --variant-switches srm=bilinear srm=flow crm=off      # what the SRM and CRM cost on onnxruntime
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from segrefine.data import build_dataset
from segrefine.engine.backends import Autocast
from segrefine.engine.export import CalibrationImages, check_image, quantize_int8, to_onnx
from segrefine.hub.onnx import OnnxModel, session
from segrefine import build_model
from segrefine.cli.options import parse_key_values
from segrefine.models import fold_batchnorm
from segrefine.hub.flops import count_module_flops

PATHS = ("eager", "channels-last", "compile", "bf16", "ort-fp32", "ort-int8", "smp-eager", "smp-channels-last", "smp-ort")
PEAK_SIZE = 2048  # square fp32 matmul that measures the machine's peak
CLASSES = 19


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def seconds_per_call(call: Callable[[], object], warmup: int, iters: int) -> float:
    """Median wall time of `iters` calls after `warmup` untimed ones."""
    return interleaved_medians({"call": call}, warmup, iters)["call"]


def interleaved_medians(calls: dict[str, Callable[[], object]], warmup: int, iters: int) -> dict[str, float]:
    """Median wall time of each call over `iters` rounds that make every call once, after `warmup` untimed rounds."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + iters):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def matmul_peak(warmup: int, iters: int) -> float:
    """GMAC/s of a large fp32 matmul on this CPU with the current thread count."""
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE), torch.randn(PEAK_SIZE, PEAK_SIZE)
    return PEAK_SIZE**3 / 1e9 / seconds_per_call(lambda: a @ b, warmup, max(iters, 3))


def gmacs(model: nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulates of one forward, counted as `segrefine flops` counts them."""
    return count_module_flops(model, x)[0] / 2e9


def smp_fpn() -> nn.Module | None:
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        return None
    return smp.FPN("resnet18", encoder_weights=None, classes=CLASSES).eval()


class Padded(nn.Module):
    """A model whose input sides must be multiples of 32, run on the input padded up to them."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.size = model, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = F.pad(x, (0, self.size[1] - width, 0, self.size[0] - height))
        return self.model(padded)[..., :height, :width]


def onnx_runner(model: nn.Module, size: tuple[int, int], folder: Path, name: str, int8: bool = False) -> OnnxModel:
    """`model` exported for `size` (and statically quantized when `int8`), on onnxruntime."""
    path = folder / f"{name}.onnx"
    to_onnx(model, {"model": {}}, path, size)
    if int8:
        toy = build_dataset("toy", None, "train", size=size, length=4)
        quantized = folder / f"{name}.int8.onnx"
        quantize_int8(path, quantized, CalibrationImages(toy, 4, size), keep_float=())
        path = quantized
    return OnnxModel(session(path), getattr(model, "config", None), name)


def measure(args: argparse.Namespace, size: tuple[int, int], peak: float, folder: Path) -> list[dict]:
    """Every path at one size, timed side by side."""
    torch.manual_seed(0)
    lite = build_model(variant="lite", num_classes=CLASSES, aux=False).eval()
    x = check_image(size).contiguous()  # NCHW, as torch.randn or torchvision's transforms give it
    x_last = x.contiguous(memory_format=torch.channels_last)
    lite_gmacs = gmacs(lite, x)
    paths: dict[str, tuple[str, Callable[[torch.Tensor], object], float, torch.Tensor]] = {}

    def add(path: str, model_name: str, build: Callable[[], Callable[[torch.Tensor], object]], count: float,
            image: torch.Tensor) -> None:  # fmt: skip
        if path not in args.skip:
            paths[path] = (model_name, build(), count, image)

    def deployed(model: nn.Module) -> nn.Module:
        return fold_batchnorm(copy.deepcopy(model)).to(memory_format=torch.channels_last)

    add("eager", "lite", lambda: lite, lite_gmacs, x)
    add("channels-last", "lite", lambda: deployed(lite), lite_gmacs, x_last)
    add("compile", "lite", lambda: torch.compile(deployed(lite)), lite_gmacs, x_last)
    add("bf16", "lite", lambda: Autocast(deployed(lite)), lite_gmacs, x_last)
    add("ort-fp32", "lite", lambda: onnx_runner(lite, size, folder, "lite"), lite_gmacs, x)
    add("ort-int8", "lite", lambda: onnx_runner(lite, size, folder, "lite", int8=True), lite_gmacs, x)
    for text in args.variant_switches:  # where does the time go: lite with one switch changed, on onnxruntime fp32
        torch.manual_seed(0)
        other = build_model(variant="lite", num_classes=CLASSES, aux=False, **parse_key_values([text], "--variant-switches"))
        paths[f"ort-fp32 {text}"] = (f"lite {text}", onnx_runner(other.eval(), size, folder, "lite-variant"), gmacs(other, x), x)
    fpn = smp_fpn()
    if fpn is None:
        print("  smp FPN-R18 skipped: pip install segmentation-models-pytorch")
    else:
        padded_size = (math.ceil(size[0] / 32) * 32, math.ceil(size[1] / 32) * 32)
        fpn_gmacs = gmacs(fpn, torch.zeros(1, 3, *padded_size))
        padded = Padded(fpn, padded_size).eval()
        add("smp-eager", "smp FPN-R18", lambda: padded, fpn_gmacs, x)
        add("smp-channels-last", "smp FPN-R18", lambda: deployed(padded), fpn_gmacs, x_last)
        add("smp-ort", "smp FPN-R18", lambda: onnx_runner(padded, size, folder, "fpn"), fpn_gmacs, x)

    with torch.inference_mode():
        calls = {path: (lambda m=model, i=image: m(i)) for path, (_, model, _, image) in paths.items()}
        seconds = interleaved_medians(calls, args.warmup, args.iters)
    rows = []
    for path, (model_name, _, count, _) in paths.items():
        rate = count / seconds[path]
        rows.append({"size": f"{size[0]}x{size[1]}", "model": model_name, "path": path, "ms": 1000 * seconds[path],
                     "gmacs": count, "gmac_per_s": rate, "peak_share": rate / peak})  # fmt: skip
        print(f"  {model_name:12s} {path:18s} {1000 * seconds[path]:8.1f} ms  {rate:6.1f} GMAC/s", flush=True)
    return rows


def table(rows: list[dict], peak: float) -> str:
    """The results as a Markdown table."""
    lines = [
        "| size | model | path | ms per image | GMACs | GMAC/s | share of matmul peak |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['size']} | {r['model']} | {r['path']} | {r['ms']:.0f} | {r['gmacs']:.1f} | "
                     f"{r['gmac_per_s']:.1f} | {100 * r['peak_share']:.0f}% |")  # fmt: skip
    lines.append(f"\nfp32 matmul peak ({PEAK_SIZE}×{PEAK_SIZE}): {peak:.1f} GMAC/s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512x1024,360x480", help="comma-separated HxW")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per path")
    parser.add_argument("--iters", type=int, default=10, help="timed runs per path (the median is reported)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--skip", default="", help=f"comma-separated paths to leave out: {', '.join(PATHS)}")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--variant-switches", nargs="*", default=[], metavar="SWITCH=VALUE",
                        help="also time lite with this switch changed on onnxruntime fp32 (e.g. srm=bilinear crm=off)")
    args = parser.parse_args()
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - set(PATHS)
    if unknown:
        parser.error(f"unknown --skip paths: {', '.join(sorted(unknown))}")
    if args.threads:
        torch.set_num_threads(args.threads)

    import onnxruntime

    print(f"{cpu_name()}, {torch.get_num_threads()} threads of {os.cpu_count()} logical cores, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")  # fmt: skip
    peak = matmul_peak(args.warmup, args.iters)
    print(f"fp32 matmul peak: {peak:.1f} GMAC/s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.sizes.split(","):
            height, width = (int(v) for v in text.lower().split("x"))
            print(f"{height}x{width}:", flush=True)
            rows += measure(args, (height, width), peak, Path(tmp))
    print()
    print(table(rows, peak))
    if args.json is not None:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": torch.get_num_threads(), "peak_gmac_per_s": peak,
                                         "rows": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
