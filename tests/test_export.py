"""`segrefine export` and ONNX weights: fp32 and int8 round trips, .onnx in predict and eval, one-line bad input."""

import json
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch

import segrefine

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from segrefine.cli import main  # noqa: E402
from segrefine.engine.backends import bf16_problem, cache_folder, export_key, for_inference  # noqa: E402
from segrefine.data import build_dataset, dataset_meta  # noqa: E402
from segrefine.engine.export import (
    FP32_AGREEMENT, CalibrationImages, check_export_options, check_image, export, export_model, quantize_int8,
)  # fmt: skip  # noqa: E402
from segrefine.engine.inference import InferenceOptions, at_model_scale  # noqa: E402
from segrefine.errors import SegrefineError, SettingError  # noqa: E402
from segrefine.hub import build_model, load_model, save_checkpoint  # noqa: E402
from segrefine.hub.onnx import load_onnx  # noqa: E402
from segrefine.models import ModelConfig  # noqa: E402


TOY = dataset_meta("toy")
TOY_DATA = ["--dataset-option", "size=64x96", "--dataset-option", "length=2"]
TOY_EVAL = ["eval", "--dataset", "toy", *TOY_DATA, "--workers", "0", "--json"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(variant="lite", num_classes=TOY.num_classes)
    with torch.no_grad():  # trained-looking: an untrained SRM and CRM would hide size-dependent offsets and attention
        for name, parameter in model.named_parameters():
            if name.endswith(("offset.weight", "gamma")):
                parameter.normal_(std=0.05 if name.endswith("weight") else 0.5)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt"), dataset="toy", classes=TOY.classes, palette=TOY.palette)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The checkpoint exported for any input size (fp32)."""
    model, config = load_model(checkpoint)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export_model(model, config, path)
    assert report.agreement >= FP32_AGREEMENT and report.size is None
    return path


def run(capsys, argv):
    """(exit code, stdout, stderr) of one in-process command."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(argv)
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def fails(capsys, argv) -> str:
    """The one stderr line of a command that must exit 2."""
    code, out, err = run(capsys, argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def error_line(capsys, argv) -> str:
    """The error line of a command that must exit 2, after any line announcing the model."""
    code, out, err = run(capsys, argv)
    assert code == 2 and "Traceback" not in err, err
    assert len(err.splitlines()) <= 2 and err.splitlines()[-1].startswith("segrefine: error:")
    return err.splitlines()[-1]


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


def test_fp32_round_trip_takes_any_size_and_carries_the_classes(checkpoint, exported):
    model, config = load_model(checkpoint)
    onnx_model, onnx_config = load_onnx(exported)
    assert onnx_config["classes"] == config["classes"] and onnx_config["palette"] == config["palette"]
    assert onnx_model.config == model.config and onnx_model.size is None
    with torch.inference_mode():
        for size in ((64, 96), (72, 100)):  # 72×100: not a multiple of the output stride
            image = check_image(size).repeat(2, 1, 1, 1)
            assert agreement(onnx_model(image), model(image)) >= FP32_AGREEMENT


def test_int8_export_through_the_cli(capsys, small_checkpoint, tmp_path):
    out = tmp_path / "model.int8.onnx"
    code, stdout, _ = run(capsys, [
        "export", "--weights", str(small_checkpoint), "--out", str(out), "--size", "64x96", "--quantize", "int8",
        "--calibration", "toy", *TOY_DATA, "--calibration-images", "2",
    ])  # fmt: skip
    assert code == 0 and stdout.startswith(f"wrote {out} (onnx, int8, 64x96)")
    model, config = load_onnx(out)
    assert model.size == (64, 96) and config["classes"] == list(TOY.classes)
    # Its inputs are not brought to a training side: the export's own size was chosen for it.
    assert at_model_scale(InferenceOptions(), {**config, "dataset": "camvid"}, model).short_side == 0
    labels = model(check_image((64, 96))).argmax(1)
    assert labels.shape == (1, 64, 96) and 0 <= labels.min() and labels.max() < TOY.num_classes


def test_int8_quantizes_the_whole_network_with_its_refinement_modules(checkpoint, exported, tmp_path):
    # The module's fp32 export of lite (SRM warps, CRM attention), quantized as `export --quantize int8` does after
    # its export: every op of the network must go through onnxruntime's quantizer and run.
    out = tmp_path / "lite.int8.onnx"
    images = CalibrationImages(build_dataset("toy", None, "val", size=(64, 96), length=2), count=2)
    assert quantize_int8(exported, out, images) == 0  # no module is kept float by default
    model, config = load_onnx(out)
    assert config["classes"] == list(TOY.classes)
    reference, _ = load_model(checkpoint)
    image = check_image((64, 96))
    with torch.no_grad():
        expected = reference(image)
    quantized = model(image)
    assert quantized.shape == expected.shape and agreement(quantized, expected) >= 0.95  # 0.989 when written
    other = check_image((80, 160))  # calibrated at one size, it still samples right at others
    with torch.no_grad():
        assert agreement(model(other), reference(other)) >= 0.95


def test_predict_with_onnx_weights_gives_pytorchs_labels(capsys, checkpoint, exported, tmp_path):
    scene = build_dataset("toy", None, "val", size=(64, 96), length=1)[0]["image"].permute(1, 2, 0).numpy()
    cv2.imwrite(str(tmp_path / "scene.png"), cv2.cvtColor(scene, cv2.COLOR_RGB2BGR))
    labels = {}
    for name, weights in (("torch", checkpoint), ("onnx", exported)):
        code, _, err = run(capsys, ["predict", str(tmp_path / "scene.png"), "--weights", str(weights),
                                    "--out", str(tmp_path / name), "--save", "label"])  # fmt: skip
        assert code == 0, err
        labels[name] = cv2.imread(str(tmp_path / name / "scene_label.png"), cv2.IMREAD_UNCHANGED)
    assert (labels["torch"] == labels["onnx"]).mean() >= FP32_AGREEMENT


def test_eval_with_onnx_weights_and_with_the_onnxruntime_backend(capsys, checkpoint, exported):
    # The backend's export of this checkpoint is the module's `exported` file: put it where the backend's cache
    # looks, so that this test does not export lite a second time (the cache's miss is tested with a tiny model).
    model, _ = load_model(checkpoint)
    cached = cache_folder() / "onnx" / f"{export_key(model)}.onnx"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(exported, cached)
    scores = {}
    for name, extra in (("torch", ["--weights", str(checkpoint)]), ("onnx", ["--weights", str(exported)]),
                        ("backend", ["--weights", str(checkpoint), "--backend", "onnxruntime"])):  # fmt: skip
        code, out, err = run(capsys, [*TOY_EVAL, *extra])
        assert code == 0, err
        scores[name] = json.loads(out)["mIoU"]
    assert scores["onnx"] == pytest.approx(scores["torch"], abs=1e-3)
    assert scores["backend"] == pytest.approx(scores["onnx"], abs=1e-6)
    assert list(cached.parent.iterdir()) == [cached]  # served from the cache


class Tiny(torch.nn.Module):
    """A one-convolution network with a segrefine config: an export of seconds, not minutes."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ModelConfig(num_classes=3)
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_the_onnxruntime_backend_exports_once_per_weights(tmp_path, monkeypatch):
    import segrefine.engine.export as export_module

    monkeypatch.setenv("SEGREFINE_CACHE", str(tmp_path / "cache"))
    model, exports = Tiny(), []
    real = export_module.to_onnx
    monkeypatch.setattr(export_module, "to_onnx", lambda *args, **kw: exports.append(1) or real(*args, **kw))
    image = torch.rand(1, 3, 32, 48)
    first = for_inference(model, torch.device("cpu"), backend="onnxruntime")
    assert len(exports) == 1 and [p.suffix for p in (tmp_path / "cache" / "onnx").iterdir()] == [".onnx"]
    second = for_inference(model, torch.device("cpu"), backend="onnxruntime")
    assert len(exports) == 1 and torch.equal(first(image), second(image))
    with torch.no_grad():
        model.conv.bias += 1  # other weights: another export
    for_inference(model, torch.device("cpu"), backend="onnxruntime")
    assert len(exports) == 2 and len(list((tmp_path / "cache" / "onnx").iterdir())) == 2


def test_export_shows_its_steps_on_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich takes stderr for a terminal
    model = Tiny()
    report = export_model(model, {"model": model.config.to_dict()}, tmp_path / "tiny.onnx", progress=True)
    err = capsys.readouterr().err
    assert report.agreement == 1.0
    assert "exporting the network to ONNX" in err and "checking the export's labels on onnxruntime" in err


@pytest.fixture
def photos(tmp_path):
    """A folder of two images of different sizes (one in a sub-folder) and a file that is no image."""
    folder = tmp_path / "photos"
    (folder / "day").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, (40, 60, 3), np.uint8))
    cv2.imwrite(str(folder / "day" / "b.jpg"), rng.integers(0, 256, (90, 50, 3), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_int8_calibrates_on_any_folder_of_images(photos, tmp_path):
    model = Tiny()
    out = tmp_path / "tiny.int8.onnx"
    report = export_model(model, {"model": model.config.to_dict()}, out, quantize="int8", calibration=photos)
    assert report.quantized_agreement is not None and out.is_file()
    assert load_onnx(out)[0].size is None  # calibrated at one size, still takes any
    one = export_model(model, {"model": model.config.to_dict()}, out, quantize="int8", calibration=photos,
                       keep_float="conv", overwrite=True)  # one pattern, not its letters
    assert one.float_nodes > 0


def test_a_calibration_folder_without_images_is_one_line(capsys, checkpoint, photos, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["export", "--weights", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--quantize", "int8"]
    assert fails(capsys, [*args, "--calibration", str(empty)]) == (
        f"segrefine: error: --calibration folder {empty} holds no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp)\n"
    )
    for path, what in ((tmp_path / "none", "does not exist"), (photos / "a.png", "is a file")):
        assert fails(capsys, [*args, "--calibration", str(path)]).startswith(f"segrefine: error: --calibration {path} {what}")
    assert "--data-root and --dataset-option are for a calibration dataset" in fails(
        capsys, [*args, "--calibration", str(photos), "--data-root", str(tmp_path)]
    )
    assert not (tmp_path / "m.onnx").exists()


def test_a_fixed_size_onnx_skips_other_sizes_and_does_the_rest(capsys, tmp_path):
    model = Tiny()
    weights = tmp_path / "tiny.onnx"
    export_model(model, {"model": model.config.to_dict()}, weights, size=(64, 96))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, size in (("a", (64, 64)), ("b", (64, 96)), ("c", (80, 96))):
        cv2.imwrite(str(folder / f"{name}.png"), np.zeros((*size, 3), np.uint8))
    out = tmp_path / "predicted"
    code, stdout, err = run(capsys, ["predict", str(folder), "--weights", str(weights), "--out", str(out), "--save", "label"])
    assert code == 1 and "predicted 1 image" in stdout and "2 failed" in stdout and "Traceback" not in err
    assert (f"segrefine: skipped: {folder}/a.png: {weights} was exported for 64×96 images (H×W) and cannot take 64×64: "
            "export it for this size, or with dynamic sizes") in err.splitlines()  # fmt: skip
    assert [p.name for p in out.iterdir()] == ["b_label.png"]


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGREFINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "segrefine"
    monkeypatch.setenv("SEGREFINE_CACHE", str(tmp_path / "own"))
    assert cache_folder() == tmp_path / "own"


def test_predict_names_the_backend(capsys, checkpoint, exported, tmp_path):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), np.zeros((64, 96, 3), np.uint8))
    for backend, weights in (("torch", checkpoint), ("onnxruntime", exported)):
        code, out, err = run(capsys, ["predict", str(image), "--weights", str(weights), "--out", str(tmp_path / backend)])
        assert code == 0 and f"lite on cpu, {backend})" in out, err


def test_bf16_autocast_evaluates(capsys, checkpoint):
    if bf16_problem(torch.device("cpu")):
        pytest.skip("this CPU has no bf16")
    code, out, err = run(capsys, [*TOY_EVAL, "--weights", str(checkpoint), "--precision", "bf16"])
    assert code == 0, err
    assert 0 <= json.loads(out)["mIoU"] <= 1


@pytest.mark.parametrize("args, flag", [
    (["--format", "tflite"], "--format"),
    (["--size", "16x64"], "--size"),
    (["--size", "64x96", "--dynamic"], "--dynamic"),
    (["--quantize", "int8"], "--calibration"),
    (["--calibration", "toy"], "--quantize"),
    (["--quantize", "int4", "--calibration", "toy"], "--quantize"),
])  # fmt: skip
def test_bad_export_options_are_one_line_and_write_nothing(capsys, checkpoint, tmp_path, args, flag):
    out = tmp_path / "model.onnx"
    assert flag in fails(capsys, ["export", "--weights", str(checkpoint), "--out", str(out), *args])
    assert list(tmp_path.iterdir()) == []


def test_out_must_be_an_onnx_file(capsys, checkpoint, tmp_path):
    assert "--out" in fails(capsys, ["export", "--weights", str(checkpoint), "--out", str(tmp_path / "model.pt")])
    assert list(tmp_path.iterdir()) == []


def test_an_existing_out_file_is_kept_unless_overwrite(capsys, checkpoint, tmp_path):
    precious = tmp_path / "precious.onnx"
    precious.write_text("keep me")
    line = fails(capsys, ["export", "--weights", str(checkpoint), "--out", str(precious)])
    assert line == (f"segrefine: error: --out {precious} already exists: replace it with --overwrite, or choose another "
                    "--out\n")  # fmt: skip
    assert precious.read_text() == "keep me" and list(tmp_path.iterdir()) == [precious]
    check_export_options(precious, None, None, None, 1, overwrite=True)  # what --overwrite lets through


def test_an_unwritable_out_folder_is_refused_before_any_work(capsys, checkpoint, tmp_path):
    (tmp_path / "file").write_text("")
    line = fails(capsys, ["export", "--weights", str(checkpoint), "--out", str(tmp_path / "file" / "m.onnx")])
    assert f"--out {tmp_path}/file/m.onnx cannot be written: {tmp_path}/file is a file, not a folder" in line


def test_library_errors_name_the_parameters(checkpoint, tmp_path):
    model, config = load_model(checkpoint)
    with pytest.raises(SettingError, match="^size 20x64") as error:
        export_model(model, config, tmp_path / "m.onnx", size=(20, 64))
    assert error.value.settings == ["size"]
    with pytest.raises(SettingError, match=r"^size must be \(height, width\) in whole pixels, got \(64, 64, 64\)"):
        export_model(model, config, tmp_path / "m.onnx", size=(64, 64, 64))


def test_onnx_weights_errors_are_one_line(capsys, exported, tmp_path):
    scene = tmp_path / "scene.png"
    cv2.imwrite(str(scene), np.zeros((64, 64, 3), np.uint8))
    out = ["--out", str(tmp_path / "out")]
    assert "--backend torch" in fails(capsys, ["predict", str(scene), "--weights", str(exported), "--backend", "torch", *out])
    assert "--precision bf16" in fails(capsys, ["predict", str(scene), "--weights", str(exported), "--precision", "bf16", *out])
    assert fails(capsys, ["predict", str(scene), "--weights", str(exported), "--compile", *out]) == (
        "segrefine: error: --compile applies to the torch --backend only (onnxruntime optimises its own graph)\n"
    )
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert "not an ONNX model" in fails(capsys, ["predict", str(scene), "--weights", str(broken), *out])
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((20, 64, 3), np.uint8))
    code, _, err = run(capsys, ["predict", str(tiny), str(scene), "--weights", str(exported), "--short-side", "0", *out])
    assert code == 1 and "Traceback" not in err  # one input skipped, the other done
    assert f"segrefine: skipped: {tiny}: {exported} takes images of at least 32×32 pixels, got 20×64" in err.splitlines()
    assert not (tmp_path / "out" / "tiny_label.png").exists() and (tmp_path / "out" / "scene_label.png").exists()


def test_missing_onnxruntime_is_one_line(capsys, checkpoint, exported, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    scene = tmp_path / "scene.png"
    cv2.imwrite(str(scene), np.zeros((64, 64, 3), np.uint8))
    err = fails(capsys, ["predict", str(scene), "--weights", str(exported), "--out", str(tmp_path / "out")])
    assert "onnxruntime is not installed: pip install 'segrefine[onnx]'" in err
    err = error_line(capsys, [*TOY_EVAL, "--weights", str(checkpoint), "--backend", "onnxruntime"])
    assert "onnxruntime is not installed" in err


# --- the library call: segrefine.export(weights, out, ...) --------------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A random `lite` without SRM offsets, CRM or auxiliary head: an export of seconds."""
    torch.manual_seed(0)
    model = build_model(variant="lite", num_classes=TOY.num_classes, srm="bilinear", crm="off", aux=False)
    return save_checkpoint(model, tmp_path_factory.mktemp("small"), dataset="toy", classes=TOY.classes, palette=TOY.palette)


def test_the_library_exports_a_weights_reference_calibrated_on_a_dataset(small_checkpoint, tmp_path):
    out, messages = tmp_path / "small.int8.onnx", []
    report = segrefine.export(
        str(small_checkpoint), out, size=(64, 96), quantize="int8", calibration="toy", calibration_images=2,
        dataset_options={"size": (64, 96), "length": 2}, on_message=messages.append,
    )  # fmt: skip
    assert messages == [f"model {small_checkpoint}: lite, trained on toy, {TOY.num_classes} classes"]
    assert (report.path, report.size, report.quantize) == (out, (64, 96), "int8")
    assert report.agreement >= FP32_AGREEMENT and report.quantized_agreement is not None
    onnx_model, config = load_onnx(out)
    model, _ = load_model(small_checkpoint)
    assert onnx_model.config == model.config and onnx_model.size == (64, 96) and config["classes"] == list(TOY.classes)


def test_the_library_loads_the_weights_and_builds_the_named_split(small_checkpoint, tmp_path, monkeypatch):
    import segrefine.engine.export as export_module

    calls = []
    monkeypatch.setattr(export_module, "export_model", lambda *args, **settings: calls.append((args, settings)))
    export(small_checkpoint, tmp_path / "m.onnx", quantize="int8", calibration="toy", calibration_split="val",
           dataset_options={"size": (32, 32), "length": 3}, calibration_images=2, overwrite=True)  # fmt: skip
    ((model, config, out), settings), = calls
    expected, _ = load_model(small_checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))
    assert config["classes"] == list(TOY.classes) and out == tmp_path / "m.onnx"
    images = settings["calibration"]
    assert len(images) == 3 and images[2]["name"] == "toy_val_000002" and tuple(images[2]["image"].shape) == (3, 32, 32)
    assert (settings["calibration_images"], settings["overwrite"], settings["progress"]) == (2, True, False)


def test_the_library_checks_everything_before_loading_the_weights(photos, tmp_path):
    never = "never/loaded"  # loading it would fail with another error
    cases = [
        (dict(weights=tmp_path / "m.onnx"), "^weights .*m.onnx is already an ONNX file", ["weights"]),
        (dict(out=tmp_path / "m.pt"), "^out must name a .onnx file", ["out"]),
        (dict(calibration=photos, data_root=tmp_path), "^data_root and dataset_options are for a calibration dataset",
         ["data_root", "dataset_options"]),
        (dict(calibration=str(photos)), "^calibration images are used only with quantize", ["calibration", "quantize"]),
    ]  # fmt: skip
    for given, message, settings in cases:
        arguments = {"weights": never, "out": tmp_path / "m.onnx", **given}
        with pytest.raises(SettingError, match=message) as error:
            export(arguments.pop("weights"), arguments.pop("out"), **arguments)
        assert error.value.settings == settings
    with pytest.raises(SegrefineError, match="unknown dataset 'no-such-dataset'"):
        export(never, tmp_path / "m.onnx", quantize="int8", calibration="no-such-dataset")
    assert list(tmp_path.iterdir()) == [photos]


def test_the_library_refuses_a_calibration_dataset_of_other_classes(small_checkpoint, tmp_path):
    root = tmp_path / "two-classes"  # a `folder` dataset whose classes are not the checkpoint's
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("ground\nthing\n")
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(root / "masks" / "a.png"), np.zeros((32, 32), np.uint8))
    with pytest.raises(SegrefineError, match=f"trained for {TOY.num_classes} classes but dataset folder has 2"):
        export(small_checkpoint, tmp_path / "m.onnx", quantize="int8", calibration="folder", data_root=root)
    assert not (tmp_path / "m.onnx").exists()


def test_an_onnxruntime_failure_on_one_input_is_one_skippable_line():
    from types import SimpleNamespace

    from segrefine.hub.onnx import OnnxModel
    from segrefine.imageio import UnreadableInput

    def fails(outputs, feeds):
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :\n invalid expand shape")

    runner = SimpleNamespace(get_inputs=lambda: [SimpleNamespace(shape=[1, 3, "height", "width"])], run=fails)
    model = OnnxModel(runner, ModelConfig(num_classes=3), name="m.onnx")
    with pytest.raises(UnreadableInput) as caught:
        model(torch.zeros(1, 3, 40, 64))
    assert str(caught.value) == (
        "onnxruntime cannot run m.onnx on a 40×64 image: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : invalid expand shape"
    )
