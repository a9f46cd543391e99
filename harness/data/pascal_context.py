"""PASCAL-Context, 59-class setting: train 4,998 / val 5,105 (the VOC2010 train/val images).

Layout under ``<data root>/pascal_context59/`` (VOC2010 ``VOCtrainval_03-May-2010.tar`` plus the
PASCAL-Context full annotations ``trainval.tar.gz`` and their ``labels.txt``)::

    pascal_context59/VOCdevkit/VOC2010/
      JPEGImages/2008_000002.jpg ...
      ImageSets/SegmentationContext/{train,val}.txt   split lists (else ImageSets/Main/{train,val}.txt)
      trainval/2008_000002.mat ...                    459-class label maps, variable LabelMap
      labels.txt                                      "<id>: <name>" for the 459 classes
      SegmentationClassContext/2008_000002.png ...    written by `python -m harness.prepare`

The 59 classes are the standard 59-class list below. Each is looked up by name in the release's
``labels.txt`` to get its 459-class id; every other id (and 0, unlabelled) becomes ignore 255.
``LabelMap`` values above the largest id of ``labels.txt`` are an error naming the file.
The loader reads the converted PNGs (train ids 0-58, 255). sssegmentation's PascalContext59Dataset
reads the 60-class PNGs of the usual conversion (0 background, 1-59 the classes in 459-id order)
and maps k -> k - 1, 0 -> ignore: the same train ids, since the 59 names sort like their ids
(tests/test_dataset_protocols.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from harness.data.base import Sample
from harness.data.cards import DatasetCard, bit_palette
from harness.data.preparation import (
    Job,
    Preparer,
    SplitCheck,
    check_split_name,
    data_error,
    files_by_stem,
    prepare_command,
    read_id_list,
    require,
)
from harness.data.registry import DatasetSpec, register

NAME = "pascal_context59"
SPLITS = ("train", "val")
OFFICIAL_SIZES = {"train": 4998, "val": 5105}
LABEL_DIR = "SegmentationClassContext"
MAT_KEY = "LabelMap"

CLASS_NAMES: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant",
    "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table",
    "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip
assert len(CLASS_NAMES) == 59 and len(set(CLASS_NAMES)) == 59

PALETTE = bit_palette(len(CLASS_NAMES))  # visualisation only


def voc_dir(root: Path) -> Path:
    return Path(root) / NAME / "VOCdevkit" / "VOC2010"


def split_list(root: Path, split: str) -> Path:
    base = voc_dir(root)
    context = base / "ImageSets" / "SegmentationContext" / f"{split}.txt"
    main = base / "ImageSets" / "Main" / f"{split}.txt"
    return context if context.is_file() or not main.is_file() else main


def read_labels_txt(path: Path) -> dict[str, int]:
    """{class name: 459-class id} from the release's labels.txt ("<id>: <name>" per line)."""
    names: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        head, sep, name = line.partition(":")
        if not sep or not head.strip().isdigit() or not name.strip():
            raise data_error(f"{path}: line {number} is not '<id>: <name>': {line.strip()!r}")
        names.setdefault(name.strip(), int(head))
    return names


def build_lut(labels_txt: Path) -> np.ndarray:
    """459-class id -> 59-class train id (255 for every id not among the 59 and for 0)."""
    ids = read_labels_txt(labels_txt)
    absent = [name for name in CLASS_NAMES if name not in ids]
    if absent:
        raise data_error(f"{labels_txt}: no entry for the 59-class name(s) {', '.join(absent)}")
    lut = np.full(max(ids.values()) + 1, 255, dtype=np.uint8)
    for train_id, name in enumerate(CLASS_NAMES):
        lut[ids[name]] = train_id
    return lut


