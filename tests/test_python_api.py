"""The public Python API: build_model, SegRefineModel's Hub-style save/load, evaluate, TrainConfig.from_recipe."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

import segrefine
from segrefine.data import dataset_meta
from segrefine.errors import SegrefineError, SettingError

TOY = dataset_meta("toy")
INFO = {"dataset": "toy", "classes": list(TOY.classes), "palette": [list(c) for c in TOY.palette]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A lite toy model saved with save_pretrained, with metrics for its card."""
    torch.manual_seed(0)
    model = segrefine.build_model("lite", TOY.num_classes, aux=False)
    model.info = {**INFO, "metrics": {"mIoU": 0.5, "boundary_mIoU": 0.25, "split": "val"}}
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    return model, folder


def test_build_model_takes_variant_and_classes_positionally():
    model = segrefine.build_model("lite", 5, srm="bilinear", memory=True)
    assert isinstance(model, torch.nn.Module) and isinstance(model, segrefine.SegRefineModel)
    config = model.config
    assert (config.variant, config.num_classes, config.srm, config.memory) == ("lite", 5, "bilinear", True)
    with pytest.raises(SegrefineError, match="unknown model switches: sr_mode"):
        segrefine.build_model("lite", 5, sr_mode="full")
    with pytest.raises(SegrefineError, match="variant must be one of"):
        segrefine.build_model("huge", 5)


def test_save_pretrained_writes_a_hub_model_folder(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == model.config.to_dict() and config["classes"] == INFO["classes"]
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "segrefine" and meta["pipeline_tag"] == "image-segmentation"
    results = meta["model-index"][0]["results"]
    assert results[0]["task"]["type"] == "image-segmentation"
    assert results[0]["dataset"]["split"] == "val"
    assert {"type": "mean_iou", "value": 50.0, "name": "mIoU"} in [
        {k: m[k] for k in ("type", "value", "name")} for r in results for m in r["metrics"]
    ]


def test_from_pretrained_and_weights_load_strictly(saved):
    model, folder = saved
    x = torch.randn(1, 3, 64, 64)
    loaded = segrefine.SegRefineModel.from_pretrained(folder)
    assert not loaded.training and loaded.info["dataset"] == "toy"
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    built = segrefine.build_model("lite", TOY.num_classes, weights=folder, aux=False).eval()
    with torch.no_grad():
        assert torch.equal(built(x), loaded(x))
    with pytest.raises(SegrefineError, match=r"do not fit the requested model: num_classes 4 \(weights: 9\)"):
        segrefine.build_model("lite", 4, weights=folder)
    with pytest.raises(SegrefineError, match="srm 'flow'"):
        segrefine.build_model("lite", TOY.num_classes, weights=folder, srm="flow")


def test_a_refused_save_pretrained_leaves_the_folder_as_it_was(saved, tmp_path):
    model, folder = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    unstorable = segrefine.build_model("lite", TOY.num_classes, aux=False)
    unstorable.info = {**INFO, "tags": {"a set"}}
    with pytest.raises(SegrefineError, match="class names and palette"):
        segrefine.build_model("lite", 2).save_pretrained(folder)
    with pytest.raises(SegrefineError, match="cannot store the model's info in config.json: .*set"):
        unstorable.save_pretrained(folder)
    with pytest.raises(SegrefineError, match="class names and palette"):
        segrefine.build_model("lite", 2).save_pretrained(tmp_path / "new")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before and not (tmp_path / "new").exists()


def test_evaluate_returns_fractions_and_names_python_parameters(saved):
    _, folder = saved
    report = segrefine.evaluate(folder, "toy", dataset_options={"length": 2, "size": (64, 64)}, device="cpu")
    assert 0.0 <= report["mIoU"] <= 1.0 and report["num_images"] == 2 and report["weights"] == str(folder)
    with pytest.raises(SettingError, match="^give either weights") as error:
        segrefine.evaluate(folder, "toy", predictions="somewhere")
    assert error.value.settings == ["weights", "predictions"]  # the CLI shows them as --weights and --predictions
    with pytest.raises(SettingError, match="^limit must be a whole number of at least 1, got 1.5$"):
        segrefine.evaluate(folder, "toy", limit=1.5)


def test_evaluate_refuses_to_overwrite_pngs_and_flips_with_the_models_pairs(tmp_path, monkeypatch):
    import segrefine.engine.evaluate as evaluate_module

    model = segrefine.build_model("lite", TOY.num_classes, aux=False)
    model.info = {**INFO, "flip_pairs": [[1, 2]]}  # pairs the model learnt; the toy dataset has none
    model.save_pretrained(tmp_path / "model")
    toy = {"dataset_options": {"length": 1, "size": (64, 64)}, "device": "cpu"}
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.png").write_bytes(b"a dataset's own label")
    with pytest.raises(SettingError, match="^save_predictions .*labels already holds PNG files"):
        segrefine.evaluate(tmp_path / "model", "toy", save_predictions=tmp_path / "labels", **toy)
    assert (tmp_path / "labels" / "x.png").read_bytes() == b"a dataset's own label"
    with pytest.raises(SettingError, match="^workers must be a whole number of at least 0, got -1$"):
        segrefine.evaluate(tmp_path / "model", "toy", workers=-1, **toy)
    seen, real = [], evaluate_module.predict_probs
    monkeypatch.setattr(evaluate_module, "predict_probs", lambda *a, **k: seen.append(k["flip_pairs"]) or real(*a, **k))
    segrefine.evaluate(tmp_path / "model", "toy", flip=True, **toy)
    assert [tuple(map(tuple, pairs)) for pairs in seen] == [((1, 2),)]


def test_train_config_from_recipe_holds_the_model_config():
    config = segrefine.TrainConfig.from_recipe("toy", iters=5, srm="bilinear", memory=True)
    assert config.iters == 5 and config.crop == (128, 128)  # the rest from the toy recipe
    assert config.model == segrefine.ModelConfig(srm="bilinear", memory=True)
    assert segrefine.TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(SettingError, match="^iters must be a positive integer"):
        segrefine.TrainConfig.from_recipe("toy", iters=0)


def test_public_names_are_importable_without_torch_until_used():
    # In a fresh interpreter: this one imported torch already (conftest), so a check here could never fail.
    code = (
        "import sys, segrefine\n"
        "assert 'torch' not in sys.modules, 'import segrefine imported torch'\n"
        "assert set(segrefine.__all__) >= {'build_model', 'SegRefineModel', 'load', 'Predictor', 'evaluate', 'train'}\n"
        "assert 'torch' not in sys.modules, 'listing the public names imported torch'\n"
        "assert all(getattr(segrefine, name) is not None for name in segrefine.__all__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
