"""`segrefine weights list|pull|push` through the real entry point, against a loopback Hub via HF_ENDPOINT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import HubServer

from segrefine.hub import load_registry, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segrefine", "weights", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def hub_env(tmp_path):
    """A loopback Hub and the environment that points a CLI process at it (online, fresh cache, no token, no Xet)."""
    with HubServer() as server:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
        env.update(
            HF_ENDPOINT=server.url,
            HF_HUB_OFFLINE="0",
            HF_HUB_CACHE=str(tmp_path / "hf-cache"),
            HF_TOKEN_PATH=str(tmp_path / "no-token"),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            NO_PROXY="127.0.0.1,localhost",
        )
        yield server, env


def test_list_shows_the_shipped_model_and_backbones():
    result = run("list", env={**os.environ, "COLUMNS": "400"})  # wide enough that no cell folds
    assert result.returncode == 0, result.stderr
    assert "lite-camvid" in result.stdout and "ships with segrefine" in result.stdout
    assert "held_out" not in result.stdout  # a model that trained on its scoring split says so in words
    if load_registry().model("lite-camvid").metrics.get("held_out") is False:
        assert "(not held out: it trained on that split)" in result.stdout
    for repo in ("timm/resnet18.a1_in1k", "timm/resnet50.a1_in1k", "timm/resnet101.a1h_in1k"):
        assert repo in result.stdout


def test_push_pull_and_offline(tmp_path, hub_env):
    from segrefine import build_model

    server, env = hub_env
    run_dir = tmp_path / "run"
    save_checkpoint(
        build_model(variant="lite", num_classes=2, aux=False),
        run_dir / "checkpoints" / "best",
        dataset="toy",
        classes=("background", "pole"),
        palette=((0, 0, 0), (153, 153, 153)),
        metrics={"mIoU": 0.42, "split": "val"},
    )

    pushed = run("push", str(run_dir), "alice/lite-toy", "--flops-size", "256x512", "--token", "hf_any", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip().startswith(f"{server.url}/alice/lite-toy/commit/")
    files = server.files("alice/lite-toy")
    assert files["model.safetensors"] == (run_dir / "checkpoints" / "best" / "model.safetensors").read_bytes()
    readme = files["README.md"].decode()
    assert "library_name: segrefine" in readme and "1×3×256×512" in readme

    pulled = run("pull", "alice/lite-toy", env=env)
    assert pulled.returncode == 0, pulled.stderr
    local = Path(pulled.stdout.strip())
    assert (local / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert str(tmp_path / "hf-cache") in str(local)

    offline = {**env, "HF_HUB_OFFLINE": "1"}
    seen = len(server.requests)
    again = run("pull", "alice/lite-toy", env=offline)
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()) == local and len(server.requests) == seen

    missing = run("pull", "alice/never-pulled", env=offline)
    assert missing.returncode == 2 and missing.stdout == ""
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "HF_HUB_OFFLINE" in missing.stderr and "segrefine weights pull alice/never-pulled" in missing.stderr


def test_user_mistakes_are_one_line(tmp_path, hub_env):
    import torch

    _, env = hub_env
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text('{"model": {}}')
    for args, message in (
        (("pull", "alice/absent"), "Hub repo alice/absent not found"),
        (("push", str(tmp_path), "alice/x"), "pickled PyTorch checkpoint"),
    ):
        result = run(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
