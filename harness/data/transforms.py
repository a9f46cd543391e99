"""Training and test pipelines on numpy arrays (HxWx3 uint8 image, HxW uint8/int label).

Every random choice draws from a generator seeded by (seed, epoch, sample index), so a
sample's augmentation does not depend on which loader process reads it, how many loader
processes there are, or in which order they ask: nothing here touches a global random state
(numpy's, torch's or Python's), and the resampling filters are deterministic.

Training order: resize (keep-ratio fit or fixed size, times a random ratio), random crop
(one-category limit), horizontal flip (with left/right label swaps), rotation, photometric
distortion, normalisation, padding to the crop size with the ignore index.

The training resize is computed only for the window the crop keeps (:class:`CropWindowResize`):
the label through the nearest-neighbour source indices Pillow itself uses (identical to
resizing the whole label), the image with Pillow's bilinear resize of the matching source box
(the same filter and sample positions as the whole-image resize; the filter coefficients are
computed from the box, which Pillow takes in float32, so a pixel can differ by up to two grey
levels from resizing the whole image first: about 1% of the pixels on average, at most ~10% of
one crop, see `tests/test_data_pipeline.py`). `benchmarks/pipeline_reference.py` keeps the
whole-image pipeline this replaced.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from harness.data.cards import DatasetCard

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
MEAN_T = torch.from_numpy(MEAN).view(3, 1, 1)
STD_T = torch.from_numpy(STD).view(3, 1, 1)


def keep_ratio_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Output (h, w) so the image fits in `scale` = (long, short) keeping its aspect ratio."""
    long_side, short_side = max(scale), min(scale)
    factor = min(long_side / max(height, width), short_side / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]):
    h, w = size
    if image.shape[:2] == (h, w):
        return image, label
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if label is not None:
        label = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
    return image, label


def fixed_size(scale: tuple[int, int], ratio: float = 1.0) -> tuple[int, int]:
    """Output (h, w) of a resize that ignores the aspect ratio: `scale` = (height, width) times ratio."""
    return max(1, int(scale[0] * ratio)), max(1, int(scale[1] * ratio))


def target_size(shape: tuple[int, int], scale: tuple[int, int], keep_ratio: bool, ratio: float = 1.0):
    """(h, w) an image of `shape` (h, w) is resized to under a card's scale rules."""
    if not keep_ratio:
        return fixed_size(scale, ratio)
    scaled = (int(max(scale) * ratio), int(min(scale) * ratio))
    return keep_ratio_size(shape[0], shape[1], scaled)


Window = tuple[int, int, int, int]  # (top, left, height, width)


def crop_window(
    shape: tuple[int, int], crop: tuple[int, int], cat_max_ratio: float, ignore_index: int, rng, label_window
) -> Window:
    """Random crop window of an (h, w) label; redrawn up to 10 times while one class covers more
    than cat_max_ratio of it. `label_window(window)` returns the label inside a window."""
    ch, cw = crop
    h, w = shape
    if h <= ch and w <= cw:
        return 0, 0, h, w

    def pick() -> Window:
        y = int(rng.integers(0, max(h - ch, 0) + 1))
        x = int(rng.integers(0, max(w - cw, 0) + 1))
        return y, x, min(ch, h - y), min(cw, w - x)

    window = pick()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            counts = class_counts(label_window(window), ignore_index)
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            window = pick()
    return window


def class_counts(label: np.ndarray, ignore_index: int) -> np.ndarray:
    """Pixel count of each class present in `label`, ignore_index left out (as np.unique's counts)."""
    values = label.ravel()
    if values.dtype != np.uint8:
        values = values[values != ignore_index]
        return np.unique(values, return_counts=True)[1]
    counts = np.bincount(values, minlength=256)
    if 0 <= ignore_index < 256:
        counts[ignore_index] = 0
    return counts[counts > 0]


def random_crop(image, label, crop: tuple[int, int], cat_max_ratio: float, ignore_index: int, rng):
    """Random crop; retried up to 10 times while one class covers more than cat_max_ratio."""

    def label_window(window: Window) -> np.ndarray:
        y, x, h, w = window
        return label[y : y + h, x : x + w]

    y, x, h, w = crop_window(label.shape, crop, cat_max_ratio, ignore_index, rng, label_window)
    return image[y : y + h, x : x + w], label_window((y, x, h, w))


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output position of Pillow's NEAREST resize along one axis.

    Read off Pillow itself (resizing a row of indices), so it matches Pillow exactly.
    """
    row = Image.fromarray(np.arange(in_size, dtype=np.int32)[None, :])
    return np.asarray(row.resize((out_size, 1), Image.NEAREST))[0].astype(np.intp)


@dataclass(frozen=True)
class CropWindowResize:
    """An image and label resized to `size`, of which only the windows asked for are computed."""

    image: np.ndarray
    label: np.ndarray
    size: tuple[int, int]

    @property
    def rows(self) -> np.ndarray:
        return nearest_indices(self.label.shape[0], self.size[0])

    @property
    def cols(self) -> np.ndarray:
        return nearest_indices(self.label.shape[1], self.size[1])

    def label_window(self, window: Window, rows: np.ndarray | None = None, cols: np.ndarray | None = None):
        y, x, h, w = window
        rows = self.rows if rows is None else rows
        cols = self.cols if cols is None else cols
        return self.label.take(rows[y : y + h], axis=0).take(cols[x : x + w], axis=1)

    def image_window(self, window: Window) -> np.ndarray:
        """Bilinear resize (Pillow, antialiased when shrinking) of the source box behind `window`."""
        y, x, h, w = window
        (src_h, src_w), (out_h, out_w) = self.image.shape[:2], self.size
        if (src_h, src_w) == (out_h, out_w):
            return self.image[y : y + h, x : x + w]
        sy, sx = src_h / out_h, src_w / out_w
        box = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
        return np.asarray(Image.fromarray(self.image).resize((w, h), Image.BILINEAR, box=box))


def resize_and_crop(image, label, size: tuple[int, int], card: DatasetCard, rng):
    """Resize to `size` and take the card's random crop, computing only the window kept."""
    resized = CropWindowResize(image, label, size)
    rows, cols = resized.rows, resized.cols

    def label_window(window: Window) -> np.ndarray:
        return resized.label_window(window, rows, cols)

    window = crop_window(size, card.crop_size, card.cat_max_ratio, card.ignore_index, rng, label_window)
    return resized.image_window(window), label_window(window)


