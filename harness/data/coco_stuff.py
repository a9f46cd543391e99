"""COCO-Stuff: "coco_stuff10k" (train 9,000 / test 1,000) and "coco_stuff164k" (train 118,287 / val 5,000).

Label protocols (option ``protocol`` of coco_stuff10k, see :data:`LABEL_PROTOCOLS`):

* ``paper`` (coco_stuff10k's default): the official code's. sssegmentation's COCOStuff10kDataset
  trains and scores all 182 COCO-Stuff ids (train id = raw id - 1; raw 0 and 255 -> ignore), the
  11 thing ids COCO never annotated included, and its evaluator averages IoU with ``nanmean``
  over those 182 classes: a class absent from the ground truth but predicted counts as 0. The
  paper's COCO-Stuff-10k figures (and the released models, 182-way) come from this protocol.
* ``annotated``: the 171 classes that are annotated (the 182 ids minus the 11 unused ones), the
  mmsegmentation convention; a raw unused id is an error naming the file.

coco_stuff164k uses the 171 annotated classes. (The official COCOStuffDataset is 182-way too but
applies the 10k decoding, raw 0 -> ignore and raw v -> v - 1, to the stuffthingmaps PNGs whose
raw value is already id - 1, which would drop "person" and shift every other class by one; no
figure of the paper nor any released model uses COCO-Stuff-164k, so we do not follow that code.)
``COCO_STUFF`` below is the single table of ids, train ids and names; the lookup tables are
derived from it.

coco_stuff10k -- the official 10k release (``cocostuff-10k-v1.1.zip``) unpacked under
``<data root>/coco_stuff10k/``::

    coco_stuff10k/
      images/COCO_train2014_000000000077.jpg ...
      annotations/COCO_train2014_000000000077.mat ...   variable S: raw ids, 0 = unlabeled, 1-182
      imageLists/train.txt, test.txt                    image names without extension

The loader reads the ``.mat`` files directly (:func:`label_reader_10k`, the spec's label reader) and
reports an unreadable file, or a raw id that is not a class of the protocol (above 182 other than
255, or under ``annotated`` one of the 11 unused ids), as a DataError naming the file. Raw 0 and
255 -> ignore 255 (as the official dataset class). The official evaluation split
is ``test``; ``val`` is accepted as another name for it (the harness evaluates on ``val`` by default).

coco_stuff164k -- COCO 2017 images plus the COCO-Stuff 2017 annotations under
``<data root>/coco_stuff164k/``::

    coco_stuff164k/
      images/train2017/000000000009.jpg ...   images/val2017/...
      annotations/train2017/000000000009.png ...                 official stuffthingmaps (raw = id - 1, 255 unlabeled)
      annotations/train2017/000000000009_labelTrainIds.png ...   written by `python -m harness.prepare`
      annotations/stuff_train2017.json, instances_train2017.json (optional: used when there are no stuffthingmaps)

`prepare` converts each ``stuffthingmaps`` PNG to train ids; for a split without them it rasterises
the stuff JSON (stuff ids 92-182; 183 "other" stays unlabeled) with pycocotools, painting the
instances JSON's thing masks on top when that file is present. The loader reads the
``*_labelTrainIds.png`` files.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from harness.data.base import DataError, Sample, read_label_png
from harness.data.cards import DatasetCard, bit_palette
from harness.data.preparation import (
    Job,
    Preparer,
    SplitCheck,
    apply_lut,
    check_split_name,
    data_error,
    files_by_stem,
    prepare_command,
    read_id_list,
    require,
)
from harness.data.registry import DatasetSpec, register

# (COCO-Stuff id, train id or None for the 11 unused thing ids, name)
COCO_STUFF: tuple[tuple[int, int | None, str], ...] = (
    (1, 0, "person"), (2, 1, "bicycle"), (3, 2, "car"), (4, 3, "motorcycle"),
    (5, 4, "airplane"), (6, 5, "bus"), (7, 6, "train"), (8, 7, "truck"),
    (9, 8, "boat"), (10, 9, "traffic light"), (11, 10, "fire hydrant"), (12, None, "street sign"),
    (13, 11, "stop sign"), (14, 12, "parking meter"), (15, 13, "bench"), (16, 14, "bird"),
    (17, 15, "cat"), (18, 16, "dog"), (19, 17, "horse"), (20, 18, "sheep"),
    (21, 19, "cow"), (22, 20, "elephant"), (23, 21, "bear"), (24, 22, "zebra"),
    (25, 23, "giraffe"), (26, None, "hat"), (27, 24, "backpack"), (28, 25, "umbrella"),
    (29, None, "shoe"), (30, None, "eye glasses"), (31, 26, "handbag"), (32, 27, "tie"),
    (33, 28, "suitcase"), (34, 29, "frisbee"), (35, 30, "skis"), (36, 31, "snowboard"),
    (37, 32, "sports ball"), (38, 33, "kite"), (39, 34, "baseball bat"), (40, 35, "baseball glove"),
    (41, 36, "skateboard"), (42, 37, "surfboard"), (43, 38, "tennis racket"), (44, 39, "bottle"),
    (45, None, "plate"), (46, 40, "wine glass"), (47, 41, "cup"), (48, 42, "fork"),
    (49, 43, "knife"), (50, 44, "spoon"), (51, 45, "bowl"), (52, 46, "banana"),
    (53, 47, "apple"), (54, 48, "sandwich"), (55, 49, "orange"), (56, 50, "broccoli"),
    (57, 51, "carrot"), (58, 52, "hot dog"), (59, 53, "pizza"), (60, 54, "donut"),
    (61, 55, "cake"), (62, 56, "chair"), (63, 57, "couch"), (64, 58, "potted plant"),
    (65, 59, "bed"), (66, None, "mirror"), (67, 60, "dining table"), (68, None, "window"),
    (69, None, "desk"), (70, 61, "toilet"), (71, None, "door"), (72, 62, "tv"),
    (73, 63, "laptop"), (74, 64, "mouse"), (75, 65, "remote"), (76, 66, "keyboard"),
    (77, 67, "cell phone"), (78, 68, "microwave"), (79, 69, "oven"), (80, 70, "toaster"),
    (81, 71, "sink"), (82, 72, "refrigerator"), (83, None, "blender"), (84, 73, "book"),
    (85, 74, "clock"), (86, 75, "vase"), (87, 76, "scissors"), (88, 77, "teddy bear"),
    (89, 78, "hair drier"), (90, 79, "toothbrush"), (91, None, "hair brush"), (92, 80, "banner"),
    (93, 81, "blanket"), (94, 82, "branch"), (95, 83, "bridge"), (96, 84, "building-other"),
    (97, 85, "bush"), (98, 86, "cabinet"), (99, 87, "cage"), (100, 88, "cardboard"),
    (101, 89, "carpet"), (102, 90, "ceiling-other"), (103, 91, "ceiling-tile"), (104, 92, "cloth"),
    (105, 93, "clothes"), (106, 94, "clouds"), (107, 95, "counter"), (108, 96, "cupboard"),
    (109, 97, "curtain"), (110, 98, "desk-stuff"), (111, 99, "dirt"), (112, 100, "door-stuff"),
    (113, 101, "fence"), (114, 102, "floor-marble"), (115, 103, "floor-other"), (116, 104, "floor-stone"),
    (117, 105, "floor-tile"), (118, 106, "floor-wood"), (119, 107, "flower"), (120, 108, "fog"),
    (121, 109, "food-other"), (122, 110, "fruit"), (123, 111, "furniture-other"), (124, 112, "grass"),
    (125, 113, "gravel"), (126, 114, "ground-other"), (127, 115, "hill"), (128, 116, "house"),
    (129, 117, "leaves"), (130, 118, "light"), (131, 119, "mat"), (132, 120, "metal"),
    (133, 121, "mirror-stuff"), (134, 122, "moss"), (135, 123, "mountain"), (136, 124, "mud"),
    (137, 125, "napkin"), (138, 126, "net"), (139, 127, "paper"), (140, 128, "pavement"),
    (141, 129, "pillow"), (142, 130, "plant-other"), (143, 131, "plastic"), (144, 132, "platform"),
    (145, 133, "playingfield"), (146, 134, "railing"), (147, 135, "railroad"), (148, 136, "river"),
    (149, 137, "road"), (150, 138, "rock"), (151, 139, "roof"), (152, 140, "rug"),
    (153, 141, "salad"), (154, 142, "sand"), (155, 143, "sea"), (156, 144, "shelf"),
    (157, 145, "sky-other"), (158, 146, "skyscraper"), (159, 147, "snow"), (160, 148, "solid-other"),
    (161, 149, "stairs"), (162, 150, "stone"), (163, 151, "straw"), (164, 152, "structural-other"),
    (165, 153, "table"), (166, 154, "tent"), (167, 155, "textile-other"), (168, 156, "towel"),
    (169, 157, "tree"), (170, 158, "vegetable"), (171, 159, "wall-brick"), (172, 160, "wall-concrete"),
    (173, 161, "wall-other"), (174, 162, "wall-panel"), (175, 163, "wall-stone"), (176, 164, "wall-tile"),
    (177, 165, "wall-wood"), (178, 166, "water-other"), (179, 167, "waterdrops"), (180, 168, "window-blind"),
    (181, 169, "window-other"), (182, 170, "wood"),
)  # fmt: skip

CLASS_NAMES: tuple[str, ...] = tuple(name for _, train_id, name in COCO_STUFF if train_id is not None)
ALL_NAMES: tuple[str, ...] = tuple(name for _, _, name in COCO_STUFF)  # the 182 of the paper protocol
TRAIN_ID: dict[int, int] = {cid: train_id for cid, train_id, _ in COCO_STUFF if train_id is not None}
UNUSED_IDS: tuple[int, ...] = tuple(cid for cid, train_id, _ in COCO_STUFF if train_id is None)
MAX_ID = 182
OTHER_ID = 183  # "other" in the stuff JSON: thing pixels, merged
assert [cid for cid, _, _ in COCO_STUFF] == list(range(1, MAX_ID + 1))
assert [TRAIN_ID[c] for c in sorted(TRAIN_ID)] == list(range(171)) and len(UNUSED_IDS) == 11

PALETTE = bit_palette(len(CLASS_NAMES))  # visualisation only
PALETTE_182 = bit_palette(len(ALL_NAMES))
LABEL_PROTOCOLS = ("paper", "annotated")
INVALID = 254  # decoded value of a raw id that is no class: never a train id, so the range check reports it


def _lut(offset: int) -> np.ndarray:
    """Raw value -> train id, where raw = COCO-Stuff id - offset (10k .mat: 0; 164k PNG: 1)."""
    lut = np.full(256, INVALID, dtype=np.uint8)
    for cid, train_id in TRAIN_ID.items():
        lut[cid - offset] = train_id
    lut[0 if offset == 0 else 255] = 255  # unlabeled
    return lut


def _lut_10k_paper() -> np.ndarray:
    """Raw 10k id -> train id of the paper protocol: id - 1 for all 182 ids; 0 and 255 unlabeled."""
    lut = np.full(256, INVALID, dtype=np.uint8)
    lut[1 : MAX_ID + 1] = np.arange(MAX_ID, dtype=np.uint8)
    lut[0] = lut[255] = 255
    return lut


LUT_10K = _lut(0)
LUT_10K[255] = 255  # the official dataset class reads a raw 255 as unlabeled too
LUT_10K_PAPER = _lut_10k_paper()
LUT_STUFFTHINGMAPS = _lut(1)


def invalid_values(raw: np.ndarray, lut: np.ndarray) -> list[int]:
    """Raw values (sorted) that are neither unlabeled nor a used COCO-Stuff id under this table."""
    values = np.unique(raw).astype(np.int64)
    inside = (values >= 0) & (values < len(lut))
    bad = ~inside
    bad[inside] = lut[values[inside]] == INVALID
    return values[bad].tolist()


# ----------------------------------------------------------------------------- 10k: .mat labels


def read_mat_label(path: Path, lut: np.ndarray = LUT_10K) -> np.ndarray:
    """Raw ids of a COCO-Stuff-10k annotation .mat (variable S), each a class or unlabeled under
    `lut` (the protocol's); DataError naming the file otherwise."""
    try:
        data = scipy.io.loadmat(path, variable_names=["S"])
    except Exception as exc:  # missing, truncated, compressed-and-damaged, v7.3 (HDF5), ...
        raise DataError(f"{path}: cannot decode label (not a readable MATLAB file: {exc})") from None
    if "S" not in data:
        raise DataError(f"{path}: no variable 'S' (the COCO-Stuff-10k label map)")
    raw = np.asarray(data["S"])
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise DataError(f"{path}: S is {raw.dtype} with shape {raw.shape}; expected a 2-D integer map")
    bad = invalid_values(raw, lut)
    if bad:
        unused = "" if lut is LUT_10K_PAPER else f" except the unused {', '.join(map(str, UNUSED_IDS))}"
        raise DataError(
            f"{path}: raw label id {bad[0]} is not a COCO-Stuff id (0 = unlabeled, 1-{MAX_ID}{unused}, 255 = unlabeled)"
        )
    return raw


def label_reader_10k(options: dict[str, Any]) -> Callable[[Path], np.ndarray]:
    """Train-id labels of a .mat file under the option's protocol (read, checked, decoded)."""
    protocol = options.get("protocol", DEFAULT_PROTOCOL_10K)
    lut = LUT_10K_PAPER if protocol == "paper" else LUT_10K
    return lambda path: apply_lut(read_mat_label(path, lut), lut)


def check_options_10k(options: dict[str, Any]) -> None:
    protocol = options.get("protocol", DEFAULT_PROTOCOL_10K)
    if protocol not in LABEL_PROTOCOLS:
        raise ValueError(f"{NAME_10K}.protocol: expected one of {', '.join(LABEL_PROTOCOLS)}, got {protocol!r}")


NAME_10K = "coco_stuff10k"
DEFAULT_PROTOCOL_10K = "paper"
SPLITS_10K = ("train", "test")
SPLIT_ALIASES_10K = {"val": "test"}
OFFICIAL_10K = {"train": 9000, "test": 1000}


def dir_10k(root: Path) -> Path:
    return Path(root) / NAME_10K


def list_samples_10k(root: Path, split: str, options: dict[str, Any]) -> list[Sample]:
    check_split_name(NAME_10K, split, (*SPLITS_10K, *SPLIT_ALIASES_10K))
    split = SPLIT_ALIASES_10K.get(split, split)
    base = require(dir_10k(root), NAME_10K, root, "dataset folder")
    image_dir = require(base / "images", NAME_10K, root, "image folder")
    label_dir = require(base / "annotations", NAME_10K, root, "annotation folder")
    names = read_id_list(base / "imageLists" / f"{split}.txt", NAME_10K, root)
    images, labels = files_by_stem(image_dir, ".jpg"), files_by_stem(label_dir, ".mat")
    absent = [n for n in names if n not in images or n not in labels]
    if absent:
        first = absent[0]
        path = image_dir / f"{first}.jpg" if first not in images else label_dir / f"{first}.mat"
        raise data_error(
            f"{NAME_10K}: {len(absent):,} name(s) of imageLists/{split}.txt lack an image or an annotation "
            f"(first: {path}); run `{prepare_command(NAME_10K, root)} --check-only`"
        )
    return [Sample(images[n], labels[n]) for n in names]


def check_split_10k(root: Path, split: str) -> SplitCheck:
    base = require(dir_10k(root), NAME_10K, root, "dataset folder")
    names = read_id_list(base / "imageLists" / f"{split}.txt", NAME_10K, root)
    images, labels = files_by_stem(base / "images", ".jpg"), files_by_stem(base / "annotations", ".mat")
    missing = [f"images/{n}.jpg" for n in names if n not in images]
    missing += [f"annotations/{n}.mat" for n in names if n not in labels]
    listed = set(names)
    for other in SPLITS_10K:  # files of the other split are not extra
        if other != split and (base / "imageLists" / f"{other}.txt").is_file():
            listed.update(read_id_list(base / "imageLists" / f"{other}.txt", NAME_10K, root))
    extra = sorted(
        str(path.relative_to(base)) + " (in no image list)"
        for found in (images, labels)
        for stem, path in found.items()
        if stem not in listed
    )
    pairs = sum(1 for n in names if n in images and n in labels)
    return SplitCheck(NAME_10K, split, OFFICIAL_10K[split], pairs, missing, extra)


# ----------------------------------------------------------------------------- 164k: PNG labels


NAME_164K = "coco_stuff164k"
SPLITS_164K = ("train", "val")
SPLIT_DIRS_164K = {"train": "train2017", "val": "val2017"}
OFFICIAL_164K = {"train": 118287, "val": 5000}
TRAIN_ID_SUFFIX = "_labelTrainIds.png"


def dir_164k(root: Path) -> Path:
    return Path(root) / NAME_164K


def _files_164k(root: Path, split: str) -> tuple[dict[str, Path], dict[str, Path], dict[str, Path]]:
    """(images, train-id labels, raw stuffthingmaps) of a split, keyed by image name."""
    base = dir_164k(root)
    sub = SPLIT_DIRS_164K[split]
    images = files_by_stem(base / "images" / sub, ".jpg")
    labels = files_by_stem(base / "annotations" / sub, TRAIN_ID_SUFFIX)
    pngs = files_by_stem(base / "annotations" / sub, ".png")
    raw = {stem: path for stem, path in pngs.items() if not stem.endswith("_labelTrainIds")}
    return images, labels, raw


def convert_stuffthingmap(path: Path) -> np.ndarray:
    """Train ids of one official stuffthingmaps PNG (raw = COCO-Stuff id - 1, 255 unlabeled)."""
    raw = read_label_png(path)
    bad = invalid_values(raw, LUT_STUFFTHINGMAPS)
    if bad:
        raise data_error(
            f"{path}: raw value {bad[0]} (COCO-Stuff id {bad[0] + 1}) is not a COCO-Stuff class "
            f"(expected 0-{MAX_ID - 1} without the unused ids, or 255)"
        )
    return apply_lut(raw, LUT_STUFFTHINGMAPS).astype(np.uint8)


def _load_coco(path: Path):
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            return COCO(str(path))
    except Exception as exc:
        raise data_error(f"{path}: cannot read COCO JSON ({exc})") from None


def rasterise(sources: list[tuple[Path, Any]], image_id: int) -> np.ndarray:
    """Train ids of one image from COCO-format JSON files, painted in order (later on top)."""
    height = width = None
    for _, coco in sources:
        if image_id in coco.imgs:
            height, width = int(coco.imgs[image_id]["height"]), int(coco.imgs[image_id]["width"])
            break
    label = np.full((height, width), 255, dtype=np.uint8)
    for path, coco in sources:
        for ann in coco.imgToAnns.get(image_id, []):
            cid = int(ann["category_id"])
            if cid == OTHER_ID:
                continue
            if cid not in TRAIN_ID:
                raise data_error(f"{path}: annotation {ann.get('id')} has category {cid}, not a COCO-Stuff class")
            try:
                mask = coco.annToMask(ann)
            except Exception as exc:
                raise data_error(f"{path}: annotation {ann.get('id')}: bad segmentation ({exc})") from None
            if mask.shape != label.shape:
                raise data_error(f"{path}: annotation {ann.get('id')} mask is {mask.shape}, image {label.shape}")
            label[mask > 0] = TRAIN_ID[cid]
    return label


def json_sources(root: Path, split: str) -> list[Path]:
    ann = dir_164k(root) / "annotations"
    sub = SPLIT_DIRS_164K[split]
    return [p for p in (ann / f"stuff_{sub}.json", ann / f"instances_{sub}.json") if p.is_file()]


def conversion_jobs_164k(root: Path) -> list[Job]:
    base = require(dir_164k(root), NAME_164K, root, "dataset folder")
    jobs: list[Job] = []
    for split in SPLITS_164K:
        out_dir = base / "annotations" / SPLIT_DIRS_164K[split]
        _, _, raw = _files_164k(root, split)
        if raw:
            jobs += [
                Job(out_dir / f"{stem}{TRAIN_ID_SUFFIX}", lambda path=path: convert_stuffthingmap(path))
                for stem, path in sorted(raw.items())
            ]
            continue
        sources = [(path, _load_coco(path)) for path in json_sources(root, split)]
        image_ids = sorted({i for _, coco in sources for i in coco.imgs})
        names = {}
        for _, coco in sources:
            for i in image_ids:
                if i in coco.imgs:
                    names.setdefault(i, Path(coco.imgs[i]["file_name"]).stem)
        jobs += [
            Job(out_dir / f"{names[i]}{TRAIN_ID_SUFFIX}", lambda i=i, src=sources: rasterise(src, i)) for i in image_ids
        ]
    return jobs


def list_samples_164k(root: Path, split: str, options: dict[str, Any]) -> list[Sample]:
    check_split_name(NAME_164K, split, SPLITS_164K)
    base = require(dir_164k(root), NAME_164K, root, "dataset folder")
    require(base / "images" / SPLIT_DIRS_164K[split], NAME_164K, root, "image folder")
    require(base / "annotations" / SPLIT_DIRS_164K[split], NAME_164K, root, "annotation folder")
    images, labels, _ = _files_164k(root, split)
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        first = base / "annotations" / SPLIT_DIRS_164K[split] / f"{unlabelled[0]}{TRAIN_ID_SUFFIX}"
        raise data_error(
            f"{NAME_164K}: {len(unlabelled):,} {split} image(s) have no {TRAIN_ID_SUFFIX} label (first: {first}); "
            f"run `{prepare_command(NAME_164K, root)}` to convert the annotations"
        )
    return [Sample(images[s], labels[s]) for s in sorted(images)]


def check_split_164k(root: Path, split: str) -> SplitCheck:
    require(dir_164k(root), NAME_164K, root, "dataset folder")
    sub = SPLIT_DIRS_164K[split]
    images, labels, raw = _files_164k(root, split)
    from_json = not raw and bool(json_sources(root, split))
    missing, pending = [], []
    for s in sorted(set(images) - set(labels)):
        if s in raw or from_json:
            pending.append(f"annotations/{sub}/{s}{TRAIN_ID_SUFFIX}")
        else:
            missing.append(f"annotations/{sub}/{s}.png")
    extra = [f"annotations/{sub}/{s}{TRAIN_ID_SUFFIX} (no image)" for s in sorted(set(labels) - set(images))]
    pairs = len(set(images) & set(labels))
    return SplitCheck(NAME_164K, split, OFFICIAL_164K[split], pairs, missing, extra, pending)


# ----------------------------------------------------------------------------- cards and registration


def _card(name: str, splits: dict[str, int], protocol: str = "annotated") -> DatasetCard:
    paper = protocol == "paper"
    return DatasetCard(
        name=name,
        class_names=ALL_NAMES if paper else CLASS_NAMES,
        palette=PALETTE_182 if paper else PALETTE,
        splits=dict(splits),
        base_scale=(2048, 512),
        crop_size=(512, 512),
        test_protocol="resize to (2048, 512) keeping the aspect ratio, whole image, single scale",
        label_protocol=f"{protocol} ({len(ALL_NAMES) if paper else len(CLASS_NAMES)} classes)",
    )


def make_card_10k(options: dict[str, Any]) -> DatasetCard:
    check_options_10k(options)
    return _card(NAME_10K, OFFICIAL_10K, options.get("protocol", DEFAULT_PROTOCOL_10K))


def make_card_164k(options: dict[str, Any]) -> DatasetCard:
    return _card(NAME_164K, OFFICIAL_164K)


HINT_10K = (
    f"Unpack cocostuff-10k-v1.1.zip into <data root>/{NAME_10K}/ (see datasets/README.md) and check it with "
    f"`python -m harness.prepare {NAME_10K} --root <data root>`."
)
HINT_164K = (
    f"Put the COCO 2017 images and the COCO-Stuff stuffthingmaps under <data root>/{NAME_164K}/ (see "
    f"datasets/README.md), then run `python -m harness.prepare {NAME_164K} --root <data root>` to convert them."
)
PREPARERS = (
    Preparer(NAME_10K, SPLITS_10K, check_split_10k),
    Preparer(NAME_164K, SPLITS_164K, check_split_164k, conversion_jobs_164k, f"{NAME_164K}: labels -> train ids"),
)


def _register() -> None:
    register(DatasetSpec(NAME_10K, make_card_10k, list_samples_10k, None, {"protocol": DEFAULT_PROTOCOL_10K}, HINT_10K,
                         preparer=PREPARERS[0], label_reader_for=label_reader_10k, check_options=check_options_10k))
    register(DatasetSpec(NAME_164K, make_card_164k, list_samples_164k, None, {}, HINT_164K, preparer=PREPARERS[1]))


_register()
