"""Dataset adapters on tiny trees in the official layouts, the registry, and the id tables."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segrefine.data import DATASETS, build_dataset, dataset_layouts, dataset_meta
from segrefine.data.meta import (
    CITYSCAPES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_TO_TRAIN,
    CITYSCAPES_PALETTE,
    COCOSTUFF_UNUSED_IDS,
    voc_palette,
)
from segrefine.errors import SegrefineError


def _image(path: Path, h: int = 6, w: int = 8, seed: int = 0) -> np.ndarray:
    """Writes a random RGB image; returns what a lossless reader gets back (RGB)."""
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def _label(path: Path, values) -> np.ndarray:
    label = np.asarray(values, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), label)
    return label


def _values(h: int = 6, w: int = 8, pool=(0, 1, 2, 255), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.asarray(pool), (h, w)).astype(np.uint8)


def _error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(SegrefineError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- id tables and metadata -------------------------------------------------------------------------------------


def test_cityscapes_table_matches_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels

    official = {label.id: (label.trainId if 0 <= label.trainId < 19 else 255) for label in labels}
    assert CITYSCAPES_LABEL_TO_TRAIN == official
    assert len(official) == 35  # ids 0..33 and -1 (license plate)
    by_train = {label.trainId: label for label in labels if 0 <= label.trainId < 19}
    assert CITYSCAPES_CLASSES == tuple(by_train[i].name for i in range(19))
    assert CITYSCAPES_PALETTE == tuple(tuple(by_train[i].color) for i in range(19))


def test_metadata_of_every_dataset():
    sizes = {"cityscapes": 19, "bdd100k": 19, "ade20k": 150, "lip": 20, "cocostuff": 171, "toy": 9}
    for name, k in sizes.items():
        meta = dataset_meta(name)
        assert meta.num_classes == k and len(meta.palette) == k and len(set(meta.classes)) == k
        assert meta.ignore_index == 255
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in meta.palette)
    assert dataset_meta("bdd100k").classes == CITYSCAPES.classes
    assert dataset_meta("lip").flip_pairs == ((14, 15), (16, 17), (18, 19))
    assert dataset_meta("lip").classes[14:16] == ("left-arm", "right-arm")
    assert dataset_meta("ade20k").classes[:3] == ("wall", "building", "sky")
    assert dataset_meta("ade20k").palette[0] == (120, 120, 120)
    assert set(dataset_meta("toy").classes) <= set(CITYSCAPES_CLASSES)
    assert voc_palette(4) == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))


def test_registry_names_layouts_and_errors(tmp_path):
    assert set(DATASETS) == {"cityscapes", "bdd100k", "ade20k", "lip", "cocostuff", "camvid", "kitti", "folder", "toy"}
    layouts = dataset_layouts()
    assert set(layouts) == set(DATASETS) and all(len(text) > 40 and "\n" not in text for text in layouts.values())
    assert "did you mean 'cityscapes'" in _error("unknown dataset", build_dataset, "citiscapes", tmp_path, "val")
    assert "did you mean 'ade20k'" in _error("unknown dataset", dataset_meta, "ade")
    _error("no split 'testing'.*train, val", build_dataset, "lip", tmp_path, "testing")
    _error("no option crop", build_dataset, "cityscapes", tmp_path, "val", crop=3)
    _error("needs a data root", build_dataset, "cityscapes", None, "val")
    _error("needs a data root", dataset_meta, "folder")


# --- cityscapes -----------------------------------------------------------------------------------------------


def _cityscapes(root: Path, frames=("aachen_000000_000019", "aachen_000001_000019"), split="val") -> dict:
    raw = {}
    for i, frame in enumerate(frames):
        _image(root / "leftImg8bit" / split / "aachen" / f"{frame}_leftImg8bit.png", seed=i)
        raw[frame] = _label(
            root / "gtFine" / split / "aachen" / f"{frame}_gtFine_labelIds.png",
            _values(pool=(0, 4, 7, 8, 18, 24, 26, 33, 34, 200), seed=i),
        )
        _label(root / "gtFine" / split / "aachen" / f"{frame}_gtFine_instanceIds.png", _values(seed=9))
    return raw


def test_cityscapes_maps_label_ids_by_the_official_table(tmp_path):
    raw = _cityscapes(tmp_path)
    ds = build_dataset("cityscapes", tmp_path, "val")
    assert len(ds) == 2
    item = ds[0]
    frame = "aachen_000000_000019"
    assert item["name"] == f"{frame}_leftImg8bit" and item["path"].endswith(f"{frame}_leftImg8bit.png")
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 6, 8)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (6, 8)
    lut = {0: 255, 4: 255, 7: 0, 8: 1, 18: 255, 24: 11, 26: 13, 33: 18, 34: 255, 200: 255}
    expected = np.vectorize(lut.get)(raw[frame])
    assert np.array_equal(item["label"].numpy(), expected)


def test_cityscapes_prefers_train_ids_when_every_frame_has_them(tmp_path):
    _cityscapes(tmp_path)
    folder = tmp_path / "gtFine" / "val" / "aachen"
    first = _label(folder / "aachen_000000_000019_gtFine_labelTrainIds.png", _values(pool=(0, 5, 18, 255)))
    ds = build_dataset("cityscapes", tmp_path, "val")
    assert not np.array_equal(ds[0]["label"].numpy(), first)  # one frame lacks train ids: raw ids for all
    _label(folder / "aachen_000001_000019_gtFine_labelTrainIds.png", _values(pool=(1, 2), seed=1))
    ds = build_dataset("cityscapes", tmp_path, "val")
    assert np.array_equal(ds[0]["label"].numpy(), first)
    assert set(np.unique(ds[1]["label"].numpy())) <= {1, 2}


def test_cityscapes_real_frame(shared_data):
    from cityscapesscripts.helpers.labels import id2label

    root = shared_data / "cityscapes-mini"
    ds = build_dataset("cityscapes", root, "val")
    assert len(ds) == 1
    item = ds[0]
    assert item["image"].shape == (3, 128, 256) and item["label"].shape == (128, 256)
    frame = root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    raw = cv2.imread(str(frame), cv2.IMREAD_UNCHANGED)
    official = np.vectorize(lambda i: id2label[int(i)].trainId if 0 <= id2label[int(i)].trainId < 19 else 255)(raw)
    assert np.array_equal(item["label"].numpy(), official)
    values = set(torch.unique(item["label"]).tolist())
    assert values <= set(range(19)) | {255} and len(values - {255}) >= 5
    bgr = cv2.imread(str(root / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"))
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), bgr[..., ::-1])


# --- the other adapters ---------------------------------------------------------------------------------------


def test_lip_real_samples(shared_data):
    for split in ("train", "val"):
        ds = build_dataset("lip", shared_data / "lip-mini", split)
        assert len(ds) == 1
        item = ds[0]
        assert item["image"].shape[1:] == item["label"].shape
        values = set(torch.unique(item["label"]).tolist())
        assert values <= set(range(20)) | {255} and 0 in values and len(values) >= 3


def test_lip_layout_and_values(tmp_path):
    _image(tmp_path / "train_images" / "1_1.jpg")
    stored = _label(tmp_path / "train_segmentations" / "1_1.png", _values(pool=(0, 14, 15, 19)))
    item = build_dataset("lip", tmp_path, "train")[0]
    assert item["name"] == "1_1" and np.array_equal(item["label"].numpy(), stored)
    _label(tmp_path / "train_segmentations" / "1_1.png", _values(pool=(0, 20, 254)))
    message = _error("neither a class", build_dataset("lip", tmp_path, "train").__getitem__, 0)
    assert "1_1.png" in message and "20, 254" in message


def test_bdd100k_at_or_above_the_bdd100k_folder(tmp_path):
    inner = tmp_path / "bdd100k"
    for name in ("b1", "b2"):
        _image(inner / "images" / "10k" / "train" / f"{name}.jpg")
        _label(inner / "labels" / "sem_seg" / "masks" / "train" / f"{name}.png", _values(pool=(0, 13, 18, 255)))
    for root in (tmp_path, inner):
        ds = build_dataset("bdd100k", root, "train")
        assert [item["name"] for item in ds] == ["b1", "b2"]
        assert set(torch.unique(ds[0]["label"]).tolist()) <= {0, 13, 18, 255}


def test_ade20k_reduces_zero_label_at_or_above_the_inner_folder(tmp_path):
    inner = tmp_path / "ADEChallengeData2016"
    _image(inner / "images" / "validation" / "ADE_val_00000001.jpg")
    stored = _label(inner / "annotations" / "validation" / "ADE_val_00000001.png", _values(pool=(0, 1, 2, 150)))
    for root in (tmp_path, inner):
        label = build_dataset("ade20k", root, "val")[0]["label"].numpy()
        assert np.array_equal(label, np.where(stored == 0, 255, stored.astype(np.int64) - 1))
    _label(inner / "annotations" / "validation" / "ADE_val_00000001.png", _values(pool=(0, 151)))
    message = _error("neither a class of ade20k", build_dataset("ade20k", tmp_path, "val").__getitem__, 0)
    assert "ADE_val_00000001.png" in message and "151" in message
    _error("training", build_dataset, "ade20k", tmp_path, "train")


def test_cocostuff_maps_stored_ids_to_contiguous_classes(tmp_path):
    stored = np.array([[0, 10, 12, 24, 26, 89], [91, 181, 255, 11, 90, 182]], np.uint8)
    _image(tmp_path / "images" / "val2017" / "000000000139.jpg", *stored.shape)
    _label(tmp_path / "annotations" / "val2017" / "000000000139.png", stored)
    label = build_dataset("cocostuff", tmp_path, "val")[0]["label"].numpy()
    assert label.tolist() == [[0, 10, 11, 23, 24, 79], [80, 170, 255, 255, 255, 255]]
    assert {11, 90} <= set(COCOSTUFF_UNUSED_IDS)
    converted = _label(tmp_path / "annotations" / "val2017" / "000000000139_labelTrainIds.png", stored % 171)
    label = build_dataset("cocostuff", tmp_path, "val")[0]["label"].numpy()
    assert np.array_equal(label, converted)


def test_folder_with_classes_txt(tmp_path):
    (tmp_path / "classes.txt").write_text("# my classes\nbackground\nroad 128,64,128\n\ntraffic light, 250,170,30\n")
    meta = dataset_meta("folder", tmp_path)
    assert meta.classes == ("background", "road", "traffic light")
    assert meta.palette == ((0, 0, 0), (128, 64, 128), (250, 170, 30))
    _image(tmp_path / "images" / "a.jpg")
    _image(tmp_path / "images" / "b.png")
    _label(tmp_path / "masks" / "a.png", _values(pool=(0, 2, 255)))
    _label(tmp_path / "masks" / "b.png", _values(pool=(1,)))
    ds = build_dataset("folder", tmp_path, "val")
    assert ds.meta == meta and [item["name"] for item in ds] == ["a", "b"]
    _label(tmp_path / "masks" / "b.png", _values(pool=(1, 3)))
    assert "b.png" in _error("values 3 ", ds.__getitem__, 1)
    # split sub-folders take precedence over the flat layout
    _image(tmp_path / "images" / "train" / "c.jpg")
    _label(tmp_path / "masks" / "train" / "c.png", _values(pool=(0,)))
    assert [item["name"] for item in build_dataset("folder", tmp_path, "train")] == ["c"]


def test_folder_classes_txt_errors(tmp_path):
    _error("classes.txt does not exist", dataset_meta, "folder", tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb 1,2,300\n")
    _error("line 2: colour 1,2,300", dataset_meta, "folder", tmp_path)
    (tmp_path / "classes.txt").write_text("a\na\n")
    _error("listed twice", dataset_meta, "folder", tmp_path)
    (tmp_path / "classes.txt").write_text("\n# nothing\n")
    _error("lists no classes", dataset_meta, "folder", tmp_path)


def test_toy_through_the_registry():
    ds = build_dataset("toy", None, "val", size=(40, 64), length=3, seed=1)
    assert len(ds) == 3 and ds[2]["image"].shape == (3, 40, 64) and ds[2]["name"] == "toy_val_000002"
    assert ds.meta == dataset_meta("toy")
    _error("at least 32", build_dataset, "toy", None, "val", size=(8, 8))
    _error("seed -1", build_dataset, "toy", None, "val", seed=-1)
    _error("length 0", build_dataset, "toy", None, "val", length=0)


# --- discovery and loading errors -----------------------------------------------------------------------------


def _lip(root: Path, names=("a", "b")) -> None:
    for name in names:
        _image(root / "val_images" / f"{name}.jpg")
        _label(root / "val_segmentations" / f"{name}.png", _values())


def test_missing_root_and_split(tmp_path):
    message = _error("does not exist", build_dataset, "lip", tmp_path / "nowhere", "val")
    assert str(tmp_path / "nowhere") in message and "<split>_segmentations/<name>.png" in message  # names the layout
    message = _error("split val: folder", build_dataset, "lip", tmp_path, "val")
    assert str(tmp_path / "val_images") in message
    (tmp_path / "val_images").mkdir()
    (tmp_path / "val_segmentations").mkdir()
    assert str(tmp_path / "val_images") in _error("no images", build_dataset, "lip", tmp_path, "val")


def test_unpaired_files_are_listed(tmp_path):
    _lip(tmp_path)
    for i in range(5):
        _image(tmp_path / "val_images" / f"x{i}.jpg")
    message = _error("images without a label", build_dataset, "lip", tmp_path, "val")
    assert "x0.jpg, x1.jpg, x2.jpg, ..." in message and "(5 in all)" in message
    for i in range(5):
        (tmp_path / "val_images" / f"x{i}.jpg").unlink()
    _label(tmp_path / "val_segmentations" / "orphan.png", _values())
    message = _error("labels without an image", build_dataset, "lip", tmp_path, "val")
    assert "orphan.png (1 in all)" in message


def test_unreadable_files_and_size_mismatch(tmp_path):
    _lip(tmp_path)
    ds = build_dataset("lip", tmp_path, "val")
    (tmp_path / "val_images" / "a.jpg").write_bytes(b"not a jpeg")
    assert str(tmp_path / "val_images" / "a.jpg") in _error("cannot read image", ds.__getitem__, 0)
    (tmp_path / "val_segmentations" / "b.png").write_bytes(b"")
    assert str(tmp_path / "val_segmentations" / "b.png") in _error("cannot read label", ds.__getitem__, 1)
    _image(tmp_path / "val_images" / "a.jpg", 7, 8)
    message = _error(r"is 7×8 but its label .* is 6×8 \(H×W\)", ds.__getitem__, 0)
    assert "a.jpg" in message and "a.png" in message
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[..., 0] = 1
    cv2.imwrite(str(tmp_path / "val_segmentations" / "b.png"), colour)
    assert "b.png" in _error("single-channel", ds.__getitem__, 1)


def test_sixteen_bit_labels(tmp_path):
    _image(tmp_path / "val_images" / "a.jpg")
    label = _values(pool=(0, 19)).astype(np.uint16)
    (tmp_path / "val_segmentations").mkdir()
    cv2.imwrite(str(tmp_path / "val_segmentations" / "a.png"), label)
    ds = build_dataset("lip", tmp_path, "val")
    assert np.array_equal(ds[0]["label"].numpy(), label)
    label[0, 0] = 300
    cv2.imwrite(str(tmp_path / "val_segmentations" / "a.png"), label)
    assert "values 300" in _error("neither a class", ds.__getitem__, 0)


def test_a_one_bit_png_mask_reads_as_its_class_ids(tmp_path):
    from PIL import Image

    from segrefine.imageio import read_label_map

    mask = np.zeros((8, 12), bool)
    mask[2:6, 3:9] = True
    Image.fromarray(mask).save(tmp_path / "mask.png")  # what saving a boolean array with Pillow writes: 1 bit
    assert np.array_equal(read_label_map(tmp_path / "mask.png"), mask.astype(np.uint8))  # not 0/255 (255: ignore)
