"""The embedded default model: its registry entry, its files in the package, and its use with no --weights."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import pytest

import segrefine.hub.reference as reference
from segrefine.data import dataset_meta
from segrefine.engine.predictor import load
from segrefine.errors import SegrefineError
from segrefine.hub import DEFAULT_TASK, default_model, default_weights, load_registry, resolve
from segrefine.hub.registry import ZOO_FILE, ZOO_PACKAGE, embedded_path, validate_registry

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "camvid-street.png"
CAMVID = dataset_meta("camvid")


@pytest.fixture(scope="module")
def entry():
    return default_model()


def test_the_default_is_the_embedded_camvid_model(entry):
    assert entry.name == "lite-camvid" and entry.embedded == "lite-camvid"
    assert {DEFAULT_TASK, "camvid"} <= set(entry.default_for)
    assert entry.classes == CAMVID.classes and entry.num_classes == 11 and entry.variant == "lite"
    assert default_model("camvid") == entry == default_model("cityscapes")  # no cityscapes model: the general default


def test_registered_sha256_matches_the_shipped_file(entry):
    path = embedded_path(entry)
    assert path == REPO / "weights" / "lite-camvid" / "model.safetensors" or path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256


def test_the_files_are_package_data():
    """pyproject's package data for segrefine.weights covers every file of the registry's embedded entries."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert project["package-dir"][ZOO_PACKAGE] == "weights" and ZOO_PACKAGE in project["packages"]
    patterns = project["package-data"][ZOO_PACKAGE]
    zoo = json.loads((REPO / "weights" / ZOO_FILE).read_text())
    shipped = [ZOO_FILE] + [
        f"{m['embedded']}/{name}" for m in zoo["models"] if m.get("embedded") for name in (m["file"], "config.json", "README.md")
    ]
    for name in shipped:
        assert (REPO / "weights" / name).is_file(), name
        assert any(fnmatch(name, p) for p in patterns), f"{name} is not in the package data"
        assert files(ZOO_PACKAGE).joinpath(name).is_file(), f"{name} is not installed"


def test_card_config_and_registry_agree(entry):
    folder = REPO / "weights" / "lite-camvid"
    config = json.loads((folder / "config.json").read_text())
    assert config["classes"] == list(CAMVID.classes) and config["model"]["num_classes"] == 11
    for key in ("mIoU", "boundary_mIoU"):
        assert entry.metrics[key] == pytest.approx(config["metrics"][key], abs=1e-4)
    card = (folder / "README.md").read_text()
    assert "cc-by-nc-4.0" in card and "CC BY-NC 4.0" in card
    assert f"{100 * config['metrics']['mIoU']:.2f}" in card
    stages = [stage["command"].split() for stage in config["provenance"]["stages"]]
    assert stages[0][:6] == ["segrefine", "train", "--dataset", "camvid", "--recipe", "camvid-cpu"]
    assert "--init-weights" not in stages[0]
    for before, after in zip(stages, stages[1:]):  # each stage starts from the run the one before wrote
        assert after[after.index("--init-weights") + 1] == before[before.index("--out") + 1]
    if any(stage["train_split"] != "train" for stage in config["provenance"]["stages"]):
        assert config["metrics"]["held_out"] is False and entry.metrics["held_out"] is False
        assert "CamVid val is not held out for this model" in card and "frames it trained on" in card
        assert f"{100 * config['provenance']['held_out_twin']['camvid_val']['mIoU']:.1f}%" in card
    for name, scores in config["metrics"]["per_class"].items():
        assert f"| {name} | {100 * scores['iou']:.2f} |" in card