def swap_labels(label: np.ndarray, pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Exchange the ids of each pair (e.g. left arm <-> right arm); other values unchanged."""
    if not pairs:
        return label
    if label.dtype == np.uint8:
        lut = np.arange(256, dtype=np.uint8)
        for a, b in pairs:
            lut[a], lut[b] = b, a
        return lut[label]
    out = label.copy()
    for a, b in pairs:
        out[label == a] = b
        out[label == b] = a
    return out


def rotate(image: np.ndarray, label: np.ndarray, degrees: float, ignore_index: int):
    """Rotate both about the centre, same size: image bilinear with black fill, label nearest with ignore."""
    image = np.asarray(
        Image.fromarray(image).rotate(degrees, resample=Image.BILINEAR, expand=False, fillcolor=(0, 0, 0))
    )
    if label.dtype == np.uint8 or label.max(initial=0) < 256:
        lab = Image.fromarray(label.astype(np.uint8, copy=False))
        label = np.asarray(lab.rotate(degrees, resample=Image.NEAREST, expand=False, fillcolor=ignore_index))
    else:
        lab = Image.fromarray(label.astype(np.int32))
        label = np.asarray(lab.rotate(degrees, resample=Image.NEAREST, expand=False, fillcolor=ignore_index))
        label = label.astype(np.int64)
    return image, label


def photometric_distortion(image: np.ndarray, rng) -> np.ndarray:
    """Brightness, contrast, saturation and hue jitter, each applied with probability 0.5."""
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img = img + rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5
    contrast = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    if contrast_first and contrast is not None:
        img = img * contrast
    img = np.clip(img, 0, 255)
    saturation = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    hue = int(rng.integers(-18, 19)) if rng.random() < 0.5 else None
    if saturation is not None or hue is not None:
        hsv = np.asarray(Image.fromarray(img.astype(np.uint8)).convert("HSV")).astype(np.float32)
        if saturation is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
        if hue is not None:
            hsv[..., 0] = (hsv[..., 0] + hue * 256 / 180) % 256
        img = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")).astype(np.float32)
    if not contrast_first and contrast is not None:
        img = np.clip(img * contrast, 0, 255)
    return img.astype(np.uint8)


def to_tensors(image: np.ndarray, label: np.ndarray | None):
    """CHW float32 (image - MEAN) / STD (the same float32 operations as in numpy) and int64 label."""
    pixels = np.require(image, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])
    img_t = torch.from_numpy(pixels).permute(2, 0, 1).to(torch.float32)
    img_t = img_t.sub_(MEAN_T).div_(STD_T).contiguous()
    lab_t = None if label is None else torch.from_numpy(np.ascontiguousarray(label.astype(np.int64)))
    return img_t, lab_t


def pad_to(image: torch.Tensor, label: torch.Tensor, size: tuple[int, int], ignore_index: int):
    h, w = label.shape
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return image, label
    image = torch.nn.functional.pad(image, (0, pw, 0, ph), value=0.0)
    label = torch.nn.functional.pad(label, (0, pw, 0, ph), value=ignore_index)
    return image, label


@dataclass
class TrainPipeline:
    card: DatasetCard
    seed: int = 0

    def __call__(self, image: np.ndarray, label: np.ndarray, index: int, epoch: int):
        rng = np.random.default_rng([self.seed, epoch, index])
        card = self.card
        ratio = rng.uniform(*card.ratio_range)
        size = target_size(label.shape, card.base_scale, card.keep_ratio, ratio)
        image, label = resize_and_crop(image, label, size, card, rng)
        if rng.random() < card.flip_prob:
            image, label = image[:, ::-1], swap_labels(label[:, ::-1], card.flip_swap)
        if card.rotate_prob > 0 and rng.random() < card.rotate_prob:
            degrees = rng.uniform(-card.rotate_degrees, card.rotate_degrees)
            image, label = rotate(np.ascontiguousarray(image), np.ascontiguousarray(label), degrees, card.ignore_index)
        if card.photometric:
            image = photometric_distortion(image, rng)
        image_t, label_t = to_tensors(image, label)
        return pad_to(image_t, label_t, card.crop_size, card.ignore_index)


@dataclass
class TestPipeline:
    card: DatasetCard

    def __call__(self, image: np.ndarray, label: np.ndarray, index: int, epoch: int = 0):
        """Resize the image to the test scale; the label keeps its original size."""
        size = target_size(label.shape, self.card.eval_scale, self.card.keep_ratio)
        image, _ = resize(image, None, size)
        return to_tensors(image, label)
