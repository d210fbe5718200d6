"""The camvid adapter: the real release in ../shared/data/camvid, tiny generated trees, recipes, class weights."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from segrefine.data import build_dataset, dataset_meta
from segrefine.data.meta import IGNORE_INDEX
from segrefine.data.statistics import class_frequencies, class_weights
from segrefine.engine.config import resolve_config
from segrefine.errors import SegrefineError


def _frame(root: Path, split: str, name: str, label: np.ndarray) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    rgb = np.full((*label.shape, 3), 100, np.uint8)
    assert cv2.imwrite(str(root / split / name), rgb)
    assert cv2.imwrite(str(root / f"{split}annot" / name), label.astype(np.uint8))


@pytest.fixture
def tree(tmp_path) -> Path:
    _frame(tmp_path, "train", "a.png", np.array([[0, 1, 11], [10, 3, 3]]))
    _frame(tmp_path, "train", "b.png", np.array([[3, 3, 3], [3, 3, 2]]))
    _frame(tmp_path, "val", "c.png", np.array([[5, 5, 5], [6, 7, 8]]))
    return tmp_path


def test_real_release_splits_and_labels(shared_data):
    root = shared_data / "camvid"
    if not root.is_dir():
        pytest.skip("../shared/data/camvid is not present")
    sizes = {split: len(build_dataset("camvid", root, split)) for split in ("train", "val", "trainval")}
    assert sizes == {"train": 367, "val": 101, "trainval": 468}
    data = build_dataset("camvid", root, "val")
    image, label = data.load(0)
    assert image.shape == (360, 480, 3) and label.shape == (360, 480)
    assert set(np.unique(label)) <= set(range(11)) | {IGNORE_INDEX}
    assert (label == IGNORE_INDEX).any()  # the frame has void pixels, now ignored
    raw = cv2.imread(str(data.pairs[0][1]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(label == IGNORE_INDEX, raw == 11)
    # the official list decides the order and membership
    listed = [line.split()[0].rsplit("/", 1)[-1] for line in (root / "val.txt").read_text().splitlines() if line.strip()]
    assert [p[0].name for p in data.pairs] == listed


def test_classes_and_palette():
    meta = dataset_meta("camvid")
    assert meta.classes[:4] == ("Sky", "Building", "Pole", "Road") and meta.classes[-1] == "Bicyclist"
    assert meta.num_classes == 11
    assert meta.palette[3] == (128, 64, 128) and meta.palette[10] == (0, 128, 192)


def test_void_becomes_ignore_and_trainval_joins(tree):
    train = build_dataset("camvid", tree, "train")
    assert train[0]["label"].tolist() == [[0, 1, IGNORE_INDEX], [10, 3, 3]]
    assert [p[0].name for p in build_dataset("camvid", tree, "trainval").pairs] == ["a.png", "b.png", "c.png"]


def test_outer_folder_is_accepted(tree, tmp_path):
    (tmp_path / "wrap").mkdir()
    (tmp_path / "wrap" / "CamVid").symlink_to(tree, target_is_directory=True)
    assert len(build_dataset("camvid", tmp_path / "wrap", "train")) == 2


def test_bad_label_value_names_the_file(tree):
    _frame(tree, "train", "bad.png", np.array([[12, 0]]))
    data = build_dataset("camvid", tree, "train")
    with pytest.raises(SegrefineError, match=r"bad\.png has values 12"):
        data[[p[0].name for p in data.pairs].index("bad.png")]


def test_split_list_selects_and_checks(tree):
    (tree / "train.txt").write_text("/SegNet/CamVid/train/b.png /SegNet/CamVid/trainannot/b.png\n")
    assert [p[0].name for p in build_dataset("camvid", tree, "train").pairs] == ["b.png"]
    (tree / "train.txt").write_text("/x/train/b.png /x/trainannot/b.png\n/x/train/zz.png /x/trainannot/zz.png\n")
    with pytest.raises(SegrefineError, match=r"train\.txt lists frames .* zz\.png"):
        build_dataset("camvid", tree, "train")


def test_missing_split_and_lonely_files(tree):
    with pytest.raises(SegrefineError, match=r"camvid split test: folder .*test does not exist"):
        build_dataset("camvid", tree, "test")
    (tree / "valannot" / "c.png").unlink()
    with pytest.raises(SegrefineError, match=r"images without a label"):
        build_dataset("camvid", tree, "val")
    with pytest.raises(SegrefineError, match="no split 'training'"):
        build_dataset("camvid", tree, "training")


def test_class_frequencies_and_weights(tree):
    freq = class_frequencies(build_dataset("camvid", tree, "train"), 11)
    assert freq.sum() == pytest.approx(1.0)
    assert freq[3] == pytest.approx(7 / 11) and freq[4] == 0  # 11 labelled pixels, void left out
    enet = class_weights("enet", freq).numpy()
    assert enet[3] == pytest.approx(1 / np.log(1.02 + 7 / 11))
    assert enet[0] > enet[3]  # rarer classes weigh more
    assert enet[4] == pytest.approx(enet[freq > 0].max())  # absent class: the largest weight
    median = class_weights("median", freq).numpy()
    assert median[0] == pytest.approx(np.median(freq[freq > 0]) / freq[0])
    assert class_weights("none", freq) is None


def test_recipes_default_and_named():
    default = resolve_config({}, {"dataset": "camvid"})
    assert (default.recipe, default.train_split, default.val_split, default.pretrained_backbone) == (
        "camvid", "trainval", "test", "imagenet"
    )
    cpu = resolve_config({}, {"dataset": "camvid", "recipe": "camvid-cpu", "iters": 5})
    assert cpu.recipe == "camvid-cpu" and cpu.pretrained_backbone == "none" and cpu.iters == 5 and cpu.amp is True
    with pytest.raises(SegrefineError, match="camvid-cpu is for dataset camvid, not toy"):
        resolve_config({}, {"dataset": "toy", "recipe": "camvid-cpu"})
    with pytest.raises(SegrefineError, match="unknown recipe 'fast'"):
        resolve_config({}, {"dataset": "camvid", "recipe": "fast"})


def test_jpeg_frames_pair_with_png_labels_and_the_official_list(tree):
    """Frames re-encoded as JPEG (a smaller copy of the release) still pair and follow the list's .png names."""
    for path in (tree / "train").glob("*.png"):
        assert cv2.imwrite(str(path.with_suffix(".jpg")), cv2.imread(str(path)))
        path.unlink()
    (tree / "train.txt").write_text("/x/train/b.png /x/trainannot/b.png\n/x/train/a.png /x/trainannot/a.png\n")
    data = build_dataset("camvid", tree, "train")
    assert [(p[0].name, p[1].name) for p in data.pairs] == [("b.jpg", "b.png"), ("a.jpg", "a.png")]
    assert data[1]["label"].tolist() == [[0, 1, IGNORE_INDEX], [10, 3, 3]]
