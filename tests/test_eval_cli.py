"""`segrefine eval` through the real entry point: --json output, saved predictions, one-line errors."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from segrefine.data import dataset_meta
from segrefine.hub import save_checkpoint

TOY = dataset_meta("toy")
TOY_OPTIONS = ["--dataset", "toy", "--dataset-option", "length=2", "--dataset-option", "size=64x96", "--workers", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from segrefine import build_model

    torch.manual_seed(0)
    model = build_model(variant="lite", num_classes=TOY.num_classes)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt"), dataset="toy", classes=TOY.classes, palette=TOY.palette)



def _json(result):
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # exactly one JSON object, nothing else on stdout
    return json.loads(result.stdout)


def test_json_and_saved_predictions_round_trip(cli, checkpoint, tmp_path):
    preds = tmp_path / "preds"
    report = _json(cli("eval", *TOY_OPTIONS, "--weights", str(checkpoint), "--json", "--save-predictions", str(preds)))
    for key in ("mIoU", "mAcc", "aAcc", "fwIoU", "boundary_mIoU"):
        assert isinstance(report[key], float) and 0 <= report[key] <= 1
    assert list(report["per_class"]) == list(TOY.classes)
    for scores in report["per_class"].values():
        assert set(scores) >= {"iou", "acc"}
        assert all(v is None or 0 <= v <= 1 for v in scores.values())
    assert report["num_images"] == 2 and report["mode"] == "whole" and report["unit"] == "fraction"
    assert sorted(p.name for p in preds.iterdir()) == ["toy_val_000000.png", "toy_val_000001.png"]

    again = _json(cli("eval", *TOY_OPTIONS, "--predictions", str(preds), "--json"))
    assert again["mode"] == "predictions" and again["num_images"] == 2
    for key in ("mIoU", "mAcc", "aAcc", "fwIoU", "boundary_mIoU", "per_class"):
        assert again[key] == report[key]


def test_bad_scales_is_one_line_and_exit_2(cli):
    result = cli("eval", *TOY_OPTIONS, "--weights", "unused", "--scales", "0.5,-1")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--scales" in result.stderr and "Traceback" not in result.stderr


def _fails(argv, cli) -> str:
    """Run the command in this process; it must exit 2 with one stderr line, which is returned."""
    captured = cli(*argv)
    assert captured.returncode == 2, captured.stderr
    assert captured.stdout == "" and captured.stderr.count("\n") == 1
    return captured.stderr


def _one_image_folder(root, classes):
    """A `folder` dataset of one black 32×32 image labelled 0, with these class names."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    cv2.imwrite(str(root / "images/a.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(root / "masks/a.png"), np.zeros((32, 32), np.uint8))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    return root


def test_class_count_mismatch_names_both_numbers(checkpoint, tmp_path, cli):
    root = _one_image_folder(tmp_path / "data", ("bg", "fg", "other"))
    err = _fails(["eval", "--dataset", "folder", "--data-root", str(root), "--weights", str(checkpoint),
                  "--workers", "0"], cli)  # fmt: skip
    assert "trained for 9 classes" in err and "folder has 3 classes" in err


def test_other_class_names_are_scored_with_a_warning(checkpoint, tmp_path, cli):
    root = _one_image_folder(tmp_path / "data", [f"class{i}" for i in range(TOY.num_classes)])
    captured = cli("eval", "--dataset", "folder", "--data-root", root, "--weights", checkpoint, "--workers", "0", "--json")
    assert captured.returncode == 0 and json.loads(captured.stdout)["num_images"] == 1
    warning = next(line for line in captured.stderr.splitlines() if "warning" in line)
    assert "class names differ" in warning and "0: road vs class0" in warning and "using them anyway" in warning


def test_a_checkpoint_that_does_not_load_names_the_keys(checkpoint, tmp_path, cli):
    state = load_file(str(checkpoint / "model.safetensors"))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(tmp_path / "model.safetensors"))
    shutil.copy(checkpoint / "config.json", tmp_path / "config.json")
    err = _fails(["eval", *TOY_OPTIONS, "--weights", str(tmp_path)], cli)
    assert "missing keys" in err and dropped in err


def test_missing_predictions_list_the_stems(tmp_path, cli):
    cv2.imwrite(str(tmp_path / "toy_val_000001.png"), np.zeros((64, 96), np.uint8))
    err = _fails(["eval", *TOY_OPTIONS, "--predictions", str(tmp_path)], cli)
    assert "1 of 2 images have no prediction" in err and "toy_val_000000" in err


@pytest.mark.parametrize(
    "args, match",
    [
        (["--weights", "w", "--predictions", "p"], "either --weights"),
        ([], "pass --weights with a model trained on toy"),  # the default model has CamVid's 11 classes
        (["--weights", "w", "--mode", "slide"], "--mode slide needs --crop"),
        (["--weights", "w", "--crop", "32x32"], "only with --mode slide"),
        (["--weights", "w", "--mode", "slide", "--crop", "0x32"], "--crop must be HxW"),
        (["--predictions", "p", "--flip"], "apply only with --weights"),
        (["--weights", "w", "--device", "tpu"], "--device must be"),
        (["--weights", "w", "--dataset-option", "colour=red"], "has no option colour"),
        (["--weights", "w", "--batch-size", "0"], "--batch-size"),
        (["--weights", "w", "--short-side", "-1"], "--short-side must be 0 (each image at its own size)"),
    ],
)
def test_bad_options_are_one_line(args, match, cli):
    assert match in _fails(["eval", *TOY_OPTIONS, *args], cli)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(cli):
    assert "CUDA is not available" in _fails(["eval", *TOY_OPTIONS, "--weights", "w", "--device", "cuda"], cli)


def test_slide_with_a_crop_larger_than_the_image_works(checkpoint, cli):
    result = cli("eval", *TOY_OPTIONS, "--weights", checkpoint, "--mode", "slide", "--crop", "512x1024", "--json",
                 "--limit", "1")  # fmt: skip
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["mode"] == "slide" and report["crop"] == [512, 1024] and report["num_images"] == 1


def test_short_side_is_reported_and_runs_the_images_at_it(checkpoint, cli):
    native = _json(cli("eval", *TOY_OPTIONS, "--weights", checkpoint, "--json"))
    assert native["short_side"] is None  # toy images come in any size: each runs at its own
    same = _json(cli("eval", *TOY_OPTIONS, "--weights", checkpoint, "--json", "--short-side", "64"))
    assert same["short_side"] == 64 and same["mIoU"] == native["mIoU"]  # 64×96 already: nothing resampled
    halved = _json(cli("eval", *TOY_OPTIONS, "--weights", checkpoint, "--json", "--short-side", "32"))
    assert halved["short_side"] == 32 and halved["per_class"] != native["per_class"]


def test_the_guided_filter_is_reported_and_can_be_turned_off(checkpoint, cli):
    on = _json(cli("eval", *TOY_OPTIONS, "--weights", checkpoint, "--json"))
    off = cli("eval", *TOY_OPTIONS, "--weights", checkpoint, "--json", "--no-guided-filter")
    assert on["guided_filter"] is True and _json(off)["guided_filter"] is False
    assert _json(off)["per_class"] != on["per_class"]
    assert "whole, guided filter" in cli("eval", *TOY_OPTIONS, "--weights", checkpoint).stdout
    assert "guided filter" not in cli("eval", *TOY_OPTIONS, "--weights", checkpoint, "--no-guided-filter").stdout
