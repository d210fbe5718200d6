"""Bad input never crashes and nothing finished is lost: each case through the real entry point (in process), checking
the exit code, the one line on stderr and what is left on disk."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file

from hub_server import HubServer
from segrefine.data import dataset_layouts, dataset_meta
from segrefine.engine import train as engine_train
from segrefine.engine.checkpoint import write_trainer_state
from segrefine.engine.predictor import Predictor
from segrefine.engine.recipes import RECIPES
from segrefine.hub import save_checkpoint
from segrefine.imageio import (
    FILE_MODE, MAX_PIXELS, PILLOW_MAX_PIXELS, UnreadableInput, image_size, read_image, size_problem, write_image,
)  # fmt: skip
import segrefine as segrefine_api
from segrefine import build_model
from segrefine.errors import SegrefineError

REPO = Path(__file__).resolve().parents[1]
TOY = dataset_meta("toy")
TINY = ["--dataset", "toy", "--dataset-option", "length=4", "--dataset-option", "size=64x64", "--crop", "64x64",
        "--batch-size", "2", "--workers", "0", "--device", "cpu", "--eval-every", "0"]


def segrefine(cli, *args) -> tuple[int, str, list[str]]:
    """(exit code, stdout, stderr lines) of one in-process command (the `cli` fixture)."""
    result = cli(*args)
    return result.returncode, result.stdout, result.stderr.strip().splitlines()


def one_error(lines: list[str], code: int = 2) -> str:
    """The single `segrefine: error:` line of a failed command (progress lines before it are allowed)."""
    errors = [line for line in lines if line.startswith("segrefine: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert not any("Traceback" in line for line in lines)
    return errors[0]


def huge_png(path: Path, height: int = 100_000, width: int = 100_000) -> Path:
    """A tiny PNG file whose header claims height×width pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model(variant="lite", num_classes=TOY.num_classes)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt"), dataset="toy", classes=TOY.classes, palette=TOY.palette)


@pytest.fixture
def street(tmp_path) -> Path:
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    return path


# --- settings --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lr", "nan"], "--lr must be a finite number, got nan"),
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--lr", "-inf"], "--lr must be a finite number, got -inf"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number, got nan"),
        (["--crop", "16x64"], "--crop 16×64 is smaller than the network's output stride 32"),
        (["--crop", "64x31"], "--crop 64×31 is smaller than the network's output stride 32"),
        (["--resume", "--overwrite"], "give one of them"),
        (["--crop", "100000x100000"], "--crop 100000×100000 is too large: each side must be at most 8192 pixels"),
        (["--batch-size", "1000000"], "--batch-size 1000000 is more than the 4 images of the toy train split: each "
                                      "batch would repeat images; use at most 4"),
        (["--iters", "100000000000000000000"], "--iters must be at most 10000000, got 100000000000000000000"),
    ],
)
def test_bad_train_options_are_one_line_and_write_nothing(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, lines = segrefine(cli, "train", *TINY, "--iters", "2", *args, "--out", tmp_path / "run")
    assert code == 2 and message in one_error(lines)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("c.json", '{"dataset": "toy", "iters": "many"}', "iters (from --config c.json) must be an integer, got 'many'"),
        ("c.json", '{"dataset": "toy", "lr": NaN}', "lr (from --config c.json) must be a finite number, got nan"),
        ("c.json", '{"dataset": "toy", "crop": 64}', "crop (from --config c.json) must be 2 integers, got 64"),
        ("c.json", '{"dataset": "toy", "memory": "yes"}', "memory (from --config c.json) must be true or false"),
        ("c.json", '{"dataset": "toy", "dataset_options": [1]}', "dataset_options (from --config c.json) must be a table"),
        ("c.toml", 'dataset = "toy"\ncrop = [16, 16]\n', "crop (from --config c.toml) 16×16 is smaller than"),
        ("c.toml", 'dataset = "toy"\nscale = [0.5, "2"]\n', "scale (from --config c.toml) must be 2 finite numbers"),
    ],
)
def test_config_values_of_the_wrong_type_name_the_setting(cli, tmp_path, monkeypatch, name, text, message):
    monkeypatch.chdir(tmp_path)
    Path(name).write_text(text)
    code, _, lines = segrefine(cli, "train", "--config", name)
    assert code == 2 and message in one_error(lines)
    assert not (tmp_path / "runs").exists()


