"""Evaluation: the paper's test protocols, a confusion matrix summed over ranks, and the metrics.

Inference modes (small pure functions of a model and a [B,3,H,W] batch of test images, which
the test pipeline has already resized to the dataset's test scale; labels keep their size):

* ``whole`` (:func:`whole_inference`): the model's logits for the whole image.
* ``slide`` (:func:`slide_inference`): windows of ``crop_size`` every ``stride`` pixels (both
  (height, width)); an image smaller than the crop is first padded at the bottom/right with 0
  (the normalised mean colour, as training pads), the last window of a row/column is moved
  back so that it ends at the image border (mmsegmentation's grid). Convention, as
  mmsegmentation's ``slide_inference``: the per-window **logits** are summed per pixel and
  divided by the number of windows covering the pixel; the padding is cut off afterwards.
* ``probs_before_resize=True`` (off by default; sssegmentation's ``use_probs_before_resize``,
  which settings.md gives for the paper's Swin-L runs): the softmax is taken on the model's
  output before any averaging or resizing (per window in slide mode), and the augmentations
  below average those resized probabilities without a second softmax.
* test-time augmentation (:func:`aug_probabilities`): for every scale ratio r (relative to the
  test scale: the test image is resized bilinearly to round(r*H) x round(r*W)) and, with
  ``flip``, for the image and its horizontal mirror, run whole or slide inference, resize the
  logits bilinearly to the label size, take the softmax, flip a mirrored prediction back (and
  exchange the card's left/right class pairs, ``flip_swap``, as sssegmentation does), and
  average the **softmax probabilities** over all augmentations, as mmsegmentation's
  ``aug_test`` does (resize the logits first, then softmax, as its ``inference``).
* With a single augmentation (scales [1.0], no flip) the class map is the argmax of the
  logits resized to the label size (softmax is monotonic, so this is the same decision).

``python -m harness.evaluate`` scores a folder of saved prediction PNGs from any code base
against a dataset split with the same loader and metrics (see :func:`main`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image

from harness.cli import Parser, UsageError
from harness.data import DataError, SegmentationDataset, build_dataset, validate_options
from harness.fileio import write_text_atomic
from harness.metrics import confusion_matrix, segmentation_metrics

if TYPE_CHECKING:
    from harness.config import Cell

Size = tuple[int, int]


# ----------------------------------------------------------------------------- inference modes


def _as_list(batch: list) -> list:
    """Keep samples apart: test images of one batch may differ in size."""
    return batch


def _resize(x: torch.Tensor, size: Size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _model_logits(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Logits at the input's size (a model answering at a lower resolution is upsampled)."""
    return _resize(model(images), tuple(images.shape[-2:]))


