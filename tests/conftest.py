import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

# Under pytest-xdist (-n auto) the cores are shared among the workers: one worker's torch, and the processes its
# tests start (which inherit OMP_NUM_THREADS), take its share, so that workers do not fight over the cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["OMP_NUM_THREADS"] = str(max(1, min(2, _share)))
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1))))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_data() -> Path:
    """The real sample files beside the checkout (../shared/data); tests using it skip cleanly without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    """No test touches the network: the Hub is offline and its cache is a fresh temporary folder."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    """segrefine's own cache (ONNX exports for --backend onnxruntime) is a fresh temporary folder per test."""
    monkeypatch.setenv("SEGREFINE_CACHE", str(tmp_path_factory.mktemp("segrefine_cache")))


@pytest.fixture
def hf(monkeypatch, tmp_path):
    """huggingface_hub read its settings at import: point its constants at a fresh cache, online, no Xet, no token."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return constants


@dataclass
class CliResult:
    """What `cli` returns: the fields of subprocess.CompletedProcess that tests read."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `segrefine ARGS...` in this process (the console script's `main`); returns its exit code and output.

    `cwd` runs it from another folder; `env` sets environment variables for the call.
    """
    from segrefine.cli import main

    def run(*args, cwd=None, env=None) -> CliResult:
        with monkeypatch.context() as patch:
            if cwd is not None:
                patch.chdir(cwd)
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            capsys.readouterr()
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def interrupt_training(monkeypatch):
    """`interrupt_training(n)` makes training's n-th step raise KeyboardInterrupt (as Ctrl-C); returns the undo."""
    from segrefine.engine import train as engine_train

    loss = engine_train.segmentation_loss

    def at_step(n: int):
        calls = []

        def interrupted(*a, **k):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return loss(*a, **k)

        monkeypatch.setattr(engine_train, "segmentation_loss", interrupted)
        return lambda: monkeypatch.setattr(engine_train, "segmentation_loss", loss)

    return at_step
