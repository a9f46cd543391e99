"""Scoring a folder of saved prediction PNGs from any code base against a dataset split."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from harness.data import SegmentationDataset
from harness.metrics import segmentation_metrics

if TYPE_CHECKING:
    pass


class PredictionError(Exception):
    """A missing or malformed prediction file; the message is the whole one-line report."""


_UNASSIGNED = "\0unassigned"


def _nan_mean(values) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def read_prediction(path: Path) -> np.ndarray:
    """Class ids of a single-channel prediction PNG (mode L or P: palette indices; I/I;16 too)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise PredictionError(f"{path}: prediction PNG has mode {img.mode}; expected L or P (class id per pixel)")
            return np.asarray(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise PredictionError(f"{path}: cannot decode prediction ({exc})") from None


CITYSCAPES = "cityscapes"
IDS_CHOICES = ("labelids", "trainids")
# cityscapesscripts' own matching rule (evalPixelLevelSemanticLabeling.getPrediction): any PNG whose
# name contains the ground truth's <city>_<seq>_<frame>
_TRIPLE = re.compile(r"([A-Za-z]+_\d{6}_\d{6})")


def cityscapes_triple(name: str) -> str | None:
    """`frankfurt_000000_000019` from any file name that contains it, else None."""
    found = _TRIPLE.search(name)
    return found.group(1) if found else None


def sample_names(dataset: SegmentationDataset) -> list[tuple[str, ...]]:
    """The names a prediction of each sample may carry: Cityscapes its `<city>_<seq>_<frame>`,
    any other dataset the label file's stem or the image file's stem."""
    if dataset.card.name == CITYSCAPES:
        return [(cityscapes_triple(Path(s.label).name) or Path(s.label).stem,) for s in dataset.samples]
    return [tuple(dict.fromkeys((Path(s.label).stem, Path(s.image).stem))) for s in dataset.samples]


def _owners(dataset: SegmentationDataset, names: list[tuple[str, ...]]) -> dict[str, int]:
    """name -> sample index; PredictionError if two samples share a name."""
    owner: dict[str, int] = {}
    for i, options in enumerate(names):
        for name in options:
            if owner.setdefault(name, i) != i:
                raise PredictionError(
                    f"{dataset.samples[i].label}: shares the name {name!r} with {dataset.samples[owner[name]].label}; "
                    "predictions named after it would be ambiguous"
                )
    return owner


def prediction_paths(dataset: SegmentationDataset, directory: Path) -> list[Path]:
    """One PNG under `directory` (searched recursively) per sample, matched by :func:`sample_names`.

    Files that match no sample are left alone; two files for one sample, or a sample without a
    file, raise PredictionError naming the files.
    """
    names = sample_names(dataset)
    owner = _owners(dataset, names)
    by_triple = dataset.card.name == CITYSCAPES
    found: dict[int, Path] = {}
    for path in sorted(directory.rglob("*.png")):
        index = owner.get(cityscapes_triple(path.name) if by_triple else path.stem)
        if index is None:
            continue
        if index in found:
            raise PredictionError(
                f"{found[index]} and {path}: two predictions for {Path(dataset.samples[index].label).name}; keep one"
            )
        found[index] = path
    missing = [i for i in range(len(names)) if i not in found]
    if missing:
        first = names[missing[0]]
        expected = f"a PNG whose name contains {first[0]}" if by_triple else " or ".join(f"{n}.png" for n in first)
        raise PredictionError(
            f"{directory / (first[0] + '.png')}: prediction file missing ({len(missing)} of {len(names)} predictions "
            f"missing under {directory}; expected {expected})"
        )
    return [found[i] for i in range(len(names))]


def class_lut(num_classes: int, ignore: int, ids: str | None, size: int) -> np.ndarray:
    """Prediction value -> class id (num_classes: no class, -1: not allowed) for `size` values.

    `ids="labelids"`: Cityscapes label ids mapped with cityscapesscripts' table (the harness's
    Cityscapes loader table); a void label id is "no class", as cityscapesscripts' evaluator
    scores it (a miss of the ground-truth class). Otherwise the values are train ids.
    """
    lut = np.full(size, -1, dtype=np.int64)
    if ids == "labelids":
        from cityscapesscripts.helpers.labels import id2label

        from harness.data.cityscapes import LABEL_LUT

        valid = np.array([i for i in id2label if 0 <= i < size])
        lut[valid] = np.where(LABEL_LUT[valid] < num_classes, LABEL_LUT[valid], num_classes)
        return lut
    lut[:num_classes] = np.arange(num_classes)
    lut[ignore] = num_classes
    return lut


def detect_cityscapes_ids(first_seen: dict[int, tuple[Path, int, int]], num_classes: int, ignore: int) -> tuple[str, str]:
    """("labelids" | "trainids", why): label ids if any value is past the train ids, else train ids."""
    beyond = sorted(v for v in first_seen if num_classes <= v and v != ignore)
    if beyond:
        path = first_seen[beyond[0]][0]
        return "labelids", f"labelIds detected (value {beyond[0]} in {path.name} is no train id; --ids trainids to override)"
    return "trainids", f"trainIds detected (every value in 0..{num_classes - 1} or {ignore}; --ids labelids to override)"


def _note_values(pred: np.ndarray, path: Path, first_seen: dict[int, tuple[Path, int, int]]) -> None:
    """Remember where each prediction value occurs first (file, x, y), for detection and errors."""
    for value in np.flatnonzero(np.bincount(pred.ravel()) > 0):
        if int(value) not in first_seen:
            y, x = np.argwhere(pred == value)[0]
            first_seen[int(value)] = (path, int(x), int(y))


def _check_values(first_seen: dict, lut: np.ndarray, allowed: str) -> None:
    bad = [v for v in sorted(first_seen) if v >= len(lut) or lut[v] < 0]
    if bad:
        path, x, y = first_seen[bad[0]]
        raise PredictionError(f"{path}: prediction value {bad[0]} at (x={x}, y={y}) outside {allowed}")


def _raw_confusion(dataset: SegmentationDataset, paths: list[Path], size: int) -> tuple[np.ndarray, dict]:
    """[K, size] counts of (ground-truth class, raw prediction value) and where each value occurs first."""
    card = dataset.card
    k, ignore = card.num_classes, card.ignore_index
    raw = np.zeros(k * size, dtype=np.int64)
    first_seen: dict[int, tuple[Path, int, int]] = {}
    for i, path in enumerate(paths):
        _, label = dataset.load(i)
        pred = read_prediction(path)
        if pred.shape != label.shape:
            raise PredictionError(
                f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but label {Path(dataset.samples[i].label).name} "
                f"is {label.shape[1]}x{label.shape[0]}"
            )
        pred = pred.astype(np.int64)
        _note_values(pred, path, first_seen)
        if int(pred.max()) >= size:
            _check_values(first_seen, np.zeros(size, dtype=np.int64), f"0..{size - 1}")
        valid = label != ignore
        raw += np.bincount(label[valid].astype(np.int64) * size + pred[valid], minlength=k * size)
    return raw.reshape(k, size), first_seen


def score_predictions(dataset: SegmentationDataset, directory: str | Path, ids: str | None = None) -> dict:
    """Metrics of saved predictions against `dataset`'s labels (the same metrics as :func:`evaluate`).

    A prediction pixel equal to the ignore index (or a Cityscapes void label id) is scored as a
    miss of the ground-truth class (a false negative, no false positive for any class), as
    mmsegmentation and cityscapesscripts do. Cityscapes predictions hold label ids or train ids
    (`ids`; detected from the values when None, and said so in ``metrics["ids_note"]``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PredictionError(f"{directory}: no such predictions folder")
    card = dataset.card
    k, ignore = card.num_classes, card.ignore_index
    if ids is not None and card.name != CITYSCAPES:
        raise PredictionError(f"--ids applies to {CITYSCAPES} only; {card.name} predictions hold class ids")
    size = max(256, ignore + 1)
    raw, first_seen = _raw_confusion(dataset, prediction_paths(dataset, directory), size)
    note = None
    if card.name == CITYSCAPES and ids is None:
        ids, note = detect_cityscapes_ids(first_seen, k, ignore)
    lut = class_lut(k, ignore, ids, size)
    allowed = "the Cityscapes label ids 0..33" if ids == "labelids" else f"0..{k - 1} (ignore {ignore})"
    _check_values(first_seen, lut, allowed)
    # column k collects "no class" predictions; no label is ever k
    confusion = np.zeros((k + 1, k + 1), dtype=np.int64)
    confusion[:k] = raw @ np.eye(k + 1, dtype=np.int64)[np.maximum(lut, 0)]
    metrics = segmentation_metrics(torch.from_numpy(confusion), list(card.class_names) + [_UNASSIGNED])
    for key in ("per_class_iou", "per_class_acc"):
        metrics[key].pop(_UNASSIGNED)
    metrics["mIoU"] = _nan_mean(metrics["per_class_iou"].values())
    metrics["mAcc"] = _nan_mean(metrics["per_class_acc"].values())
    metrics["num_images"] = len(dataset)
    metrics["unassigned_pixels"] = int(confusion[:k, k].sum())
    if ids is not None:
        metrics["ids"] = ids
        metrics["ids_note"] = note or f"{ids} (--ids)"
    return metrics


def format_report(metrics: dict, title: str) -> str:
    names = list(metrics["per_class_iou"])
    width = max([len("class")] + [len(n) for n in names])
    lines = [
        title,
        f"mIoU {metrics['mIoU']:.2f}  mAcc {metrics['mAcc']:.2f}  aAcc {metrics['aAcc']:.2f}",
        f"{'class':<{width}}  {'IoU':>7}  {'Acc':>7}",
    ]
    for name in names:
        lines.append(f"{name:<{width}}  {metrics['per_class_iou'][name]:7.2f}  {metrics['per_class_acc'][name]:7.2f}")
    return "\n".join(lines)