def whole_inference(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """[B,K,H,W] logits of the whole [B,3,H,W] images."""
    return _model_logits(model, images)


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis of length `size` (>= crop): every `stride`
    pixels, the last one moved back to end at the border; one window when size <= crop."""
    if size <= crop:
        return [0]
    count = (size - crop + stride - 1) // stride + 1
    return [min(i * stride, size - crop) for i in range(count)]


def _coverage(size: int, starts: list[int], crop: int, device, dtype) -> torch.Tensor:
    """How many windows cover each position of an axis: [size]."""
    pos = torch.arange(size, device=device)
    first = torch.tensor(starts, device=device)[:, None]
    return ((pos >= first) & (pos < first + crop)).sum(0).to(dtype)


def slide_inference(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    crop_size: Size,
    stride: Size,
    window_batch: int = 4,
    probs_before_resize: bool = False,
) -> torch.Tensor:
    """[B,K,H,W] sliding-window logits: per-window logits summed per pixel / windows covering it.

    `crop_size` and `stride` are (height, width). Images smaller than the crop are padded at the
    bottom/right with 0 and the padding is cut from the result. Up to `window_batch` windows (of
    all B images) go through the model in one call. `probs_before_resize`: average per-window
    softmax probabilities instead of logits (the result is then probabilities).
    """
    (ch, cw), (sh, sw) = crop_size, stride
    if min(ch, cw, sh, sw) <= 0 or sh > ch or sw > cw:
        raise ValueError(f"slide: need 0 < stride <= crop_size, got crop {crop_size}, stride {stride}")
    b, _, h, w = images.shape
    pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
    padded = F.pad(images, (0, pad_w, 0, pad_h), value=0.0) if pad_h or pad_w else images
    ph, pw = h + pad_h, w + pad_w
    ys, xs = window_starts(ph, ch, sh), window_starts(pw, cw, sw)
    boxes = [(y, x) for y in ys for x in xs]
    total: torch.Tensor | None = None
    for first in range(0, len(boxes), max(1, window_batch)):
        chunk = boxes[first : first + max(1, window_batch)]
        crops = torch.cat([padded[:, :, y : y + ch, x : x + cw] for y, x in chunk])  # window-major: [n*B,3,ch,cw]
        out = _model_logits(model, crops)
        if probs_before_resize:
            out = out.softmax(1)
        if total is None:
            total = out.new_zeros(b, out.shape[1], ph, pw)
        for j, (y, x) in enumerate(chunk):
            total[:, :, y : y + ch, x : x + cw] += out[j * b : (j + 1) * b]
    assert total is not None
    count = _coverage(ph, ys, ch, total.device, total.dtype)[:, None] * _coverage(pw, xs, cw, total.device, total.dtype)
    return (total / count)[:, :, :h, :w]


def scale_images(images: torch.Tensor, ratio: float) -> torch.Tensor:
    """Images resized bilinearly by `ratio` (to round(ratio*H) x round(ratio*W), at least 1)."""
    h, w = images.shape[-2:]
    size = (max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5)))
    return _resize(images, size)


def _check_protocol(mode: str, crop_size, stride, scales: Sequence[float]) -> None:
    if mode not in ("whole", "slide"):
        raise ValueError(f"unknown inference mode {mode!r}; allowed: whole, slide")
    if mode == "slide" and (crop_size is None or stride is None):
        raise ValueError("slide inference needs crop_size and stride")
    if not scales or any(not r > 0 for r in scales):
        raise ValueError(f"scales must be a non-empty list of positive ratios, got {list(scales)}")


def infer_logits(
    model,
    images: torch.Tensor,
    mode: str = "whole",
    crop_size: Size | None = None,
    stride: Size | None = None,
    window_batch: int = 4,
    probs_before_resize: bool = False,
) -> torch.Tensor:
    """[B,K,H,W] scores at the images' size by whole or sliding-window inference: logits, or
    softmax probabilities with `probs_before_resize`."""
    _check_protocol(mode, crop_size, stride, [1.0])
    if mode == "whole":
        logits = whole_inference(model, images)
        return logits.softmax(1) if probs_before_resize else logits
    return slide_inference(model, images, tuple(crop_size), tuple(stride), window_batch, probs_before_resize)


def swap_channels(scores: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Exchange the class channels of each (a, b) pair: a flipped image's left/right parts."""
    if not pairs:
        return scores
    perm = list(range(scores.shape[1]))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return scores[:, perm]


def aug_probabilities(
    model,
    images: torch.Tensor,
    label_size: Size,
    mode: str = "whole",
    crop_size: Size | None = None,
    stride: Size | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    flip_swap: Sequence[tuple[int, int]] = (),
    window_batch: int = 4,
    probs_before_resize: bool = False,
) -> torch.Tensor:
    """[B,K,h,w] softmax probabilities at the label size averaged over scales x (image, mirror).

    Per augmentation: resize the image by the ratio, infer, resize the scores to the label size,
    softmax, flip a mirrored result back with `flip_swap` pairs exchanged; then the mean.
    """
    _check_protocol(mode, crop_size, stride, scales)
    total: torch.Tensor | None = None
    count = 0
    for ratio in scales:
        scaled = images if ratio == 1.0 else scale_images(images, ratio)
        for mirrored in (False, True) if flip else (False,):
            inp = scaled.flip(-1) if mirrored else scaled
            scores = infer_logits(model, inp, mode, crop_size, stride, window_batch, probs_before_resize)
            probs = _resize(scores, label_size)
            if not probs_before_resize:
                probs = probs.softmax(1)
            if mirrored:
                probs = swap_channels(probs.flip(-1), flip_swap)
            total = probs if total is None else total + probs
            count += 1
    assert total is not None
    return total / count


@torch.no_grad()
def predict(
    model,
    images: torch.Tensor,
    label_size: Size,
    mode: str = "whole",
    crop_size: Size | None = None,
    stride: Size | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    flip_swap: Sequence[tuple[int, int]] = (),
    window_batch: int = 4,
    probs_before_resize: bool = False,
) -> torch.Tensor:
    """[B,h,w] class ids at the label size under the given protocol (defaults: whole, single scale)."""
    label_size = tuple(label_size)
    if not flip and list(scales) == [1.0]:
        scores = infer_logits(model, images, mode, crop_size, stride, window_batch, probs_before_resize)
        return _resize(scores, label_size).argmax(1)
    probs = aug_probabilities(
        model, images, label_size, mode, crop_size, stride, flip, scales, flip_swap, window_batch, probs_before_resize
    )
    return probs.argmax(1)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    device: torch.device,
    batch_size: int = 4,
    rank: int = 0,
    world_size: int = 1,
    loader_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    *,
    mode: str = "whole",
    crop_size: Size | None = None,
    stride: Size | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    window_batch: int = 4,
    probs_before_resize: bool = False,
) -> dict:
    """Score this rank's share of `dataset`; confusion matrices are all-reduced, not predictions.

    The protocol keywords are those of :func:`predict` (``EvalConfig`` fields); flipped
    predictions exchange the card's ``flip_swap`` class pairs.
    """
    card = dataset.card
    k = card.num_classes
    _check_protocol(mode, crop_size, stride, scales)
    protocol = dict(
        mode=mode,
        crop_size=crop_size,
        stride=stride,
        flip=flip,
        scales=list(scales),
        flip_swap=tuple(getattr(card, "flip_swap", ())),
        window_batch=window_batch,
        probs_before_resize=probs_before_resize,
    )
    model.eval()
    shard = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world_size)))
    loader = torch.utils.data.DataLoader(
        shard, batch_size=batch_size, shuffle=False, num_workers=loader_workers, collate_fn=_as_list
    )
    confusion = torch.zeros(k, k, dtype=torch.int64, device=device)
    for step, batch in enumerate(loader):
        same_size = len({tuple(img.shape) for img, _ in batch}) == 1 and len({tuple(l.shape) for _, l in batch}) == 1
        groups = [batch] if same_size else [[item] for item in batch]
        for group in groups:
            images = torch.stack([img for img, _ in group]).to(device)
            labels = torch.stack([lab for _, lab in group]).to(device)
            pred = predict(model, images, tuple(labels.shape[-2:]), **protocol)
            confusion += confusion_matrix(pred, labels, k, card.ignore_index)
        if on_batch is not None:
            on_batch(step + 1, len(loader))
    if dist.is_available() and dist.is_initialized() and world_size > 1:
        dist.all_reduce(confusion, op=dist.ReduceOp.SUM)
    metrics = segmentation_metrics(confusion.cpu(), card.class_names)
    metrics["num_images"] = len(dataset)
    return metrics