def test_a_flag_overriding_the_config_is_named_as_the_flag(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("c.json").write_text('{"dataset": "toy", "lr": 0.5}')
    code, _, lines = segrefine(cli, "train", "--config", "c.json", "--lr", "nan")
    assert code == 2 and one_error(lines) == "segrefine: error: --lr must be a finite number, got nan"


def test_library_errors_name_the_python_parameter():
    from segrefine.engine.config import resolve_config
    from segrefine.errors import SettingError

    with pytest.raises(SettingError, match=r"^lr must be a finite number, got nan$") as error:
        resolve_config({}, {"dataset": "toy", "lr": float("nan")})
    assert error.value.settings == ["lr"]
    assert str(error.value.worded(lambda name: f"--{name}")) == "--lr must be a finite number, got nan"


# --- training keeps what it finished ---------------------------------------------------------------------------


def test_diverging_training_stops_and_keeps_the_last_good_checkpoint(cli, tmp_path):
    run = tmp_path / "run"
    code, _, lines = segrefine(cli, "train", *TINY, "--iters", "8", "--lr", "1e8", "--save-every", "1",
                               "--log-every", "100", "--out", run)  # fmt: skip
    line = one_error(lines)
    assert code == 2 and len(lines) == 1, lines
    match = re.search(r"training diverged at iteration (\d+): .* lower --lr \(now 1e\+08\) .* the last good checkpoint, "
                      r"from iteration (\d+), is (\S+)$", line)  # fmt: skip
    assert match, line
    assert int(match[2]) == int(match[1]) - 1 and Path(match[3]) == run / "checkpoints" / "last"
    last = run / "checkpoints" / "last"
    assert json.loads((last / "trainer.json").read_text())["iteration"] == int(match[2])
    assert all(torch.isfinite(t).all() for t in load_file(str(last / "model.safetensors")).values())
    assert not (run / "eval.json").exists()


def test_an_existing_run_is_refused_unless_resume_or_overwrite(cli, tmp_path):
    run = tmp_path / "run"
    code, out, _ = segrefine(cli, "train", *TINY, "--iters", "1", "--out", run)
    assert code == 0 and out.strip() == f"run folder: {run}"
    weights = run / "checkpoints" / "last" / "model.safetensors"
    before = weights.read_bytes(), (run / "log.jsonl").read_text()

    code, _, lines = segrefine(cli, "train", *TINY, "--iters", "1", "--seed", "5", "--out", run)
    assert code == 2 and len(lines) == 1
    assert f"--out {run} already holds a training run: continue it with --resume, replace it with --overwrite" in lines[0]
    assert (weights.read_bytes(), (run / "log.jsonl").read_text()) == before

    (run / "checkpoints" / "best" / "stale").write_text("from the old run")
    code, _, _ = segrefine(cli, "train", *TINY, "--iters", "1", "--seed", "5", "--overwrite", "--out", run)
    assert code == 0 and weights.read_bytes() != before[0]
    assert not (run / "checkpoints" / "best" / "stale").exists()
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 5

    # A finished run resumed: one line saying so, exit 0, nothing rewritten.
    state = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, out, lines = segrefine(cli, "train", "--resume", "--out", run)
    assert code == 0 and lines == [f"run {run} is already complete (1 of 1 iterations): nothing to resume"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == state


def test_checkpoint_files_get_the_normal_file_mode(tmp_path):
    save_checkpoint(build_model(variant="lite", num_classes=2, aux=False), tmp_path / "ckpt", dataset="toy",
                    classes=("a", "b"), palette=((0, 0, 0), (1, 1, 1)))  # fmt: skip
    write_trainer_state(tmp_path / "ckpt", {"x": torch.zeros(1)}, {"iteration": 1})
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()}
    assert modes == dict.fromkeys(("config.json", "model.safetensors", "trainer.safetensors", "trainer.json"), FILE_MODE)


def test_ctrl_c_says_where_the_checkpoint_is_and_resume_keeps_one_log_line_per_iteration(cli, tmp_path,
                                                                                          interrupt_training):
    run = tmp_path / "run"
    args = [*TINY, "--iters", "6", "--save-every", "2", "--log-every", "1", "--out", run]
    undo = interrupt_training(4)
    code, _, lines = segrefine(cli, "train", *args)
    assert code == 130
    assert one_error(lines) == (
        f"segrefine: error: interrupted at iteration 3; the last checkpoint ({run}/checkpoints/last) holds iteration 2: "
        f"continue with `segrefine train --resume --out {run}`"
    )
    assert json.loads((run / "checkpoints" / "last" / "trainer.json").read_text())["iteration"] == 2
    logged = [json.loads(line)["iter"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]

    undo()
    code, out, lines = segrefine(cli, "train", "--resume", "--out", run)
    assert code == 0 and lines[0] == "resuming from iteration 2", lines
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["iter"] for r in records if "val" in r] == [6]


def test_ctrl_c_before_the_first_checkpoint(cli, tmp_path, monkeypatch):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_train, "segmentation_loss", interrupt)
    code, _, lines = segrefine(cli, "train", *TINY, "--iters", "3", "--out", tmp_path / "run")
    assert code == 130
    assert "interrupted at iteration 0, before the first checkpoint: nothing to resume" in one_error(lines)


