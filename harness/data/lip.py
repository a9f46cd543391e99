"""LIP (Look Into Person, single-person human parsing): 20 classes, train 30,462 / val 10,000.

Layout (``TrainVal_images.zip`` and ``TrainVal_parsing_annotations.zip`` unpacked under
``<data root>/lip/``)::

    lip/
      TrainVal_images/train_images/77_471474.jpg ...     TrainVal_images/val_images/...
      TrainVal_images/train_id.txt, val_id.txt           one image id per line
      TrainVal_parsing_annotations/train_segmentations/77_471474.png ...   (mode L)
      TrainVal_parsing_annotations/val_segmentations/...

The id lists are also accepted directly under ``lip/`` (some copies of the release keep them
there). Label values are the class ids themselves (0 = background is a class); 255, if
present, is ignore. Left/right classes (arms 14/15, legs 16/17, shoes 18/19) swap when an image
is flipped; the card says so (``flip_swap``) and the training pipeline applies it.

Same as sssegmentation's LIPDataset (raw values are the train ids, 20 classes; its test loop
ignores values >= 20), checked in tests/test_dataset_protocols.py.
"""
from __future__ import annotations

from pathlib import Path

from harness.data.cards import bit_palette
from harness.data.folder import Layout, SplitFiles, register_builtin, split_files
from harness.data.preparation import require

NAME = "lip"
OFFICIAL_SIZES = {"train": 30462, "val": 10000}
IMAGE_DIRS = {"train": "train_images", "val": "val_images"}
LABEL_DIRS = {"train": "train_segmentations", "val": "val_segmentations"}

CLASS_NAMES: tuple[str, ...] = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
    "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe",
    "right-shoe",
)  # fmt: skip
FLIP_SWAP: tuple[tuple[int, int], ...] = ((14, 15), (16, 17), (18, 19))

PALETTE = bit_palette(len(CLASS_NAMES))  # visualisation only


def dataset_dir(root: Path) -> Path:
    return Path(root) / NAME


def _id_list(root: Path, split: str) -> Path:
    """The split's id list (under TrainVal_images/, or directly under lip/ in some copies); one-line
    DataError if neither exists."""
    base = dataset_dir(root)
    id_list = base / "TrainVal_images" / f"{split}_id.txt"
    if not id_list.is_file() and (base / f"{split}_id.txt").is_file():
        id_list = base / f"{split}_id.txt"
    return require(id_list, NAME, root, "split list", is_file=True)


def _folders(root: Path, split: str) -> tuple[Path, Path]:
    base = dataset_dir(root)
    return base / "TrainVal_images" / IMAGE_DIRS[split], base / "TrainVal_parsing_annotations" / LABEL_DIRS[split]


def _files(root: Path, split: str) -> SplitFiles:
    return split_files(*_folders(root, split), ".jpg", ".png", _id_list(root, split))


LAYOUT = Layout(NAME, OFFICIAL_SIZES, dataset_dir, _folders, _files)


register_builtin(
    LAYOUT,
    CLASS_NAMES,
    PALETTE,
    "TrainVal_images.zip and TrainVal_parsing_annotations.zip",
    None,
    base_scale=(520, 520),
    keep_ratio=False,
    ratio_range=(0.75, 1.25),
    crop_size=(473, 473),
    flip_swap=FLIP_SWAP,
    rotate_prob=0.6,
    rotate_degrees=30.0,
    test_scale=(473, 473),
    test_protocol="resize to 473x473 (aspect ratio not kept), whole image, single scale",
)