def protocol_kwargs(eval_cfg) -> dict:
    """The protocol keywords of :func:`evaluate` from an experiment's ``EvalConfig``."""
    return dict(
        mode=eval_cfg.mode,
        crop_size=eval_cfg.crop_size,
        stride=eval_cfg.stride,
        flip=eval_cfg.flip,
        scales=list(eval_cfg.scales),
        probs_before_resize=eval_cfg.probs_before_resize,
    )


# ----------------------------------------------------------------------------- scoring saved predictions


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


def prediction_paths(dataset: SegmentationDataset, directory: Path) -> list[Path]:
    """DIR/<label file stem>.png for every sample; raises PredictionError if any is missing."""
    stems = [Path(sample.label).stem for sample in dataset.samples]
    seen: dict[str, int] = {}
    for i, stem in enumerate(stems):
        if stem in seen:
            raise PredictionError(
                f"{dataset.samples[i].label}: label file stem {stem!r} is shared with "
                f"{dataset.samples[seen[stem]].label}; predictions named by stem would be ambiguous"
            )
        seen[stem] = i
    paths = [directory / f"{stem}.png" for stem in stems]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PredictionError(
            f"{missing[0]}: prediction file missing ({len(missing)} of {len(paths)} predictions missing under {directory})"
        )
    return paths


