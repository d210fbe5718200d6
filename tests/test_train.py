import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import segrefine
from segrefine.engine.checkpoint import recover, replace_folder
from segrefine.engine.losses import cross_entropy, ohem_cross_entropy, segmentation_loss
from segrefine.engine.sampling import StreamBatchSampler

TOY = ["--dataset", "toy", "--dataset-option", "length=6", "--dataset-option", "size=64x96", "--crop", "64x64",
       "--batch-size", "2", "--workers", "0", "--device", "cpu"]



def _weights(run: Path) -> dict:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


@pytest.mark.parametrize("variant,extra", [("lite", ["--memory"]), ("base", []), ("large", ["--srm", "flow", "--crm", "gate"])])
def test_short_run_of_every_variant_through_the_cli(cli, tmp_path, variant, extra):
    run = tmp_path / "run"
    result = cli("train", *TOY, "--variant", variant, *extra, "--iters", "2", "--log-every", "1", "--out", str(run))
    assert result.returncode == 0, result.stderr
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["iter"] for r in steps] == [1, 2]
    assert {"loss", "loss_main", "loss_aux", "lr", "images_per_s", "memory_mb"} <= set(steps[0])
    assert ("loss_memory" in steps[0]) == ("--memory" in extra)
    assert any("val" in r for r in log)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["variant"] == variant and config["classes"] and len(config["palette"]) == len(config["classes"])
    assert config["train"]["iters"] == 2 and config["train"]["crop"] == [64, 64]
    evaluation = json.loads((run / "eval.json").read_text())
    assert 0.0 <= evaluation["mIoU"] <= 1.0
    for folder in ("best", "last"):
        assert {"config.json", "model.safetensors", "trainer.json", "trainer.safetensors"} <= {
            p.name for p in (run / "checkpoints" / folder).iterdir()}
    if "--memory" in extra:
        assert _weights(run)["memory.initialized"].any()


