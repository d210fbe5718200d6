"""`segrefine predict` through the real entry point: files, folders, globs, videos, skipping, failures, messages."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segrefine.cli.predict import parse_save
from segrefine.data import build_dataset, dataset_meta
from segrefine.engine.predict_files import check_save
from segrefine.imageio import check_alpha
from segrefine.errors import SegrefineError
from segrefine.hub import save_checkpoint
from segrefine import build_model

META = dataset_meta("toy")
REPO = Path(__file__).resolve().parents[1]
STREET = Path("images", "street-cityscapes-512x1024.png")



@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(variant="lite", num_classes=META.num_classes)
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(model, folder, dataset="toy", classes=META.classes, palette=META.palette)


@pytest.fixture(scope="module")
def frames():
    """Five small toy scenes as BGR arrays (what cv2 writes)."""
    scenes = build_dataset("toy", None, "val", size=(64, 96), length=5)
    return [cv2.cvtColor(s["image"].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR) for s in scenes]


def write_video(path, frames, fps=6.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def check_outputs(out, name, size=(64, 96)):
    label = cv2.imread(str(out / f"{name}_label.png"), cv2.IMREAD_UNCHANGED)
    assert label.shape == size and label.dtype == np.uint8 and label.max() < META.num_classes
    color = cv2.cvtColor(cv2.imread(str(out / f"{name}_color.png")), cv2.COLOR_BGR2RGB)
    palette = np.array(META.palette, np.uint8)
    assert np.array_equal(color, palette[label])
    overlay = cv2.imread(str(out / f"{name}_overlay.png"))
    assert overlay.shape == (*size, 3)


def test_files_folders_globs_and_video(cli, checkpoint, frames, tmp_path):
    cv2.imwrite(str(tmp_path / "single.png"), frames[0])
    tree = tmp_path / "tree"
    for sub, frame in (("a", frames[1]), ("b", frames[2]), ("b/deep", frames[3])):
        (tree / sub).mkdir(parents=True)
        cv2.imwrite(str(tree / sub / "same.png"), frame)  # equal stems in different folders must not collide
    shots = tmp_path / "shots" / "day"
    shots.mkdir(parents=True)
    cv2.imwrite(str(shots / "g1.jpg"), frames[4])
    cv2.imwrite(str(shots / "g2.png"), frames[0])
    cv2.imwrite(str(shots / "ignored.bmp"), frames[0])
    write_video(tmp_path / "clip.mp4", frames)
    out = tmp_path / "out"
    out.mkdir()
    (out / "single_color.png").write_bytes(b"stale")  # replaced: --overwrite

    result = cli(
        "predict", "single.png", "tree", "shots/**/g*.*", "clip.mp4", "--weights", checkpoint, "--out", out,
        "--batch-size", "2", "--overwrite", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("single", "a/same", "b/same", "b/deep/same", "day/g1", "day/g2"):
        check_outputs(out, name)
    assert not list(out.rglob("ignored*"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["single_label.png", "single_color.png", "single_overlay.png", "a", "b", "day", "clip_overlay.mp4"]
    )
    video = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(6.0)
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 64)
    count = 0
    while video.read()[0]:
        count += 1
    assert count == 5
    assert "6 images and 1 video (5 frames)" in result.stdout
    assert "wrote 19 files" in result.stdout and "0 failed" in result.stdout
    assert not list(out.rglob(".*"))  # no temporary files left


def test_existing_outputs_are_kept_without_overwrite(cli, checkpoint, frames, tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), frames[0])
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_color.png").write_bytes(b"mine")
    result = cli("predict", tmp_path / "x.png", "--weights", checkpoint, "--out", out, "--save", "label,color")
    assert result.returncode == 0, result.stderr
    assert (out / "x_color.png").read_bytes() == b"mine"
    assert (out / "x_label.png").is_file() and not (out / "x_overlay.png").exists()
    assert "x_color.png" in result.stderr and "--overwrite" in result.stderr
    assert "wrote 1 file" in result.stdout and "kept 1 existing" in result.stdout


def test_a_run_with_every_output_in_place_loads_no_model(cli, frames, tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), frames[0])
    for kind in ("label", "color", "overlay"):
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / f"x_{kind}.png").write_bytes(b"mine")
    result = cli("predict", tmp_path / "x.png", "--weights", tmp_path / "never-loaded", "--out", tmp_path / "out")
    assert result.returncode == 0 and "kept 3 existing" in result.stdout, result.stderr


def test_predicting_a_folder_into_itself_skips_only_earlier_outputs(cli, checkpoint, frames, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "x.png"), frames[0])
    for _ in range(2):  # the second run finds x's outputs beside it: they are not inputs
        result = cli("predict", folder, "--weights", checkpoint, "--out", folder, "--short-side", "0")
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["x.png", "x_color.png", "x_label.png", "x_overlay.png"]
    assert "kept 3 existing" in result.stdout


def test_an_input_whose_last_output_fails_leaves_none(cli, checkpoint, frames, tmp_path, monkeypatch):
    import segrefine.engine.predict_files as predict_files

    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "x.png"), frames[0])
    os.mkfifo(folder / "pipe.png")  # inside a folder too, a pipe is reported
    real = predict_files.imageio.overlay

    def failing(*args, **kwargs):
        raise SegrefineError("cannot write the overlay: disk full")

    monkeypatch.setattr(predict_files.imageio, "overlay", failing)
    result = cli("predict", folder, "--weights", checkpoint, "--out", tmp_path / "out", "--short-side", "0")
    monkeypatch.setattr(predict_files.imageio, "overlay", real)
    assert result.returncode == 1 and not list((tmp_path / "out").iterdir())
    assert f"{folder}/pipe.png: not a regular file (a device, pipe or socket)" in result.stderr
    assert "x.png: cannot write the overlay: disk full" in result.stderr
    # with --overwrite, outputs that replaced earlier ones stay: removing them would leave nothing
    assert cli("predict", folder / "x.png", "--weights", checkpoint, "--out", tmp_path / "out").returncode == 0
    monkeypatch.setattr(predict_files.imageio, "overlay", failing)
    result = cli("predict", folder / "x.png", "--weights", checkpoint, "--out", tmp_path / "out", "--overwrite")
    assert result.returncode == 1 and sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "x_color.png", "x_label.png", "x_overlay.png"
    ]


def test_a_video_whose_output_cannot_be_written_is_skipped_and_the_rest_done(cli, checkpoint, frames, tmp_path,
                                                                            monkeypatch):
    from segrefine.engine.predictor import Predictor

    write_video(tmp_path / "clip.mp4", frames)
    cv2.imwrite(str(tmp_path / "x.png"), frames[0])

    def unwritable(self, source, target, alpha=0.5):
        raise SegrefineError(f"cannot write {target}: File name too long")

    monkeypatch.setattr(Predictor, "predict_video", unwritable)
    result = cli("predict", tmp_path / "clip.mp4", tmp_path / "x.png", "--weights", checkpoint, "--out", tmp_path / "o")
    assert result.returncode == 1 and (tmp_path / "o" / "x_label.png").is_file()
    assert f"skipped: {tmp_path}/clip.mp4: cannot write" in result.stderr and "1 failed" in result.stdout


def test_bad_inputs_are_reported_and_skipped(cli, checkpoint, frames, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good1.png"), frames[0])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    cv2.imwrite(str(folder / "good2.png"), frames[1])
    cv2.imwrite(str(folder / "good2.jpg"), frames[1])  # same outputs as good2.png: the second one is refused
    (tmp_path / "broken.mp4").write_bytes(b"not a video")  # outputs broken_overlay.mp4: no clash with broken.png
    out = tmp_path / "out"

    result = cli(
        "predict", "in", "broken.mp4", "missing.png", "nothing/*.png", "--weights", checkpoint, "--out", out,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    check_outputs(out, "good1")
    check_outputs(out, "good2")
    lines = result.stderr.strip().splitlines()
    for name in ("broken.png", "broken.mp4", "missing.png", "nothing/*.png", "good2.png"):
        assert sum(name in line for line in lines) == 1, result.stderr
    assert len(lines) == 6 and sum(line.startswith("model ") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "2 images" in result.stdout and "5 failed" in result.stdout



def test_save_and_alpha_options():
    assert parse_save("overlay,label") == ("label", "overlay")
    assert parse_save(" color ") == ("color",)
    for bad in ("label,mask", "", ","):
        with pytest.raises(SegrefineError, match="--save"):
            parse_save(bad)
    assert check_save("label") == ("label",) and check_save(["overlay", "label"]) == ("label", "overlay")
    check_alpha(0.0)
    check_alpha(1.0)
    with pytest.raises(SegrefineError, match="^alpha must be between 0 and 1, got 1.5"):
        check_alpha(1.5)


def test_street_image_with_a_short_toy_run(cli, shared_data, tmp_path):
    run = tmp_path / "run"
    trained = cli(
        "train", "--dataset", "toy", "--dataset-option", "length=6", "--dataset-option", "size=64x96",
        "--crop", "64x64", "--batch-size", "2", "--iters", "2", "--workers", "0", "--eval-every", "0", "--out", run,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "out"
    result = cli("predict", shared_data / STREET, "--weights", run, "--out", out)
    assert result.returncode == 0, result.stderr
    check_outputs(out, STREET.stem, size=(512, 1024))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crop", "32x32"], "--crop and --stride apply only with --mode slide"),
        (["--mode", "slide", "--crop", "32x32", "--stride", "64x16"], "--stride must be positive and at most the crop"),
    ],
)
def test_bad_inference_options_are_one_line_in_flags_before_loading(cli, tmp_path, args, message):
    result = cli("predict", "--example", "--weights", "no-such-model", "--out", tmp_path / "out", *args)
    assert result.returncode == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert message in result.stderr and "`" not in result.stderr


def test_alpha_is_checked_once_per_job_and_worded_as_a_flag(cli, checkpoint, tmp_path, monkeypatch):
    import segrefine.engine.predict_files as predict_files
    import segrefine.engine.predictor as predictor

    result = cli("predict", "--example", "--weights", "no-such-model", "--out", tmp_path / "bad", "--alpha", "1.5")
    assert result.returncode == 2 and result.stderr == "segrefine: error: --alpha must be between 0 and 1, got 1.5\n"
    calls = []
    for module in (predict_files, predictor):
        monkeypatch.setattr(module, "check_alpha", calls.append)
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.zeros((32, 32, 3), np.uint8))
    report = predictor.load(checkpoint, "cpu").predict_files([tmp_path / f"{n}.png" for n in "abc"], tmp_path / "out", alpha=0.3)
    assert report.images == 3 and calls == [0.3]


def test_folder_images_are_decoded_and_written_on_threads_beside_the_network(tmp_path, monkeypatch):
    """Decoding and writing run on threads of their own, so that the network (a GPU) does not wait for them; the
    outputs and the count are those of the plain loop."""
    import threading

    from segrefine.engine import predict_files as job

    for i in range(5):
        cv2.imwrite(str(tmp_path / f"in{i}.png"), np.full((8, 12, 3), 40 * i, np.uint8))
    threads = {"read": set(), "write": set(), "predict": set()}
    read, write = job.read_image, job.write_image

    def recorded(kind, function):
        def call(*args, **kwargs):
            threads[kind].add(threading.current_thread().name)
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(job, "read_image", recorded("read", read))
    monkeypatch.setattr(job, "write_image", recorded("write", write))

    class Fake:
        batch_size, palette = 2, [(0, 0, 0), (255, 255, 255)]

        def predict_batch(self, images, batch_size=None):
            threads["predict"].add(threading.current_thread().name)
            return [(image[..., 0] > 100).astype(np.uint8) for image in images]

        def colorize(self, label):
            return np.asarray(self.palette, np.uint8)[label]

    report = job.predict_files(Fake(), tmp_path, tmp_path / "out", save=("label",))
    assert report.images == 5 and not report.failed and len(report.written) == 5
    assert cv2.imread(str(tmp_path / "out" / "in4_label.png"), cv2.IMREAD_UNCHANGED).max() == 1
    assert threads["predict"] == {threading.main_thread().name}
    assert all(name.startswith("segrefine-read") for name in threads["read"])
    assert threads["write"] and all(name.startswith("segrefine-write") for name in threads["write"])


def test_a_file_name_with_a_line_break_keeps_its_message_on_one_line(tmp_path):
    from segrefine.engine.predict_files import predict_files

    (tmp_path / "bad\nname.png").write_bytes(b"not an image")
    messages = []
    report = predict_files(lambda: None, tmp_path / "bad\nname.png", tmp_path / "out", on_message=messages.append)
    assert len(report.failed) == 1 and len(messages) == 1 and "\n" not in messages[0] and "bad\\nname.png" in messages[0]
