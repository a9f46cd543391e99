"""The file-based segmentation dataset every benchmark is read through."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from PIL import Image

from harness.data.cards import DatasetCard


class DataError(Exception):
    """Bad or missing data; the message names the file and what was expected."""


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


IMAGE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # Pillow's convert("RGB") ignores EXIF too


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB, decoded by OpenCV (the fastest of Pillow and OpenCV on PNG and JPEG in
    benchmarks/bench_data_pipeline.py; same pixels as Pillow's convert("RGB") for 8-bit RGB,
    grey and palette files, tested in tests/test_data_pipeline.py)."""
    try:
        encoded = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None
    bgr = cv2.imdecode(encoded, IMAGE_FLAGS) if encoded.size else None
    if bgr is None:
        raise DataError(f"{path}: cannot decode image (not a PNG, JPEG or other image OpenCV reads)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label_png(path: Path) -> np.ndarray:
    """Raw label values of a single-channel PNG (mode L or P: palette indices, not colours)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{path}: label PNG has mode {img.mode}; expected L or P (one value per pixel)")
            return np.asarray(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode label ({exc})") from None


class SegmentationDataset(torch.utils.data.Dataset):
    """(image, label) file pairs -> (normalised image tensor, train-id label tensor)."""

    def __init__(
        self,
        samples: list[Sample],
        card: DatasetCard,
        pipeline: Callable,
        decode_label: Callable[[np.ndarray], np.ndarray] | None = None,
        read_label: Callable[[Path], np.ndarray] = read_label_png,
    ):
        self.samples = samples
        self.card = card
        self.pipeline = pipeline
        self.decode_label = decode_label
        self.read_label = read_label
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded image and train-id label, checked for size and class range."""
        sample = self.samples[index]
        image = read_image(sample.image)
        raw = self.read_label(sample.label)
        label = self.decode_label(raw) if self.decode_label is not None else raw
        label = label.astype(np.uint8) if label.max(initial=0) < 256 else label
        if image.shape[:2] != label.shape:
            raise DataError(
                f"{sample.label}: label is {label.shape[1]}x{label.shape[0]} but image {sample.image.name} "
                f"is {image.shape[1]}x{image.shape[0]}"
            )
        bad = (label >= self.card.num_classes) & (label != self.card.ignore_index)
        if bad.any():
            value = int(label[bad][0])
            raise DataError(
                f"{sample.label}: label value {value} outside 0..{self.card.num_classes - 1} "
                f"(ignore {self.card.ignore_index})"
            )
        return image, label

    def __getitem__(self, index: int):
        image, label = self.load(index)
        return self.pipeline(image, label, index, self.epoch)
