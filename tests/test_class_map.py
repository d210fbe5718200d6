"""Scoring across taxonomies: the built-in Cityscapes→CamVid map, user JSON maps, either direction, KITTI frames."""

import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from segrefine.data import build_dataset, dataset_meta
from segrefine.data.class_map import CITYSCAPES_TO_CAMVID, ClassMap, cross_taxonomy, load_class_map
from segrefine.data.meta import CAMVID_CLASSES, CITYSCAPES_CLASSES, CITYSCAPES_LABEL_TO_TRAIN
from segrefine.engine.evaluate import evaluate_model
from segrefine.errors import SettingError

CAMVID, CITYSCAPES = dataset_meta("camvid"), dataset_meta("cityscapes")


class _Constant(nn.Module):
    """Predicts one class everywhere."""

    def __init__(self, num_classes: int, predicted: int) -> None:
        super().__init__()
        self.num_classes, self.predicted = num_classes, predicted

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.num_classes, *x.shape[-2:])
        logits[:, self.predicted] = 1.0
        return logits


class _One(Dataset):
    def __init__(self, label):
        self.label = torch.as_tensor(label)

    def __len__(self):
        return 1

    def __getitem__(self, index):
        image = torch.zeros(3, *self.label.shape, dtype=torch.uint8)
        return {"image": image, "label": self.label.clone(), "name": "x", "path": "x"}


def test_builtin_cityscapes_to_camvid_covers_every_cityscapes_class():
    assert set(CITYSCAPES_TO_CAMVID) == set(CITYSCAPES_CLASSES)
    assert {v for v in CITYSCAPES_TO_CAMVID.values() if v} == set(CAMVID_CLASSES)
    lut = load_class_map("cityscapes:camvid").lut(CITYSCAPES_CLASSES, CAMVID_CLASSES)
    named = {c: CAMVID_CLASSES[lut[i]] if lut[i] != 255 else None for i, c in enumerate(CITYSCAPES_CLASSES)}
    assert named == CITYSCAPES_TO_CAMVID
    assert named["terrain"] is None and named["wall"] == "Building" and named["rider"] == "Bicyclist"
    assert lut[255] == 255


def test_a_camvid_model_on_cityscapes_labels_is_scored_in_camvid_classes():
    # road (0) left half, vegetation (8) right half, one row of terrain (9, ignored) and one of ignore
    label = torch.zeros(4, 8, dtype=torch.long)
    label[:, 4:] = 8
    label[2] = 9
    label[3] = 255
    scoring = cross_taxonomy(load_class_map("cityscapes:camvid"), CAMVID, CITYSCAPES)
    assert scoring.scored is CAMVID and scoring.prediction_lut is None
    road = CAMVID_CLASSES.index("Road")
    report = evaluate_model(_Constant(11, road), _One(label), CITYSCAPES, scoring=scoring, progress=False)
    assert report["per_class"]["Road"]["iou"] == pytest.approx(4 / 8)  # 8 labelled pixels, all called Road
    assert report["per_class"]["Tree"]["iou"] == 0.0
    assert report["mIoU"] == pytest.approx(0.25) and len(report["per_class"]) == 11


def test_a_cityscapes_model_on_camvid_labels_has_its_predictions_mapped():
    car = CAMVID_CLASSES.index("Car")
    label = torch.full((4, 4), car)
    scoring = cross_taxonomy(load_class_map("cityscapes:camvid"), CITYSCAPES, CAMVID)
    assert scoring.scored is CAMVID and scoring.label_lut is None
    truck = CITYSCAPES_CLASSES.index("truck")
    report = evaluate_model(_Constant(19, truck), _One(label), CAMVID, scoring=scoring, progress=False)
    assert report["mIoU"] == 1.0  # truck counts as Car
    terrain = CITYSCAPES_CLASSES.index("terrain")
    report = evaluate_model(_Constant(19, terrain), _One(label), CAMVID, scoring=scoring, progress=False)
    assert report["per_class"]["Car"]["iou"] == 0.0  # a class with no CamVid counterpart is a miss, not dropped