def score_predictions(dataset: SegmentationDataset, directory: str | Path) -> dict:
    """Metrics of saved predictions against `dataset`'s labels (the same metrics as :func:`evaluate`).

    A prediction pixel equal to the ignore index is scored as a miss of the ground-truth class
    (a false negative, no false positive for any class), as mmsegmentation does.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PredictionError(f"{directory}: no such predictions folder")
    card = dataset.card
    k, ignore = card.num_classes, card.ignore_index
    paths = prediction_paths(dataset, directory)
    # column k collects "no class" predictions (the ignore index); no label is ever k
    confusion = torch.zeros(k + 1, k + 1, dtype=torch.int64)
    for i, path in enumerate(paths):
        _, label = dataset.load(i)
        pred = read_prediction(path)
        if pred.shape != label.shape:
            raise PredictionError(
                f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but label {Path(dataset.samples[i].label).name} "
                f"is {label.shape[1]}x{label.shape[0]}"
            )
        pred = pred.astype(np.int64)
        bad = (pred >= k) & (pred != ignore)
        if bad.any():
            y, x = np.argwhere(bad)[0]
            raise PredictionError(
                f"{path}: prediction value {int(pred[y, x])} at (x={x}, y={y}) outside 0..{k - 1} (ignore {ignore})"
            )
        pred[pred == ignore] = k
        confusion += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label.astype(np.int64)), k + 1, ignore)
    metrics = segmentation_metrics(confusion, list(card.class_names) + [_UNASSIGNED])
    for key in ("per_class_iou", "per_class_acc"):
        metrics[key].pop(_UNASSIGNED)
    metrics["mIoU"] = _nan_mean(metrics["per_class_iou"].values())
    metrics["mAcc"] = _nan_mean(metrics["per_class_acc"].values())
    metrics["num_images"] = len(dataset)
    metrics["unassigned_pixels"] = int(confusion[:k, k].sum())
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


# ----------------------------------------------------------------------------- re-evaluating a finished cell

PROTOCOLS = ("ss", "flip", "ms", "ms+flip")


class CellError(Exception):
    """A finished cell that cannot be re-evaluated; the message is the whole one-line report."""


def paper_ms_scales(dataset: str) -> list[float]:
    """The paper's multi-scale ratios: 0.5-1.75 (LIP: 0.75, 1, 1.25)."""
    from harness import reference as ref

    return list(ref.LIP_MS_SCALES if dataset == "lip" else ref.SWIN_MS_SCALES)


def protocol_changes(protocol: str, dataset: str) -> dict:
    """`eval` keys of a named protocol: ss, flip, ms or ms+flip with the paper's scales."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    return {"flip": protocol.endswith("flip"), "scales": paper_ms_scales(dataset) if protocol.startswith("ms") else [1.0]}


def protocol_tag(eval_cfg) -> str:
    """A readable name of a test protocol, unique per protocol: e.g. `slide640x640s426_ms0.5-1.75x6+flip`."""
    mode = eval_cfg.mode
    if mode == "slide":
        crop, stride = eval_cfg.crop_size, eval_cfg.stride
        mode += f"{crop[0]}x{crop[1]}s{stride[0]}" + (f"x{stride[1]}" if stride[1] != stride[0] else "")
    scales = list(eval_cfg.scales)
    if scales == [1.0]:
        tag = "ss"
    else:
        tag = "ms" + "-".join(f"{r:g}" for r in scales)
    if eval_cfg.flip:
        tag = "flip" if tag == "ss" else tag + "+flip"
    if eval_cfg.probs_before_resize:
        tag += "_probs"
    return f"{mode}_{tag}"


def read_cell_record(cell_dir: Path) -> tuple[dict, Cell]:
    """A finished cell's record and its resolved configuration; CellError if it has none."""
    from pydantic import ValidationError

    from harness.config import Cell
    from harness.records import RECORD_NAME, read_record

    record_path = Path(cell_dir) / RECORD_NAME
    if not record_path.is_file():
        raise CellError(f"{cell_dir}: no {RECORD_NAME}; expected the folder of a finished cell, "
                        "results/<experiment>/cells/<cell id>")
    try:
        record = read_record(record_path)
        return record, Cell.model_validate(record["config"])
    except (OSError, ValueError, KeyError, ValidationError) as exc:
        raise CellError(f"{record_path}: not a readable cell record ({' '.join(str(exc).split())[:200]})") from None


