"""The SRM's fused Triton warp (models/srm_warp.py) gives the PyTorch path's numbers, run by Triton's CPU interpreter.

The interpreter must be chosen before triton is imported (its own library kernels are decorated then), so the kernel
runs in one child process started with TRITON_INTERPRET=1 (this file as a script): it reads the inputs made here and
writes the fused outputs back; the PyTorch references and every comparison stay in this process.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from segrefine import build_model
from segrefine.models import srm
from segrefine.models.layers import memory_format

TOLERANCE = dict(atol=1e-5, rtol=0)
REPO = Path(__file__).resolve().parents[1]
# (kernel, mask, channels, source size, output size, channels-last): odd sizes, a 1×1 source, more channels than one
# block (130), both layouts, every mask and neighbourhood (mask None: srm=flow, the offset used as it is).
WARPS = [
    (1, "softmax", 3, (5, 7), (9, 13), True), (3, "softmax", 3, (5, 7), (9, 13), False),
    (5, "sigmoid", 3, (5, 7), (7, 5), True), (3, "sigmoid", 130, (4, 6), (5, 3), True),
    (1, None, 4, (1, 1), (3, 2), False), (3, "softmax", 5, (6, 5), (6, 5), True),
]  # fmt: skip
BF16 = [(3, "softmax"), (1, None)]


def fields(kernel, mask, size, layout, dtype=torch.float32):
    """Offsets reaching past the image (a few far beyond: the border clamp) and mask logits, on a size grid.

    Both views of one tensor in `layout`, as the SRM's one convolution makes them.
    """
    offset = torch.randn(2, 2, *size) * 4
    offset[..., 0, -1] = offset[..., -1, 0] = 0.0  # two corners on themselves (flow: the source's corner pixels)
    offset[..., 0, 0], offset[..., -1, -1] = -100.0, 100.0  # two far beyond them
    if mask is None:
        return offset.to(dtype).contiguous(memory_format=layout), None
    both = torch.cat((offset, torch.randn(2, kernel * kernel, *size) * 3), 1)
    return both.to(dtype).contiguous(memory_format=layout).split((2, kernel * kernel), 1)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """The cases' inputs, and the fused kernel's outputs for them from the interpreter in a child process."""
    pytest.importorskip("triton")
    torch.manual_seed(0)
    warps = []
    for kernel, mask, channels, source, out, channels_last in WARPS:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        image = torch.randn(2, channels, *source).contiguous(memory_format=layout)
        warps.append((image, *fields(kernel, mask, out, layout), kernel, mask))
    for kernel, mask in BF16:
        image = torch.randn(2, 6, 5, 7).bfloat16().contiguous(memory_format=torch.channels_last)
        warps.append((image, *fields(kernel, mask, (9, 13), torch.channels_last, torch.bfloat16), kernel, mask))
    folder = tmp_path_factory.mktemp("srm_triton")
    torch.save(warps, folder / "inputs.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, __file__, folder], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return warps, torch.load(folder / "outputs.pt")


def plain(source, offset, logits, kernel, mask):
    """The PyTorch path: mask weights, neighbourhood sum of the offsets, grid_sample."""
    if logits is None:
        return srm.warp(source, offset)
    weights = logits.softmax(1) if mask == "softmax" else logits.sigmoid() / logits.sigmoid().sum(1, keepdim=True)
    return srm.warp(source, srm.aggregate_offsets(offset, weights, kernel))


@pytest.mark.parametrize("case", range(len(WARPS)))
def test_fused_warp_matches_the_pytorch_path(interpreted, case):
    warps, outputs = interpreted
    image, fused = warps[case][0], outputs[case]
    assert fused.is_contiguous(memory_format=memory_format(image)) and fused.dtype == image.dtype
    torch.testing.assert_close(fused, plain(*warps[case]), **TOLERANCE)


@pytest.mark.parametrize("case", range(len(WARPS), len(WARPS) + len(BF16)))
def test_fused_warp_in_bfloat16(interpreted, case):
    """bf16 in, bf16 out, computed in float32: the float32 path's numbers rounded once."""
    warps, outputs = interpreted
    image, offset, logits, kernel, mask = warps[case]
    expected = plain(image.float(), offset.float(), logits if logits is None else logits.float(), kernel, mask)
    assert outputs[case].dtype == torch.bfloat16
    torch.testing.assert_close(outputs[case], expected.bfloat16())


@pytest.mark.parametrize(
    "switches", [{}, {"srm": "flow"}, {"srm_kernel": 5, "srm_mask": "sigmoid", "srm_local": True, "srm_fusion": True}]
)
def test_network_hands_the_kernel_its_fields(monkeypatch, switches):
    """Where the kernel applies, every SRM (fusion's too) hands it the fields that give the PyTorch path's logits."""
    model = build_model(variant="lite", num_classes=5, **switches).eval().to(memory_format=torch.channels_last)
    for module in model.modules():
        if isinstance(module, srm.SemanticRefinement):
            torch.nn.init.normal_(module.offset.weight, std=0.05)  # trained-looking: offsets of a few pixels
    x = torch.randn(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    calls = []
    kernel = SimpleNamespace(fused_warp=lambda *args: calls.append(1) or plain(*args))  # plain: the kernel's numbers
    with torch.no_grad():
        expected = model(x)
        monkeypatch.setattr(srm, "triton_warp_applies", lambda values: True)
        monkeypatch.setitem(sys.modules, "segrefine.models.srm_warp", kernel)
        fused = model(x)
    assert len(calls) == 3 + 3 * switches.get("srm_fusion", False)
    torch.testing.assert_close(fused, expected, **TOLERANCE)


def test_the_fused_warp_is_opt_in_cuda_only_and_forward_only(monkeypatch):
    on_cuda = SimpleNamespace(is_cuda=True)
    monkeypatch.setattr(srm, "TRITON_WARP", False)
    with torch.no_grad():
        assert not srm.triton_warp_applies(on_cuda)
        monkeypatch.setattr(srm, "TRITON_WARP", True)
        assert srm.triton_warp_applies(on_cuda) and not srm.triton_warp_applies(torch.zeros(1))
    assert not srm.triton_warp_applies(on_cuda)  # gradients wanted: training keeps the PyTorch path


def test_gpu_check_times_lite_with_the_switch_on_and_off(monkeypatch, tmp_path):
    """gpu_check.py's rows that decide the default: lite with the switch off, then on; the switch restored."""
    pytest.importorskip("triton")
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    switch, seen = srm.TRITON_WARP, []
    monkeypatch.setattr(gpu_check, "ms_per_call", lambda *args: seen.append(srm.TRITON_WARP) or 1.0)
    args = SimpleNamespace(hw=(64, 64), size="64x64", dtype="fp32", warmup=0, repeats=1, budget=60.0)
    args.json = tmp_path / "gpu-check.json"
    run = gpu_check.Run(args, torch.device("cpu"))
    rows = [gpu_check.network_row(run, name, "eager", 1) for name in ("lite", gpu_check.TRITON)]
    assert seen == [False, True] and srm.TRITON_WARP == switch and all(row["ms"] == 1.0 for row in rows)


def child(folder: Path) -> None:
    """The child process: the fused kernel on every input."""
    from segrefine.models.srm_warp import fused_warp

    outputs = [fused_warp(image, offset, logits, k, mask or "softmax") for image, offset, logits, k, mask in
               torch.load(folder / "inputs.pt")]  # fmt: skip
    torch.save(outputs, folder / "outputs.pt")


if __name__ == "__main__":
    child(Path(sys.argv[1]))