def test_a_run_folder_without_a_checkpoint_never_blocks_a_new_start(cli, tmp_path, monkeypatch):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(engine_train, "segmentation_loss", interrupt)
        code, _, _ = segrefine(cli, "train", *TINY, "--iters", "1", "--out", run)
    assert code == 130 and (run / "config.json").is_file() and not (run / "checkpoints").exists()
    code, out, lines = segrefine(cli, "train", *TINY, "--iters", "1", "--out", run)
    assert code == 0 and out.strip() == f"run folder: {run}", lines
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()


def test_a_run_folder_in_use_is_refused_in_one_line(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "w") as held:  # what a live run holds (see RunFolder.lock)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        code, _, lines = segrefine(cli, "train", *TINY, "--iters", "1", "--out", run)
    assert code == 2 and len(lines) == 1
    assert one_error(lines) == (f"segrefine: error: --out {run} is in use by another training run (process 4242): wait "
                                "for it to end, or choose another --out")  # fmt: skip
    assert sorted(p.name for p in run.iterdir()) == [".lock"]
    code, _, _ = segrefine(cli, "train", *TINY, "--iters", "1", "--out", run)  # released: the run goes ahead
    assert code == 0 and (run / "checkpoints" / "last").is_dir()


def _folder_dataset(root: Path, image: np.ndarray | None, label: np.ndarray) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("ground\nthing\n")
    if image is None:
        (root / "images" / "a.png").write_bytes(b"")
    else:
        cv2.imwrite(str(root / "images" / "a.png"), image)
    cv2.imwrite(str(root / "masks" / "a.png"), label)
    return root


@pytest.mark.parametrize(
    "image,label,message",
    [
        (np.zeros((40, 40, 3), np.uint8), np.full((40, 40), 7, np.uint8), r"label file \S+a.png has values 7 that are "
         r"neither a class of folder \(2 classes\) nor 255 \(ignore\)$"),
        (np.zeros((40, 40, 3), np.uint8), np.zeros((40, 48), np.uint8), r"image \S+a.png is 40×40 but its label \S+a.png "
         r"is 40×48 \(H×W\)$"),
        (None, np.zeros((40, 40), np.uint8), r"cannot read image \S+a.png: not a decodable image"),
    ],
)
def test_errors_in_dataloader_workers_are_the_adapters_one_line(cli, tmp_path, image, label, message):
    root = _folder_dataset(tmp_path / "data", image, label)
    code, _, lines = segrefine(cli, "train", "--dataset", "folder", "--data-root", root, "--crop", "32x32",
                               "--batch-size", "1", "--iters", "2", "--workers", "1", "--device", "cpu",
                               "--pretrained-backbone", "none", "--out", tmp_path / "run")  # fmt: skip
    line = one_error(lines)
    assert code == 2 and len(lines) == 1 and re.search(message, line), line
    assert "Caught" not in line and "worker" not in line
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- output folders --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "predict", "visualize"])
def test_out_naming_a_file_is_one_line(cli, tmp_path, monkeypatch, checkpoint, street, command):
    monkeypatch.chdir(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    args = {
        "train": ["train", *TINY, "--iters", "1"],
        "predict": ["predict", street, "--weights", checkpoint],
        "visualize": ["visualize", "offsets", street, "--weights", checkpoint, "--device", "cpu"],
    }[command]
    for out, message in ((taken, f"--out {taken} is a file, not a folder"),
                         (taken / "sub", f"--out {taken}/sub: {taken} is a file, not a folder")):  # fmt: skip
        code, stdout, lines = segrefine(cli, *args, "--out", out)
        assert code == 2 and stdout == "" and len(lines) == 1 and message in one_error(lines)
    assert taken.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["street.png", "taken"]


@pytest.mark.parametrize("command", ["train", "predict"])
def test_out_without_write_permission_is_one_line(cli, tmp_path, monkeypatch, checkpoint, street, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: stand in for a folder it may not write to
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real(path, mode))
    else:
        locked.chmod(0o500)
    args = ["train", *TINY, "--iters", "1"] if command == "train" else ["predict", street, "--weights", checkpoint]
    code, _, lines = segrefine(cli, *args, "--out", locked / "out")
    assert code == 2 and len(lines) == 1
    assert f"--out {locked}/out: no permission to write in {locked}" in one_error(lines)
    locked.chmod(0o700)
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "predict"])
def test_an_empty_out_is_refused_not_the_current_folder(cli, tmp_path, monkeypatch, checkpoint, street, command):
    monkeypatch.chdir(tmp_path)
    args = ["train", *TINY, "--iters", "1"] if command == "train" else ["predict", street, "--weights", checkpoint]
    code, stdout, lines = segrefine(cli, *args, "--out", "")
    assert code == 2 and stdout == "" and len(lines) == 1
    assert one_error(lines) == "segrefine: error: --out must name a folder, got an empty string"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["street.png"]