def evaluate_cell(
    cell_dir: str | Path,
    changes: dict,
    device: torch.device,
    root: str | None = None,
    loader_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[Path, dict]:
    """Evaluate a finished cell's saved model (`model.pt`) under another test protocol.

    `changes` are `eval` keys (mode, crop_size, stride, flip, scales, probs_before_resize,
    batch_size, split). Writes, only when evaluation succeeded, a record of its own beside the
    cell's, `cells/<cell id>@<protocol tag>/record.json`: the cell's record (training figures,
    params, FLOPs) with the new `config.eval`, the new metrics, and `evaluated_from` naming the
    cell. Tables place it by its protocol like any record. Returns (record path, record).
    """
    from pydantic import ValidationError

    from harness.config import EvalConfig
    from harness.records import RECORD_NAME, build_environment, write_json_atomic
    from models import build_segmentor

    cell_dir = Path(cell_dir)
    record, cell = read_cell_record(cell_dir)
    if record.get("evaluated_from"):
        raise CellError(f"{cell_dir}: is a re-evaluation of cell {record['evaluated_from']}; pass that cell's folder")
    try:
        new_eval = EvalConfig.model_validate({**cell.eval.model_dump(), **changes})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["eval", *(str(p) for p in first["loc"])])
        raise CellError(f"{where}: {first['msg']}") from None
    if new_eval == cell.eval:
        raise CellError(f"{cell_dir}: already evaluated with this protocol ({protocol_tag(new_eval)}); see {RECORD_NAME}")
    model_path = cell_dir / record.get("model_file", "model.pt")
    if not model_path.is_file():
        raise CellError(f"{model_path}: the cell's trained model is missing (written when the cell finished)")
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)["model"]
    except Exception as exc:  # unpickling errors, a truncated file, a foreign checkpoint
        raise CellError(f"{model_path}: cannot load the model ({' '.join(str(exc).split())[:200]})") from None
    data_root = root or cell.data_root
    dataset = build_dataset(cell.dataset, data_root, new_eval.split, cell.data_options, train=False)
    card = dataset.card
    model = build_segmentor(cell.framework, cell.idr, card.num_classes, cell.model.model_copy(update={"pretrained": None}),
                            card.ignore_index)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CellError(f"{model_path}: does not fit the cell's model ({' '.join(str(exc).split())[:200]})") from None
    model.to(device)
    start = time.perf_counter()
    metrics = evaluate(model, dataset, device, new_eval.batch_size, loader_workers=loader_workers, on_batch=on_batch,
                       **protocol_kwargs(new_eval))
    eval_time = time.perf_counter() - start
    derived_id = f"{cell.cell_id}@{protocol_tag(new_eval)}"
    config = cell.model_copy(update={"eval": new_eval}).model_dump(mode="json")
    derived = {
        **record,
        "cell_id": derived_id,
        "config": config,
        "metrics": {key: metrics[key] for key in ("mIoU", "mAcc", "aAcc")},
        "per_class_iou": metrics["per_class_iou"],
        "per_class_acc": metrics["per_class_acc"],
        "num_eval_images": metrics["num_images"],
        "eval_time_s": eval_time,
        "eval_device": str(device),
        "evaluated_from": cell.cell_id,
        "model_file": f"../{cell_dir.name}/{model_path.name}",
        **build_environment(),
    }
    out = cell_dir.parent / derived_id / RECORD_NAME
    write_json_atomic(out, derived)
    return out, derived


