"""Today's training pipeline as it was before the crop-window resize, kept as the reference.

`tests/test_data_pipeline.py` holds the current pipeline against it (same seed, same sample:
same crop, flip and distortions; differences only where the resampling or decoding differs,
as documented in :mod:`harness.data.transforms`) and `benchmarks/bench_data_pipeline.py`
times both. It decodes with Pillow and resizes the whole image before cropping.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import numpy as np
import torch
from PIL import Image

from harness.data import base
from harness.data.cards import DatasetCard
from harness.data.transforms import (
    pad_to,
    photometric_distortion,
    rotate,
    swap_labels,
    target_size,
)

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def read_image_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def resize_whole(image: np.ndarray, label: np.ndarray, size: tuple[int, int]):
    h, w = size
    if image.shape[:2] == (h, w):
        return image, label
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
    return image, label


def crop_resized(image, label, crop: tuple[int, int], cat_max_ratio: float, ignore_index: int, rng):
    """Random crop of the resized pair; retried up to 10 times while one class covers more than cat_max_ratio."""
    ch, cw = crop
    h, w = label.shape
    if h <= ch and w <= cw:
        return image, label

    def pick():
        return int(rng.integers(0, max(h - ch, 0) + 1)), int(rng.integers(0, max(w - cw, 0) + 1))

    y, x = pick()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            window = label[y : y + ch, x : x + cw]
            _, counts = np.unique(window[window != ignore_index], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            y, x = pick()
    return image[y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]


def to_tensors_numpy(image: np.ndarray, label: np.ndarray):
    img = (image.astype(np.float32) - MEAN) / STD
    img_t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return img_t, torch.from_numpy(np.ascontiguousarray(label.astype(np.int64)))


@dataclass
class ReferenceTrainPipeline:
    """The training pipeline before the crop-window resize (whole-image resize, then crop)."""

    card: DatasetCard
    seed: int = 0

    def __call__(self, image: np.ndarray, label: np.ndarray, index: int, epoch: int):
        rng = np.random.default_rng([self.seed, epoch, index])
        card = self.card
        ratio = rng.uniform(*card.ratio_range)
        image, label = resize_whole(image, label, target_size(label.shape, card.base_scale, card.keep_ratio, ratio))
        image, label = crop_resized(image, label, card.crop_size, card.cat_max_ratio, card.ignore_index, rng)
        if rng.random() < card.flip_prob:
            image, label = image[:, ::-1], swap_labels(label[:, ::-1], card.flip_swap)
        if card.rotate_prob > 0 and rng.random() < card.rotate_prob:
            degrees = rng.uniform(-card.rotate_degrees, card.rotate_degrees)
            image, label = rotate(np.ascontiguousarray(image), np.ascontiguousarray(label), degrees, card.ignore_index)
        if card.photometric:
            image = photometric_distortion(image, rng)
        image_t, label_t = to_tensors_numpy(image, label)
        return pad_to(image_t, label_t, card.crop_size, card.ignore_index)


def load_with_pillow(dataset, index: int):
    """`SegmentationDataset.load` with the image decoded by Pillow, as before."""
    with patch.object(base, "read_image", read_image_pillow):
        return dataset.load(index)