def test_empty_weights_are_refused_without_talking_about_the_current_folder(cli, tmp_path, street):
    code, _, lines = segrefine(cli, "predict", street, "--weights", "", "--out", tmp_path / "out")
    line = one_error(lines)
    assert code == 2 and line.startswith("segrefine: error: empty weights reference: expected ") and " . " not in line
    assert not (tmp_path / "out").exists()


# --- inputs that are not images ---------------------------------------------------------------------------------


def test_a_pipe_is_not_a_regular_file_and_the_others_are_predicted(cli, tmp_path, checkpoint, street):
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    out = tmp_path / "out"
    code, stdout, lines = segrefine(cli, "predict", pipe, street, "--weights", checkpoint, "--device", "cpu", "--out", out)
    assert code == 1 and "wrote 3 files" in stdout and "1 failed" in stdout
    assert f"segrefine: skipped: {pipe}: not a regular file (a device, pipe or socket): give image or video files or " \
           "folders" in lines  # fmt: skip


def test_a_broken_link_in_a_folder_is_reported_after_the_others(cli, tmp_path, checkpoint, street):
    folder = tmp_path / "photos"
    folder.mkdir()
    street.rename(folder / "street.png")
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    out = tmp_path / "out"
    code, stdout, lines = segrefine(cli, "predict", folder, "--weights", checkpoint, "--device", "cpu", "--out", out)
    assert code == 1 and "wrote 3 files" in stdout and "1 failed" in stdout
    assert (f"segrefine: skipped: {folder}/gone.png: a broken symbolic link (its target {tmp_path}/deleted.png does "
            "not exist)") in lines  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["street_color.png", "street_label.png", "street_overlay.png"]


def test_an_output_name_too_long_is_reported_and_the_others_done(cli, tmp_path, checkpoint, street):
    folder = tmp_path / "photos"
    folder.mkdir()
    long = folder / f"{'a' * 247}.png"  # 251 characters: its outputs' names are over the file system's 255
    shutil.copyfile(street, long)
    street.rename(folder / "street.png")
    out = tmp_path / "out"
    code, stdout, lines = segrefine(cli, "predict", folder, "--weights", checkpoint, "--device", "cpu", "--out", out)
    assert code == 1 and "predicted 1 image" in stdout and "wrote 3 files" in stdout and "1 failed" in stdout
    assert f"segrefine: skipped: {long}: cannot write {out}/{long.stem}_label.png: File name too long" in lines
    assert sorted(p.name for p in out.iterdir()) == ["street_color.png", "street_label.png", "street_overlay.png"]


def test_an_out_folder_that_cannot_be_created_is_refused_before_the_model_loads(cli, checkpoint, street):
    code, stdout, lines = segrefine(cli, "predict", street, "--weights", checkpoint, "--out", "/proc/segrefine-out")
    assert code == 2 and stdout == "" and len(lines) == 1, lines  # no line announcing the model
    assert lines[0].startswith("segrefine: error: --out /proc/segrefine-out")