def _pair(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 640x640, got {text!r}")
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m harness.evaluate",
        description="Score a folder of prediction PNGs (pixel = class id, file stem = the label file's) against a "
        "dataset split, or evaluate a finished cell's saved model under another test protocol (--cell).",
    )
    pngs = parser.add_argument_group("scoring saved predictions")
    pngs.add_argument("--predictions", default=None, help="folder of <label stem>.png predictions")
    pngs.add_argument("--dataset", default=None, help="registered dataset name")
    pngs.add_argument("--split", default=None, help="split whose labels are scored, e.g. val (--cell: default the cell's)")
    pngs.add_argument("--root", default=None, help="data root (as data.root of an experiment; --cell: default the cell's)")
    pngs.add_argument("--options", default=None, help='dataset options as JSON, e.g. {"num_val": 3}')
    cell = parser.add_argument_group("re-evaluating a finished cell (writes cells/<cell id>@<protocol>/record.json)")
    cell.add_argument("--cell", default=None, help="a finished cell's folder, results/<experiment>/cells/<cell id>")
    cell.add_argument("--protocol", choices=PROTOCOLS, default=None,
                      help="ss, flip, ms or ms+flip with the paper's scales (0.5-1.75; LIP 0.75-1.25)")
    cell.add_argument("--scales", type=float, nargs="+", default=None, help="test-scale ratios (overrides --protocol's)")
    cell.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="average with the mirror image")
    cell.add_argument("--mode", choices=("whole", "slide"), default=None, help="whole image or sliding window")
    cell.add_argument("--crop-size", type=_pair, default=None, metavar="HxW", help="sliding-window size")
    cell.add_argument("--stride", type=_pair, default=None, metavar="HxW", help="sliding-window step")
    cell.add_argument("--probs-before-resize", action=argparse.BooleanOptionalAction, default=None,
                      help="softmax before windows/augmentations are averaged (the paper's Swin-L protocol)")
    cell.add_argument("--batch-size", type=int, default=None, help="test images per batch")
    cell.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    cell.add_argument("--workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    return parser


def cell_changes(args: argparse.Namespace, dataset: str) -> dict:
    """The `eval` keys the command line changes (a protocol first, then explicit flags)."""
    changes = protocol_changes(args.protocol, dataset) if args.protocol else {}
    flags = {"scales": args.scales, "flip": args.flip, "mode": args.mode, "crop_size": args.crop_size,
             "stride": args.stride, "probs_before_resize": args.probs_before_resize, "batch_size": args.batch_size,
             "split": args.split}
    changes.update({key: value for key, value in flags.items() if value is not None})
    return changes


def _score_folder(args: argparse.Namespace) -> tuple[str, dict, dict]:
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--split", args.split), ("--root", args.root))
               if value is None]
    if missing:
        raise ValueError(f"--predictions needs {', '.join(missing)}")
    try:
        options = json.loads(args.options) if args.options else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"--options: not valid JSON ({exc})") from None
    if not isinstance(options, dict):
        raise ValueError("--options: expected a JSON object of dataset options")
    validate_options(args.dataset, options)
    dataset = build_dataset(args.dataset, args.root, args.split, options, train=False)
    metrics = score_predictions(dataset, args.predictions)
    title = f"{args.dataset} {args.split}: {metrics['num_images']} images, predictions {args.predictions}"
    return title, metrics, {"dataset": args.dataset, "split": args.split, "predictions": str(args.predictions)}


def _evaluate_cell(args: argparse.Namespace) -> tuple[str, dict, dict]:
    _, cell = read_cell_record(Path(args.cell))
    changes = cell_changes(args, cell.dataset)
    if not changes:
        raise ValueError("--cell: give the protocol to evaluate with (--protocol, --scales, --flip, --mode, ...)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out, record = evaluate_cell(args.cell, changes, device, root=args.root, loader_workers=args.workers)
    metrics = {**record["metrics"], "per_class_iou": record["per_class_iou"], "per_class_acc": record["per_class_acc"],
               "num_images": record["num_eval_images"]}
    title = (f"{record['evaluated_from']} re-evaluated ({protocol_tag_of(record)}), {record['num_eval_images']} "
             f"{record['config']['eval']['split']} images on {device} in {record['eval_time_s']:.1f}s; record {out}")
    return title, metrics, {"cell": record["cell_id"], "evaluated_from": record["evaluated_from"]}


def protocol_tag_of(record: dict) -> str:
    from harness.config import EvalConfig

    return protocol_tag(EvalConfig.model_validate(record["config"]["eval"]))


def main(argv: list[str] | None = None) -> int:
    """0 on success, 2 (one line on stderr) on bad input: arguments, data, predictions, cell."""
    parser = build_parser()

    def fail(message: str) -> int:
        print(" ".join(str(message).split()), file=sys.stderr)
        return 2

    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        return fail(f"{parser.prog}: error: {err}")

    if (args.cell is None) == (args.predictions is None):
        return fail("give either --predictions (score saved PNGs) or --cell (re-evaluate a finished cell)")
    try:
        title, metrics, about = _evaluate_cell(args) if args.cell else _score_folder(args)
    except KeyError as exc:
        return fail(exc.args[0] if exc.args else str(exc))
    except (ValueError, DataError, PredictionError, CellError) as exc:
        return fail(str(exc))
    print(format_report(metrics, title))
    if args.json:
        write_text_atomic(Path(args.json), json.dumps({**about, **metrics}, indent=2, allow_nan=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
