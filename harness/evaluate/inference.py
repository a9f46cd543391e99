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
against a dataset split with the same loader and metrics (see :func:`main`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from harness.data import SegmentationDataset
from harness.metrics import confusion_matrix, segmentation_metrics

if TYPE_CHECKING:
    pass


Size = tuple[int, int]


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