def test_ctrl_c_in_a_folder_says_how_far_it_got_and_a_rerun_does_the_rest(cli, tmp_path, checkpoint, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, width in enumerate((64, 96, 128)):  # three sizes: three forward passes
        cv2.imwrite(str(folder / f"{i}.png"), np.zeros((64, width, 3), np.uint8))
    out = tmp_path / "out"
    real, calls = Predictor.predict_batch, []

    def interrupted_at_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_batch", interrupted_at_the_second)
    code, _, lines = segrefine(cli, "predict", folder, "--weights", checkpoint, "--out", out)
    assert code == 130 and lines[-1] == (
        f"segrefine: error: interrupted after 1 of 3 inputs (3 files written to {out}, each complete); the same "
        "command again does the rest, keeping the outputs that exist"
    )
    calls.clear()
    code, _, lines = segrefine(cli, "predict", folder, "--weights", checkpoint, "--out", out, "--overwrite")
    assert code == 130 and "; the same command without --overwrite does the rest" in lines[-1]
    monkeypatch.setattr(Predictor, "predict_batch", real)
    code, stdout, _ = segrefine(cli, "predict", folder, "--weights", checkpoint, "--out", out)
    assert code == 0 and "predicted 2 images" in stdout and "kept 3 existing" in stdout


def test_an_image_without_pixels_is_a_clear_error(checkpoint):
    predictor = segrefine_api.load(checkpoint, "cpu")
    with pytest.raises(SegrefineError, match=r"^images must have at least one pixel, got shape \(0, 0, 3\)$"):
        predictor.predict(np.zeros((0, 0, 3), np.uint8))


# --- images too large to decode ---------------------------------------------------------------------------------


def test_an_image_too_large_to_decode_is_unreadable(tmp_path):
    with pytest.raises(UnreadableInput, match=r"cannot read image \S+huge.png: its header claims a size too large"):
        read_image(huge_png(tmp_path / "huge.png"))


def test_predict_skips_an_image_too_large_to_decode_and_does_the_others(cli, tmp_path, checkpoint, street):
    huge = huge_png(tmp_path / "huge.png")
    out = tmp_path / "out"
    code, stdout, lines = segrefine(cli, "predict", huge, street, "--weights", checkpoint, "--device", "cpu",
                                    "--out", out)  # fmt: skip
    assert code == 1 and "wrote 3 files" in stdout and "1 failed" in stdout
    skipped = [line for line in lines if line.startswith("segrefine: skipped:")]
    assert len(skipped) == 1 and f"cannot read image {huge}: its header claims a size too large" in skipped[0]
    assert sorted(p.name for p in out.iterdir()) == ["street_color.png", "street_label.png", "street_overlay.png"]


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    bomb = huge_png(tmp_path / "bomb.png", 12_000, 12_000)  # under opencv's own limit: it would decode it
    message = (rf"cannot read image \S+bomb.png: its header claims a size too large to decode: 12000×12000 \(H×W\) is "
               rf"144000000 pixels, over the limit of {MAX_PIXELS} \(`max_pixels`\)$")  # fmt: skip
    with pytest.raises(UnreadableInput, match=message):
        read_image(bomb)


def test_past_pillows_own_limit_the_header_is_refused_unless_the_limit_allows_more(tmp_path):
    data = huge_png(tmp_path / "huge.png").read_bytes()  # 10^10 pixels: Pillow does not give the size
    assert size_problem(data) == f"more than {PILLOW_MAX_PIXELS} pixels, over the limit of {MAX_PIXELS} (`max_pixels`)"
    assert size_problem(data, max_pixels=PILLOW_MAX_PIXELS) is None  # then opencv's own limit has the last word
    assert size_problem(huge_png(tmp_path / "ok.png", 100, 100).read_bytes()) is None


@pytest.mark.parametrize(
    "suffix,params,channels",
    [(".png", [], 3), (".jpg", [], 3), (".bmp", [], 3), (".tiff", [], 3), (".tiff", [], 1), (".webp", [], 3),
     (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], 3), (".webp", [], 4)],  # lossy, lossless and extended (alpha) WebP
)  # fmt: skip
def test_image_size_reads_the_header_of_each_format(suffix, params, channels):
    pixels = np.random.default_rng(0).integers(0, 255, (37, 53, channels)[: 2 + (channels > 1)], dtype=np.uint8)
    ok, encoded = cv2.imencode(suffix, pixels, params)
    assert ok and image_size(encoded.tobytes()) == (37, 53)


