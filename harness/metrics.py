"""Confusion-matrix segmentation metrics (mIoU, mAcc, aAcc, per-class IoU)."""
from __future__ import annotations

import math

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """[K,K] int64 counts, rows = ground truth, columns = prediction; ignore pixels skipped."""
    valid = target != ignore_index
    index = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _nan_mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def segmentation_metrics(confusion: torch.Tensor, class_names: list[str] | tuple[str, ...]) -> dict:
    """mIoU and mAcc average the classes that occur in the ground truth or the predictions
    (a class absent from both has IoU NaN and is left out; one only predicted counts 0), as
    mmsegmentation and sssegmentation's ``Evaluation`` (nanmean) do; in %."""
    conf = confusion.double()
    tp = conf.diag()
    gt = conf.sum(1)
    predicted = conf.sum(0)
    union = gt + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
    total = conf.sum()
    per_class_iou = {name: 100.0 * float(v) for name, v in zip(class_names, iou)}
    per_class_acc = {name: 100.0 * float(v) for name, v in zip(class_names, acc)}
    return {
        "mIoU": _nan_mean(list(per_class_iou.values())),
        "mAcc": _nan_mean(list(per_class_acc.values())),
        "aAcc": 100.0 * float(tp.sum() / total) if total > 0 else float("nan"),
        "per_class_iou": per_class_iou,
        "per_class_acc": per_class_acc,
    }