def test_a_map_that_fits_neither_way_names_the_classes_in_one_line():
    lip = dataset_meta("lip")
    with pytest.raises(SettingError) as info:
        cross_taxonomy(load_class_map("cityscapes:camvid"), CAMVID, lip)
    message = str(info.value)
    assert "\n" not in message and "'road'" in message and "dataset lip does not have" in message


def test_user_json_map(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"road": "Road", "sidewalk": "Road", "sky": "Sky", "car": None}))
    class_map = load_class_map(path)
    lut = class_map.lut(CITYSCAPES_CLASSES, CAMVID_CLASSES)
    assert lut[0] == lut[1] == CAMVID_CLASSES.index("Road") and lut[13] == 255 and lut[2] == 255
    path.write_text(json.dumps({"road": "Lane"}))
    with pytest.raises(SettingError, match="maps to 'Lane', which the model \\(camvid\\) does not have"):
        cross_taxonomy(load_class_map(path), CAMVID, CITYSCAPES)


@pytest.mark.parametrize("content", ["{", "[]", "{}", '{"road": 3}'])
def test_bad_json_maps_are_refused(tmp_path, content):
    path = tmp_path / "map.json"
    path.write_text(content)
    with pytest.raises(SettingError, match="^class_map "):
        load_class_map(path)


def test_unknown_map_name_lists_the_builtin_ones():
    with pytest.raises(SettingError, match="neither a built-in map \\(cityscapes:camvid\\) nor a JSON file"):
        load_class_map("ade20k:camvid")


def _kitti_tree(root, official: bool):
    images, labels = (root / "training" / "image_2", root / "training" / "semantic") if official else (
        root / "images", root / "labelIds")
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    label = np.array([[7, 8, 21, 22], [23, 26, 27, 0]], np.uint8)  # road sidewalk vegetation terrain / sky car truck -
    cv2.imwrite(str(images / "000000_10.png"), np.zeros((2, 4, 3), np.uint8))
    cv2.imwrite(str(labels / "000000_10.png"), label)
    return label


@pytest.mark.parametrize("official", [True, False])
def test_kitti_reads_cityscapes_label_ids_in_both_layouts(tmp_path, official):
    raw = _kitti_tree(tmp_path, official)
    (sample,) = list(build_dataset("kitti", tmp_path, "train"))
    expected = np.vectorize(CITYSCAPES_LABEL_TO_TRAIN.get)(raw)
    assert sample["label"].tolist() == expected.tolist()
    assert dataset_meta("kitti").classes == CITYSCAPES_CLASSES


def test_kitti_mini_mapped_through_the_class_map_agrees_with_its_camvid_labels(shared_data):
    root = shared_data / "kitti-mini"
    kitti = build_dataset("kitti", root, "train")
    assert len(kitti) == 24
    lut = torch.from_numpy(load_class_map("cityscapes:camvid").lut(CITYSCAPES_CLASSES, CAMVID_CLASSES))
    for index in (0, 11, 23):
        sample = kitti[index]
        mapped = lut[sample["label"]]
        reference = torch.from_numpy(cv2.imread(str(root / "camvid11" / f"{sample['name']}.png"), cv2.IMREAD_UNCHANGED))
        both = (mapped != 255) & (reference != 255)
        assert both.float().mean() > 0.6
        assert torch.equal(mapped[both].long(), reference[both].long())


def test_eval_cli_scores_the_camvid_model_on_cityscapes(cli, shared_data):
    result = cli("eval", "--dataset", "cityscapes", "--data-root", shared_data / "cityscapes-mini",
                 "--class-map", "cityscapes:camvid", "--workers", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["per_class"]) == list(CAMVID_CLASSES) and report["class_map"] == "cityscapes:camvid"
    assert 0.0 < report["mIoU"] < 1.0 and report["num_images"] == 1


def test_eval_cli_refuses_a_map_naming_classes_nobody_has(cli, shared_data, tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"road": "Lane"}))
    result = cli("eval", "--dataset", "cityscapes", "--data-root", shared_data / "cityscapes-mini",
                 "--class-map", path, "--workers", "0")
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--class-map" in lines[0] and "'Lane'" in lines[0], result.stderr