def test_auto_numbered_run_folders_and_config_round_trip(cli, tmp_path):
    first = cli("train", *TOY, "--iters", "1", "--eval-every", "0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "train" / "exp"
    # The run's own config.json reproduces it; flags still override it.
    second = cli("train", "--config", str(run / "config.json"), "--lr", "0.005", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    settings = [json.loads((tmp_path / "runs" / "train" / name / "config.json").read_text())["train"] for name in ("exp", "exp2")]
    assert settings[1].pop("lr") == 0.005 and settings[0].pop("lr") != 0.005
    assert settings[0] == settings[1]


def test_toml_config(cli, tmp_path):
    (tmp_path / "c.toml").write_text('dataset = "toy"\niters = 1\nbatch_size = 2\ncrop = [64, 64]\nworkers = 0\n'
                                     'dataset_options = { length = 4, size = [48, 64] }\neval_every = 0\n')
    result = cli("train", "--config", "c.toml", "--out", "r", "--dataset-option", "length=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    train = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert train["crop"] == [64, 64] and train["dataset_options"] == {"length": 2, "size": [48, 64]}  # one key changed


def test_config_files_that_cannot_be_read_are_one_line(cli, tmp_path):
    (tmp_path / "latin1.toml").write_bytes(b'# r\xe9glages\ndataset = "toy"\n')
    (tmp_path / "c.yaml").write_text("dataset: toy\n")
    for name, message in (("latin1.toml", "is not a UTF-8 text file, as TOML must be"),
                          ("c.yaml", "must be a .toml or .json file")):  # fmt: skip
        result = cli("train", "--config", name, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.splitlines() == [f"segrefine: error: --config {name} {message}"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{broken")  # no --config given: the resumed run's own file
    result = cli("train", "--resume", "--out", "run", cwd=tmp_path)
    assert result.stderr.startswith("segrefine: error: the run's settings file run/config.json is not valid JSON")


SMALL = ["--dataset-option", "length=4", "--crop", "64x64", "--batch-size", "2", "--workers", "0", "--iters", "2"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--dataset", "toy", *SMALL, "--batch-size", "0"], "--batch-size"),
        (["--dataset", "toy", *SMALL, "--iters", "-3"], "--iters"),
        (["--dataset", "toy", *SMALL, "--crop", "64"], "--crop"),
        (["--dataset", "toy", *SMALL, "--crop", "0x64"], "--crop"),
        (["--dataset", "cityscape", "--iters", "2"], "did you mean 'cityscapes'"),
        (["--dataset", "toy", *SMALL, "--resume"], "--resume"),
        (["--dataset", "toy", *SMALL, "--device", "cuda"], "CUDA"),
        (["--dataset", "toy", *SMALL, "--dataset-option", "bogus=1"], "bogus"),
        (["--dataset", "toy", *SMALL, "--dataset-option", "size=0x64"], "--dataset-option size must be HxW"),
        (["--dataset", "ade20k", "--data-root", "/nonexistent", "--iters", "2"], "/nonexistent"),
    ],
)
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args, needle):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("train", *args, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.fixture
def one_thread():
    """Bit-identical weights need the same float reduction order in-process and in the killed subprocess."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_killed_run_resumes_to_the_same_weights(cli, tmp_path, one_thread):
    common = [*TOY, "--iters", "10", "--save-every", "2", "--eval-every", "0", "--log-every", "1", "--seed", "3", "--memory"]
    straight = cli("train", *common, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "segrefine", "train", *common, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state = run / "checkpoints" / "last" / "trainer.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text() or "{}").get("iteration", 0) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training finished before it could be killed"
    assert json.loads(state.read_text())["iteration"] < 10

    resumed = cli("train", "--resume", "--out", str(run), "--workers", "0")
    assert resumed.returncode == 0, resumed.stderr
    expected, actual = _weights(tmp_path / "straight"), _weights(run)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    iters = [r["iter"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert iters[-1] == 10


def test_resume_refuses_changed_settings(cli, tmp_path):
    assert cli("train", *TOY, "--iters", "1", "--eval-every", "0", "--out", str(tmp_path / "r")).returncode == 0
    result = cli("train", "--resume", "--out", str(tmp_path / "r"), "--lr", "0.5")
    assert result.returncode == 2 and "cannot change: --lr" in result.stderr


def test_two_process_gloo_run(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "segrefine", "train", *TOY, "--batch-size", "4", "--iters", "2", "--log-every", "1", "--memory",
           "--out", str(run)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if "loss" in r] == [1, 2]  # rank 0 logs alone
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    assert _weights(run)["memory.initialized"].any()
    # the validation scored the network that was saved (each process's BatchNorm statistics had moved on their own)
    saved = segrefine.evaluate(run, "toy", dataset_options={"length": 6, "size": (64, 96)}, device="cpu", progress=False)
    assert json.loads((run / "eval.json").read_text())["mIoU"] == pytest.approx(saved["mIoU"], abs=1e-6)


# --- units ----------------------------------------------------------------------------------------------------


def test_interrupted_folder_swap_keeps_the_last_complete_checkpoint(tmp_path):
    dst = tmp_path / "last"
    replace_folder(dst, lambda d: (d / "trainer.json").write_text("1"))

    def crash(d):
        (d / "trainer.json").write_text("2-partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_folder(dst, crash)
    assert recover(dst) == dst and (dst / "trainer.json").read_text() == "1"
    assert not (tmp_path / "last.tmp").exists()
    # Killed between the two renames: only last.old (complete) and last.tmp are there.
    os.replace(dst, tmp_path / "last.old")
    (tmp_path / "last.tmp").mkdir()
    assert recover(dst) == dst and (dst / "trainer.json").read_text() == "1"
    assert recover(tmp_path / "never") is None


def test_ohem_keeps_hard_pixels_and_at_least_min_kept():
    logits = torch.tensor([[[[10.0, 0.0, 0.0, 0.0]], [[0.0, 10.0, 0.0, 0.0]]]])  # 1×2×1×4
    target = torch.tensor([[[0, 0, 1, 255]]])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")[0, 0]
    # pixel 0 is easy (p≈1), pixels 1 and 2 are hard (p ≤ 0.5), pixel 3 is ignored
    assert ohem_cross_entropy(logits, target, min_kept=0) == pytest.approx(per_pixel[1:3].mean().item())
    assert ohem_cross_entropy(logits, target, min_kept=3) == pytest.approx(per_pixel[:3].mean().item())


def test_loss_parts_are_weighted():
    out = {k: torch.randn(2, 3, 4, 4) for k in ("out", "aux", "memory_logits")}
    target = torch.randint(0, 3, (2, 4, 4))
    parts = segmentation_loss(out, target)
    assert parts["total"] == pytest.approx((parts["main"] + 0.4 * parts["aux"] + 0.4 * parts["memory"]).item())


def test_cross_entropy_is_torchs_mean_and_zero_on_a_batch_without_labels():
    logits, target = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randint(0, 3, (2, 4, 4))
    target[0, :2] = 255
    weight = torch.tensor([0.2, 1.0, 3.0])
    for w in (None, weight):
        expected = torch.nn.functional.cross_entropy(logits, target, weight=w, ignore_index=255)
        assert cross_entropy(logits, target, w).item() == pytest.approx(expected.item(), rel=1e-6)
    unlabelled = torch.full_like(target, 255)  # e.g. a frame whose mask is all ignore
    for kind in ("ce", "ohem"):
        loss = segmentation_loss({"out": logits, "aux": logits}, unlabelled, kind, weight)["total"]
        loss.backward()
        assert loss.item() == 0.0 and not logits.grad.any()


def test_stream_sampler_resumes_and_shards():
    full = StreamBatchSampler(5, 2, seed=1)
    batches = [b for b, _ in zip(full, range(6))]
    resumed = StreamBatchSampler(5, 2, seed=1, start=3)
    assert [b for b, _ in zip(resumed, range(3))] == batches[3:]
    positions = [p for b in batches for p, _ in b]
    assert positions == list(range(12))
    assert sorted(i for b in batches[:2] for _, i in b)[:4] != []  # indices come from permutations
    assert sorted(i for b in batches for _, i in b[:]) and {i for b in batches[:2] for _, i in b} | {batches[2][0][1]} == set(range(5))
    rank0, rank1 = (StreamBatchSampler(5, 1, seed=1, rank=r, world_size=2) for r in (0, 1))
    assert [next(iter(rank0)), next(iter(rank1))] == [batches[0][:1], batches[0][1:]]


def test_init_weights_starts_from_a_trained_network_and_refuses_a_misfit(cli, tmp_path):
    from segrefine.engine.config import TrainConfig
    from segrefine.engine.train import Trainer

    first = tmp_path / "first"
    assert cli("train", *TOY, "--iters", "1", "--eval-every", "0", "--out", first).returncode == 0
    trained = _weights(first)
    settings = dict(dataset_options={"length": 6, "size": (64, 96)}, crop=(64, 64), batch_size=2, workers=0,
                    device="cpu", iters=1, seed=5)  # fmt: skip
    trainer = Trainer(TrainConfig.from_recipe("toy", init_weights=str(first), **settings), tmp_path / "second")
    trainer._build()
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    scratch = Trainer(TrainConfig.from_recipe("toy", **settings), tmp_path / "third")
    scratch._build()
    assert not torch.equal(scratch.model.state_dict()["classifier.1.weight"], trained["classifier.1.weight"])

    misfit = cli("train", *TOY, "--srm", "bilinear", "--iters", "1", "--init-weights", first, "--out", tmp_path / "x")
    assert misfit.returncode != 0 and "Traceback" not in misfit.stderr
    assert len(misfit.stderr.strip().splitlines()) == 1 and "--init-weights" in misfit.stderr, misfit.stderr


def test_photometric_setting_reaches_the_run_config_and_is_checked(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("train", *TOY, "--iters", "1", "--eval-every", "0", "--photometric", "camera", "--out", run).returncode == 0
    assert json.loads((run / "config.json").read_text())["train"]["photometric"] == "camera"
    bad = cli("train", *TOY, "--iters", "1", "--photometric", "sepia", "--out", tmp_path / "bad")
    assert bad.returncode != 0 and "--photometric" in bad.stderr and not (tmp_path / "bad").exists()


def test_log_window_records_the_mean_losses_of_its_steps():
    from segrefine.engine.train import _LogWindow

    window = _LogWindow()
    window.add({"total": torch.tensor(1.0), "aux": torch.tensor(0.5)}, 4)
    window.add({"total": torch.tensor(3.0), "aux": torch.tensor(1.5)}, 4)
    record = window.record(7, 0.01, torch.device("cpu"))
    assert {k: record[k] for k in ("iter", "loss", "loss_aux", "lr")} == {"iter": 7, "loss": 2.0, "loss_aux": 1.0, "lr": 0.01}
    assert 0 < record["images_per_s"] and record["memory_mb"] > 0


def test_resume_restores_each_gpus_rng_state_to_its_own_device(tmp_path, monkeypatch):
    """Twelve GPUs: the RNG states go back by device index, not in the text order of their keys."""
    from segrefine.engine import checkpoint

    states = [torch.full((4,), i, dtype=torch.uint8) for i in range(12)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(states))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    weights = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weights], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    tensors, state = checkpoint.trainer_state(optimizer, scheduler, None, 3, {})
    checkpoint.write_trainer_state(tmp_path, tensors, state)
    checkpoint.restore_trainer_state(tmp_path, optimizer, scheduler, None)
    assert [int(s[0]) for s in restored] == list(range(12))