def test_resolves_offline_without_the_network(entry, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the embedded model must not touch the Hub")

    monkeypatch.setattr(reference, "hf_hub_download", no_network)
    resolved = resolve("lite-camvid")
    assert resolved.weights_path == embedded_path(entry)


def test_a_corrupt_embedded_file_is_refused(entry, tmp_path, monkeypatch):
    copy = tmp_path / "lite-camvid"
    shutil.copytree(embedded_path(entry).parent, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(reference, "embedded_path", lambda e: copy / e.file)
    with pytest.raises(SegrefineError, match="sha256 of .* does not match registry entry lite-camvid"):
        resolve("lite-camvid")


def test_load_without_reference_uses_and_names_it():
    predictor = load(device="cpu")
    assert predictor.classes == CAMVID.classes
    assert predictor.source == "model lite-camvid: lite, trained on camvid, 11 classes"
    image = cv2.cvtColor(cv2.imread(str(EXAMPLE)), cv2.COLOR_BGR2RGB)[::4, ::4]  # 90×120: a quick forward pass
    label = predictor.predict(np.ascontiguousarray(image))
    assert label.shape == image.shape[:2] and label.max() < 11


def test_an_empty_registry_never_falls_back_to_random_weights():
    empty = validate_registry({"schema_version": 1, "models": [], "backbones": []}, "test")
    with pytest.raises(SegrefineError, match="holds no trained segrefine checkpoint.*pass it as weights"):
        default_weights(DEFAULT_TASK, empty)


def test_registry_embedded_entry_rules():
    entry = {
        "name": "x", "variant": "lite", "dataset": "toy", "num_classes": 1, "classes": ["a"], "repo": "",
        "revision": "", "file": "model.safetensors", "sha256": "0" * 64, "metrics": {},
    }  # fmt: skip
    with pytest.raises(SegrefineError, match="repo must be a Hub repo id .*empty only for an embedded"):
        validate_registry({"schema_version": 1, "models": [entry], "backbones": []}, "zoo.json")
    registry = validate_registry({"schema_version": 1, "models": [{**entry, "embedded": "x"}], "backbones": []}, "z")
    assert registry.model("x").embedded == "x" and registry.model("x").repo == ""
    assert load_registry().model("lite-camvid") is not None


def test_eval_without_weights_on_other_classes_asks_for_weights(cli):
    result = cli("eval", "--dataset", "toy", "--dataset-option", "length=2", "--dataset-option", "size=64x64")
    err = result.stderr
    assert result.returncode == 2 and err.count("\n") == 1
    assert "lite-camvid" in err and "11 classes" in err and "toy has 9" in err and "--weights" in err


def test_eval_without_weights_on_camvid_names_the_model(tmp_path, cli):
    for split in ("val", "valannot"):
        (tmp_path / split).mkdir()
    image = cv2.imread(str(EXAMPLE))[::4, ::4]
    cv2.imwrite(str(tmp_path / "val" / "a.png"), image)
    cv2.imwrite(str(tmp_path / "valannot" / "a.png"), np.full(image.shape[:2], 3, np.uint8))
    captured = cli("eval", "--dataset", "camvid", "--data-root", tmp_path, "--json", "--workers", "0", "--device", "cpu")
    assert captured.returncode == 0
    report = json.loads(captured.stdout)
    assert report["weights"] == "lite-camvid" and report["num_images"] == 1
    assert "model lite-camvid: lite, trained on camvid, 11 classes" in captured.stderr


def test_predict_example_works_in_an_empty_folder_and_the_photo_is_package_data(cli, tmp_path):
    """`segrefine predict --example` needs no repository checkout: the photo is package data."""
    import segrefine

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "segrefine.example" in project["packages"]
    assert segrefine.EXAMPLE_IMAGE.name in project["package-data"]["segrefine.example"]
    result = cli("predict", "--example", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = Path("runs", "predict")
    written = [out / f"camvid-street_{kind}.png" for kind in ("label", "color", "overlay")]
    assert sorted(p.name for p in (tmp_path / out).iterdir()) == sorted(p.name for p in written)
    assert result.stdout.splitlines()[-1] == f"the example photo {segrefine.EXAMPLE_IMAGE} gave {', '.join(map(str, written))}"
    nothing = cli("predict", cwd=tmp_path)
    assert nothing.returncode == 2 and nothing.stderr == (
        "segrefine: error: give images, folders, globs or videos to segment, or --example for the shipped photo\n"
    )


def test_predict_the_example_in_an_empty_folder_offline(tmp_path):
    """The README's first command, through the real entry point, with the Hub offline."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "segrefine", "predict", str(EXAMPLE)], capture_output=True, text=True, cwd=tmp_path,
        env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "model lite-camvid: lite, trained on camvid, 11 classes" in result.stderr
    out = tmp_path / "runs" / "predict"
    written = sorted(p.name for p in out.iterdir())
    assert written == ["camvid-street_color.png", "camvid-street_label.png", "camvid-street_overlay.png"]
    for name in written:
        assert cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED).shape[:2] == (360, 480)
    assert cv2.imread(str(out / "camvid-street_label.png"), cv2.IMREAD_UNCHANGED).max() < 11


def test_the_shipped_model_labels_another_cameras_street_as_road_and_sky(shared_data):
    """A Cityscapes photo (another camera than CamVid's): its asphalt and its sky, as a new user's first predict."""
    predictor = load(device="cpu")
    label = predictor.predict(shared_data / "images" / "street-cityscapes-512x1024.png")
    road, sky = predictor.classes.index("Road"), predictor.classes.index("Sky")
    assert (label[300:430, 200:800] == road).mean() >= 0.9  # CamVid's camera alone learnt it as Tree: 0%
    # The band is crossed by a traffic-light arm (Pole), which the network's own labels draw one label-grid cell too
    # thick (0.888 Sky); the guided filter trims it to the arm's edges (0.925).
    assert (label[0:60, 480:640] == sky).mean() >= 0.9


def test_the_card_gives_other_cameras_beside_camvid_val(entry):
    config = json.loads((REPO / "weights" / "lite-camvid" / "config.json").read_text())
    cameras = config["provenance"]["cross_camera"]
    assert {"kitti-mini", "cityscapes-mini", "street-photo"} <= set(cameras)
    card = (REPO / "weights" / "lite-camvid" / "README.md").read_text()
    assert f"{100 * cameras['kitti-mini']['mIoU']:.2f}" in card and "## Other cameras" in card
