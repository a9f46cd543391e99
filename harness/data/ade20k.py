"""ADE20K (SceneParsing / ADEChallengeData2016): 150 classes, train 20,210 / val 2,000.

Layout (the official ``ADEChallengeData2016.zip`` unpacked under ``<data root>/ade20k/``)::

    ade20k/ADEChallengeData2016/
      images/training/ADE_train_00000001.jpg ...      images/validation/ADE_val_00000001.jpg ...
      annotations/training/ADE_train_00000001.png ... annotations/validation/...   (mode L)

Annotation values: 0 = "other" (not one of the 150 classes) -> ignore 255; 1..150 -> class
id - 1. Values above 150 are not ADE20K classes: the decoder keeps them as they are so the
range check of :class:`SegmentationDataset` reports the file (and the raw value). A raw 255 is
read as ignore, as mmsegmentation's reduce-zero-label does.

Same mapping, classes and order as sssegmentation's ADE20kDataset (tests/test_dataset_protocols.py);
it stops on a raw value outside 0-150 (255 included) unless told to ignore it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.cards import bit_palette
from harness.data.folder import Layout, SplitFiles, register_builtin, split_files
from harness.data.preparation import apply_lut

NAME = "ade20k"
RELEASE_DIR = "ADEChallengeData2016"
SPLIT_DIRS = {"train": "training", "val": "validation"}
OFFICIAL_SIZES = {"train": 20210, "val": 2000}

# The first name of each row of the release's objectInfo150.txt, in id order (annotation value = index + 1).
CLASS_NAMES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
assert len(CLASS_NAMES) == 150 and len(set(CLASS_NAMES)) == 150

PALETTE = bit_palette(len(CLASS_NAMES))


def _build_lut() -> np.ndarray:
    lut = np.arange(256, dtype=np.uint8)  # 151..254 stay as they are: out of range, reported by the loader
    lut[0] = 255
    lut[1:151] = np.arange(150, dtype=np.uint8)
    return lut


LABEL_LUT = _build_lut()


def decode_label(raw: np.ndarray) -> np.ndarray:
    return apply_lut(raw, LABEL_LUT)


def dataset_dir(root: Path) -> Path:
    return Path(root) / NAME / RELEASE_DIR


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    base = dataset_dir(root)
    return base / "images" / SPLIT_DIRS[split], base / "annotations" / SPLIT_DIRS[split]


def _files(root: Path, split: str) -> SplitFiles:
    return split_files(*_split_dirs(root, split), ".jpg", ".png")


LAYOUT = Layout(NAME, OFFICIAL_SIZES, dataset_dir, _split_dirs, _files)


register_builtin(
    LAYOUT,
    CLASS_NAMES,
    PALETTE,
    "ADEChallengeData2016.zip",
    decode_label,
    base_scale=(2048, 512),
    crop_size=(512, 512),
    test_protocol="resize to (2048, 512) keeping the aspect ratio, whole image, single scale",
)
