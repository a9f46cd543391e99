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

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels

from harness.data.folder import Layout, SplitFiles, nested_split_files, register_builtin
from harness.data.preparation import apply_lut

NAME = "cityscapes"
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


def _folders(root: Path, split: str) -> tuple[Path, Path]:
    base = dataset_dir(root)
    return base / "leftImg8bit" / split, base / "gtFine" / split


def _files(root: Path, split: str) -> SplitFiles:
    return nested_split_files(*_folders(root, split), IMAGE_SUFFIX, LABEL_SUFFIX)


LAYOUT = Layout(NAME, OFFICIAL_SIZES, dataset_dir, _folders, _files)


register_builtin(
    LAYOUT,
    CLASS_NAMES,
    PALETTE,
    "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip",
    decode_label,
    base_scale=(2048, 1024),
    crop_size=(512, 1024),
    test_protocol="whole image at 2048x1024, single scale",
)
