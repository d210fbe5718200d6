"""Class names, colour palettes and label-id tables of the datasets segrefine knows."""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = 255

Color = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetMeta:
    """What a model trained on a dataset needs to know about its label space."""

    name: str
    classes: tuple[str, ...]
    palette: tuple[Color, ...]
    ignore_index: int = IGNORE_INDEX
    flip_pairs: tuple[tuple[int, int], ...] = ()
    # The shorter side, in pixels, of the dataset's images as its models learn them (None: sizes vary). A model
    # trained on them sees other photos resized to it (`InferenceOptions.short_side`).
    short_side: int | None = None

    def __post_init__(self) -> None:
        if len(self.palette) != len(self.classes):
            raise ValueError(f"{self.name}: {len(self.classes)} classes but {len(self.palette)} palette colours")
        if not 0 < len(self.classes) <= IGNORE_INDEX:
            raise ValueError(f"{self.name}: {len(self.classes)} classes; segrefine supports 1 to {IGNORE_INDEX}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _voc_channel(index: int, bit: int) -> int:
    """Bits `bit`, `bit` + 3, `bit` + 6, ... of `index` as bits 7, 6, 5, ... of one colour channel."""
    return sum(((index >> (3 * k + bit)) & 1) << (7 - k) for k in range(8))


def voc_palette(n: int, start: int = 0) -> tuple[Color, ...]:
    """The PASCAL VOC colour map (bits of the index spread over r, g, b): entries start .. start+n-1."""
    return tuple(tuple(_voc_channel(index, bit) for bit in range(3)) for index in range(start, start + n))


# --- Cityscapes (also BDD100K): 19 train ids, official colours --------------------------------------------

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# labelId -> trainId of cityscapesscripts/helpers/labels.py; every id not evaluated (and any id outside the
# table, such as -1 "license plate", which never appears in the PNGs) is ignore.
CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {
    -1: 255, 0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255,
    7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255,
    17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

CITYSCAPES = DatasetMeta("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, short_side=1024)
BDD100K = DatasetMeta("bdd100k", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, short_side=720)
KITTI = DatasetMeta("kitti", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)  # frames of 370-376 rows

# --- ADE20K (SceneParsing / ADEChallengeData2016): 150 classes ---------------------------------------------

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip

ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)  # fmt: skip

ADE20K = DatasetMeta("ade20k", ADE20K_CLASSES, ADE20K_PALETTE)

# --- LIP (Look Into Person): 20 classes, VOC colours, left/right pairs swap under a horizontal flip ---------

LIP_CLASSES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
    "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe",
    "right-shoe",
)  # fmt: skip

LIP = DatasetMeta("lip", LIP_CLASSES, voc_palette(20), flip_pairs=((14, 15), (16, 17), (18, 19)))

# --- COCO-Stuff 164k: 80 things + 91 stuff ------------------------------------------------------------------

COCOSTUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard",
    "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain",
    "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain",
    "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea",
    "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip

# The 164k PNGs store COCO category id - 1 (0..181). Eleven thing ids of the COCO id range are unused.
COCOSTUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCOSTUFF_ID_TO_TRAIN: dict[int, int] = {
    stored: train
    for train, stored in enumerate(i for i in range(182) if i not in COCOSTUFF_UNUSED_IDS)
}

# COCO-Stuff has no single official palette; VOC colours from entry 1 on keep every class off black.
COCOSTUFF = DatasetMeta("cocostuff", COCOSTUFF_CLASSES, voc_palette(171, start=1))

# --- toy: procedural street scenes (segrefine.data.toy) with Cityscapes names and colours ------------------

TOY_CLASSES = ("road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "sky", "person", "car")

TOY = DatasetMeta(
    "toy", TOY_CLASSES, tuple(CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(name)] for name in TOY_CLASSES)
)

# --- CamVid, the 11-class SegNet release: the release's own colours ---------------------------------------

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip

CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip

CAMVID = DatasetMeta("camvid", CAMVID_CLASSES, CAMVID_PALETTE, short_side=360)  # the 360×480 SegNet release