def test_predict_refuses_images_over_max_pixels_and_does_the_others(cli, tmp_path, checkpoint, street):
    folder = tmp_path / "photos"
    folder.mkdir()
    small = folder / "small.png"
    cv2.imwrite(str(small), np.zeros((32, 48, 3), np.uint8))
    street.rename(folder / "street.png")
    out = tmp_path / "out"
    code, stdout, lines = segrefine(cli, "predict", folder, "--max-pixels", "2000", "--weights", checkpoint,
                                    "--device", "cpu", "--out", out)  # fmt: skip
    assert code == 1 and "wrote 3 files" in stdout and "1 failed" in stdout
    skipped = [line for line in lines if line.startswith("segrefine: skipped:")]
    assert skipped == [f"segrefine: skipped: cannot read image {folder}/street.png: its header claims a size too large "
                       "to decode: 64×96 (H×W) is 6144 pixels, over the limit of 2000 (--max-pixels)"]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["small_color.png", "small_label.png", "small_overlay.png"]


def test_a_corrupt_png_is_our_one_line_without_libpngs_own(tmp_path, capfd):
    ok, encoded = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    data[40] ^= 0xFF  # inside the IDAT chunk's header: libpng reports it on stderr itself
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(UnreadableInput, match="not a decodable image"):
        read_image(tmp_path / "bad.png")
    assert capfd.readouterr().err == ""


