"""Cityscapes (fine annotations): 19 train classes, train 2,975 / val 500.

Layout (``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` unpacked under
``<data root>/cityscapes/``)::

    cityscapes/
      leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png      RGB
      gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      mode L, raw label ids

The raw ``labelIds`` are mapped to the 19 train ids with the table built at import from
``cityscapesscripts.helpers.labels`` (the official definition); every raw id without a train id
(void classes, ``trainId`` 255 or -1, and values the definition does not list) becomes ignore 255,
which is how the official ``createTrainIdLabelImgs`` treats them.

sssegmentation's CityScapesDataset has the same table written out (tests/test_dataset_protocols.py);
it stops on a raw id its table lacks unless told to ignore it, where we ignore it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels

from harness.data.base import Sample
from harness.data.cards import DatasetCard
from harness.data.preparation import (
    Preparer,
    SplitCheck,
    apply_lut,
    check_split_name,
    data_error,
    files_by_stem,
    prepare_command,
    require,
)
from harness.data.registry import DatasetSpec, register

NAME = "cityscapes"
SPLITS = ("train", "val")
OFFICIAL_SIZES = {"train": 2975, "val": 500}
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def _train_classes() -> list:
    by_train_id = {}
    for label in cs_labels.labels:
        if 0 <= label.trainId < 255:
            by_train_id.setdefault(label.trainId, label)
    ids = sorted(by_train_id)
    assert ids == list(range(len(ids))), "cityscapesscripts train ids are not contiguous"
    return [by_train_id[i] for i in ids]


_TRAIN = _train_classes()
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _TRAIN)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(tuple(label.color) for label in _TRAIN)
assert len(CLASS_NAMES) == 19


def _build_lut() -> np.ndarray:
    lut = np.full(256, 255, dtype=np.uint8)
    for label in cs_labels.labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < len(CLASS_NAMES):
            lut[label.id] = label.trainId
    return lut


LABEL_LUT = _build_lut()


def decode_label(raw: np.ndarray) -> np.ndarray:
    if raw.dtype != np.uint8:  # a 16-bit PNG: ids past 255 have no train id either
        raw = np.where(raw > 255, 0, raw).astype(np.uint8)
    return apply_lut(raw, LABEL_LUT)


def dataset_dir(root: Path) -> Path:
    return Path(root) / NAME


def _pairs(root: Path, split: str) -> tuple[dict, dict]:
    """({(city, stem): image}, {(city, stem): label}) of a split."""
    base = dataset_dir(root)
    images, labels = {}, {}
    image_root, label_root = base / "leftImg8bit" / split, base / "gtFine" / split
    cities: set[str] = set()
    for folder in (image_root, label_root):
        if folder.is_dir():
            cities.update(entry.name for entry in folder.iterdir() if entry.is_dir())
    for city in sorted(cities):
        for stem, path in files_by_stem(image_root / city, IMAGE_SUFFIX).items():
            images[(city, stem)] = path
        for stem, path in files_by_stem(label_root / city, LABEL_SUFFIX).items():
            labels[(city, stem)] = path
    return images, labels


def list_samples(root: Path, split: str, options: dict[str, Any]) -> list[Sample]:
    check_split_name(NAME, split, SPLITS)
    base = dataset_dir(root)
    require(base, NAME, root, "dataset folder")
    require(base / "leftImg8bit" / split, NAME, root, "image folder")
    require(base / "gtFine" / split, NAME, root, "annotation folder")
    images, labels = _pairs(root, split)
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        city, stem = unlabelled[0]
        raise data_error(
            f"{NAME}: {len(unlabelled):,} image(s) of {split} have no {LABEL_SUFFIX} file "
            f"(first: {base / 'gtFine' / split / city / (stem + LABEL_SUFFIX)}); "
            f"run `{prepare_command(NAME, root)} --check-only`"
        )
    return [Sample(images[key], labels[key]) for key in sorted(images)]


def check_split(root: Path, split: str) -> SplitCheck:
    base = require(dataset_dir(root), NAME, root, "dataset folder")
    images, labels = _pairs(root, split)
    return SplitCheck(
        NAME,
        split,
        OFFICIAL_SIZES[split],
        pairs=len(set(images) & set(labels)),
        missing=[f"gtFine/{split}/{c}/{s}{LABEL_SUFFIX}" for c, s in sorted(set(images) - set(labels))],
        extra=[str(labels[k].relative_to(base)) + " (no image)" for k in sorted(set(labels) - set(images))],
    )


def make_card(options: dict[str, Any]) -> DatasetCard:
    return DatasetCard(
        name=NAME,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        splits=dict(OFFICIAL_SIZES),
        base_scale=(2048, 1024),
        crop_size=(512, 1024),
        test_protocol="whole image at 2048x1024, single scale",
    )


PREPARE_HINT = (
    f"Unpack leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into <data root>/{NAME}/ "
    f"(see datasets/README.md) and check it with `python -m harness.prepare {NAME} --root <data root>`."
)
PREPARER = Preparer(NAME, SPLITS, check_split)


def _register() -> None:
    register(DatasetSpec(NAME, make_card, list_samples, decode_label, {}, PREPARE_HINT, preparer=PREPARER))


_register()