def convert_mat(path: Path, lut: np.ndarray) -> np.ndarray:
    """Train-id label map of one 459-class .mat file; DataError naming the file if it is bad."""
    try:
        data = scipy.io.loadmat(path, variable_names=[MAT_KEY])
    except Exception as exc:  # scipy raises several kinds for truncated or foreign files
        raise data_error(f"{path}: cannot read MATLAB file ({exc})") from None
    if MAT_KEY not in data:
        raise data_error(f"{path}: no variable {MAT_KEY!r}")
    raw = np.asarray(data[MAT_KEY])
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise data_error(f"{path}: {MAT_KEY} is {raw.dtype} with shape {raw.shape}; expected a 2-D integer map")
    if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
        value = int(raw.min() if raw.min() < 0 else raw.max())
        raise data_error(f"{path}: {MAT_KEY} value {value} is not a PASCAL-Context class id (0..{len(lut) - 1})")
    return lut[raw]


def conversion_jobs(root: Path) -> list[Job]:
    base = require(voc_dir(root), NAME, root, "VOC2010 folder")
    mat_dir = require(base / "trainval", NAME, root, "PASCAL-Context annotation folder")
    labels_txt = require(base / "labels.txt", NAME, root, "class list", is_file=True)
    lut = build_lut(labels_txt)
    mats = files_by_stem(mat_dir, ".mat")
    ids: set[str] = set()
    for split in SPLITS:
        ids.update(read_id_list(split_list(root, split), NAME, root))
    out_dir = base / LABEL_DIR
    return [Job(out_dir / f"{i}.png", lambda path=mats[i]: convert_mat(path, lut)) for i in sorted(ids) if i in mats]


def list_samples(root: Path, split: str, options: dict[str, Any]) -> list[Sample]:
    check_split_name(NAME, split, SPLITS)
    base = require(voc_dir(root), NAME, root, "VOC2010 folder")
    image_dir = require(base / "JPEGImages", NAME, root, "image folder")
    label_dir = base / LABEL_DIR  # absent until prepare has run: reported below as "not converted yet"
    ids = read_id_list(split_list(root, split), NAME, root)
    images, labels = files_by_stem(image_dir, ".jpg"), files_by_stem(label_dir, ".png")
    no_label = [i for i in ids if i not in labels]
    if no_label:
        raise data_error(
            f"{NAME}: {len(no_label):,} of {len(ids):,} {split} labels not converted yet "
            f"(first: {label_dir / (no_label[0] + '.png')}); run `{prepare_command(NAME, root)}`"
        )
    no_image = [i for i in ids if i not in images]
    if no_image:
        raise data_error(f"{NAME}: {len(no_image):,} {split} image(s) missing (first: {image_dir / no_image[0]}.jpg)")
    return [Sample(images[i], labels[i]) for i in ids]


def check_split(root: Path, split: str) -> SplitCheck:
    base = require(voc_dir(root), NAME, root, "VOC2010 folder")
    ids = read_id_list(split_list(root, split), NAME, root)
    images = files_by_stem(base / "JPEGImages", ".jpg")
    labels = files_by_stem(base / LABEL_DIR, ".png")
    mats = files_by_stem(base / "trainval", ".mat")
    missing, pending = [], []
    for i in ids:
        if i not in images:
            missing.append(f"JPEGImages/{i}.jpg")
        if i not in labels and i in mats:
            pending.append(f"{LABEL_DIR}/{i}.png (from trainval/{i}.mat)")
        elif i not in labels:
            missing.append(f"trainval/{i}.mat")
    return SplitCheck(
        NAME,
        split,
        OFFICIAL_SIZES[split],
        pairs=sum(1 for i in ids if i in images and i in labels),
        missing=missing,
        pending=pending,
    )


def make_card(options: dict[str, Any]) -> DatasetCard:
    return DatasetCard(
        name=NAME,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        splits=dict(OFFICIAL_SIZES),
        base_scale=(2560, 640),
        crop_size=(640, 640),
        test_protocol="resize to (2560, 640) keeping the aspect ratio, sliding window 640x640 with stride 426",
    )


PREPARE_HINT = (
    f"Unpack VOC2010 and the PASCAL-Context trainval annotations into <data root>/{NAME}/ (see "
    f"datasets/README.md), then run `python -m harness.prepare {NAME} --root <data root>` to convert the labels."
)
PREPARER = Preparer(NAME, SPLITS, check_split, conversion_jobs, f"{NAME}: .mat -> PNG train ids")


register(DatasetSpec(NAME, make_card, list_samples, None, {}, PREPARE_HINT, preparer=PREPARER))