def test_a_file_name_near_the_file_systems_limit_is_written(tmp_path):
    path = tmp_path / ("c" * 246 + ".png")  # 250 bytes, of the usual 255: the temporary file's name must fit too
    write_image(path, np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == [path]


def test_decoding_on_threads_keeps_every_line_of_stderr_and_none_of_libpngs(tmp_path, capfd):
    """Two threads decoding at once (as predict does) once left stderr muted for good, and lines printed meanwhile
    were lost."""
    ok, encoded = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    data[40] ^= 0xFF
    (tmp_path / "bad.png").write_bytes(bytes(data))

    def decode_many():
        for _ in range(40):
            with pytest.raises(UnreadableInput):
                read_image(tmp_path / "bad.png")

    threads = [threading.Thread(target=decode_many) for _ in range(2)]
    for thread in threads:
        thread.start()
    for k in range(40):
        print(f"line {k}", file=sys.stderr, flush=True)
    for thread in threads:
        thread.join()
    print("after", file=sys.stderr, flush=True)
    assert capfd.readouterr().err.splitlines() == [f"line {k}" for k in range(40)] + ["after"]


@pytest.mark.parametrize("kind", ["offsets", "attention"])
def test_visualize_skips_unreadable_images_and_does_the_others(cli, tmp_path, checkpoint, street, kind):
    huge = huge_png(tmp_path / "huge.png")
    out = tmp_path / "out"
    code, stdout, lines = segrefine(cli, "visualize", kind, huge, street, "--weights", checkpoint, "--device", "cpu",
                                    "--out", out)  # fmt: skip
    assert code == 1
    skipped = [line for line in lines if line.startswith("segrefine: skipped:")]
    assert len(skipped) == 1 and f"cannot read image {huge}: its header claims a size too large" in skipped[0]
    assert not any("Traceback" in line or "segrefine: error" in line for line in lines)
    written = sorted(p.name for p in out.iterdir())
    assert written and all(name.startswith("street-") for name in written)
    assert sorted(stdout.split()) == [str(out / name) for name in written]


# --- the Hub ---------------------------------------------------------------------------------------------------


@pytest.fixture
def online(hf, monkeypatch):
    """huggingface_hub online, with a fresh cache and no token (conftest's `hf`); its endpoint is set by each test."""

    def point_at(url: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")

    return point_at


def _closed_port_url() -> str:
    with HubServer() as server:
        return server.url  # nothing listens there any more: connections are refused


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    model = build_model(variant="lite", num_classes=2, aux=False)
    return save_checkpoint(model, tmp_path_factory.mktemp("small"), dataset="toy", classes=("a", "b"),
                           palette=((0, 0, 0), (9, 9, 9)))  # fmt: skip


def test_push_without_a_token_says_so_before_contacting_the_hub(cli, online, small_checkpoint):
    with HubServer() as server:
        online(server.url)
        code, stdout, lines = segrefine(cli, "weights", "push", small_checkpoint, "alice/x", "--flops-size", "64x64")
        assert not server.requests and "alice/x" not in server.repos
    assert code == 2 and stdout == "" and len(lines) == 1
    assert "pushing to the Hub needs a Hugging Face token with write access: pass --token, set HF_TOKEN" in one_error(lines)


def test_push_to_an_unreachable_hub_is_one_line(cli, online, small_checkpoint):
    url = _closed_port_url()
    online(url)
    start = time.perf_counter()
    code, stdout, lines = segrefine(cli, "weights", "push", small_checkpoint, "alice/x", "--token", "hf_x",
                                    "--flops-size", "64x64")  # fmt: skip
    assert code == 2 and stdout == "" and len(lines) == 1
    assert f"cannot reach the Hub at {url} to push alice/x" in one_error(lines)
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize("offline", [True, False])
def test_imagenet_backbone_without_the_hub_fails_at_once(cli, tmp_path, online, monkeypatch, offline):
    online(_closed_port_url())
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    run = tmp_path / "run"
    start = time.perf_counter()
    code, _, lines = segrefine(cli, "train", *TINY, "--iters", "1", "--pretrained-backbone", "imagenet", "--out", run)
    assert time.perf_counter() - start < 20  # no retries with back-off
    line = one_error(lines)
    assert code == 2 and len(lines) == 1
    assert ("HF_HUB_OFFLINE=1" if offline else "cannot reach the Hub") in line
    assert line.endswith("or set --pretrained-backbone to none (no ImageNet initialisation) or to a local .safetensors file")
    assert not run.exists()


# --- friction --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 120])
def test_datasets_wraps_the_layouts_instead_of_cutting_them(cli, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, _ = segrefine(cli, "datasets")
    assert code == 0 and "…" not in out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= columns
    # The layout column of each row, read back cell line by cell line, is the whole layout.
    cells: dict[str, str] = {}
    name = ""
    for line in lines:
        parts = line.split("│")
        if len(parts) == 5:
            name = parts[1].strip() or name
            cells[name] = cells.get(name, "") + parts[2].strip()
    for dataset, layout in dataset_layouts().items():
        assert "".join(layout.split()) in "".join(cells[dataset].split()), dataset


def test_train_help_says_where_the_recipe_defaults_are(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = segrefine(cli, "train", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "`segrefine datasets` lists each recipe's crop, batch size, iterations, loss, lr and backbone" in text
    assert "--overwrite" in text


def _help_pages() -> list[tuple[str, ...]]:
    """Every command line whose --help to read: the root, each subcommand and each of their subcommands."""
    from segrefine.cli import COMMANDS, load_command

    pages = [()]
    for name in COMMANDS:
        pages.append((name,))
        pages += [(name, sub) for sub in getattr(load_command(name), "commands", {})]
    return pages


def test_flags_show_no_value_placeholder_in_help(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for page in _help_pages():
        code, out, _ = segrefine(cli, *page, "-h")
        assert code == 0 and "--help" in out and "<bool>" not in out, page


def test_help_words_that_were_missing_or_wrong(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    _, out, _ = segrefine(cli, "flops", "--help")
    assert "--num-classes <int> Number of classes the network predicts." in " ".join(out.split())
    for page in (("visualize", "offsets"), ("visualize", "errors"), ("export",)):
        _, out, _ = segrefine(cli, *page, "--help")
        weights = next(line for line in out.splitlines() if line.startswith("│") and "--weights" in line)
        assert "PyTorch checkpoint" in weights and ".onnx" not in weights, page


def test_the_python_api_example_counts_the_inference_network(tmp_path):
    """The README's 12.35 M: `lite` without the training-only auxiliary head."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "python_api.py"), "--out", str(tmp_path / "api"), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "lite with 19 classes: 12.35 M parameters" in result.stdout


def test_walkthrough_states_the_toy_recipe(tmp_path):
    text = (REPO / "examples" / "walkthrough.sh").read_text()
    iters = RECIPES["toy"].iters
    assert f"ITERS={iters} bash examples/walkthrough.sh    # the toy recipe's full schedule ({iters} iterations" in text
    assert "1500" not in text
    assert re.search(r"segrefine train .*--overwrite", text)  # a second walk-through replaces its own run
