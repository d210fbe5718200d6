"""benchmarks/gpu_check.py as a CPU smoke test: every row runs or says why not, a failing row stops nothing."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(gpu_check, monkeypatch, tmp_path, *extra):
    out = tmp_path / "gpu-check.json"
    argv = ["gpu_check.py", "--device", "cpu", "--size", "64x128", "--repeats", "1", "--warmup", "0", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv + list(extra))
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main()
    return exit_.value.code, json.loads(out.read_text())


def test_smoke_run_on_cpu_writes_every_row(gpu_check, monkeypatch, tmp_path):
    code, report = _run(gpu_check, monkeypatch, tmp_path, "--batches", "1,2")
    assert code == 0 and report["dtype"] in ("bf16", "fp32")
    networks = [*gpu_check.SWITCHES, gpu_check.FPN]
    eager = [(r["network"], r["batch"]) for r in report["rows"] if r["mode"] == "eager"]
    assert eager == [(n, 1) for n in networks] + [(n, 2) for n in networks]
    for row in report["rows"]:
        # smp FPN-R18 may be missing; nothing else may fail or be left out within the budget
        assert "ms" in row or "modules_ms" in row or (row["network"] == gpu_check.FPN and "segmentation_models_pytorch" in row["error"]), row
    assert set(report["modules_ms"]) == set(gpu_check.MODULES) and all(v > 0 for v in report["modules_ms"].values())
    for mode in ("Predictor eager", "Predictor eager + guided filter"):
        assert next(r for r in report["rows"] if r["mode"] == mode)["of_bare_network"] > 0


def test_a_failing_row_is_recorded_and_the_rest_still_run(gpu_check, monkeypatch, tmp_path):
    build = gpu_check.build

    def broken(name, device):
        if name == "crm=off":
            raise RuntimeError("out of memory")
        return build(name, device)

    monkeypatch.setattr(gpu_check, "build", broken)
    code, report = _run(gpu_check, monkeypatch, tmp_path, "--batches", "1")
    assert code == 1
    rows = {r["network"]: r for r in report["rows"] if r["mode"] == "eager"}
    assert rows["crm=off"]["error"] == "RuntimeError: out of memory"
    assert "ms" in rows["srm=flow"] and "ms" in rows["lite"]


def test_rows_past_the_budget_are_skipped(gpu_check, monkeypatch, tmp_path):
    code, report = _run(gpu_check, monkeypatch, tmp_path, "--batches", "1", "--budget", "0")
    assert code == 0 and all("skipped" in row for row in report["rows"])


def test_compile_rows_and_the_compiled_predictor(gpu_check, monkeypatch, tmp_path):
    """The compiled rows' plumbing, with torch.compile passing the function through (no C++ compiler needed)."""
    import torch

    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    code, report = _run(gpu_check, monkeypatch, tmp_path, "--batches", "1", "--compile")
    compiled = [r for r in report["rows"] if r["mode"] == "compile"]
    assert [r["network"] for r in compiled] == list(gpu_check.COMPILED)
    assert all("ms" in r for r in compiled if r["network"] != gpu_check.FPN)
    assert "ms" in next(r for r in report["rows"] if r["mode"] == "Predictor compile")
