"""TensorBoard event files of every cell, for `tensorboard --logdir results/<experiment>`.

Workers compute a few scalars at each log interval (:func:`training_scalars`: the loss terms,
the learning rate, the gradient norm and the IDR relation statistics) and send them to the
driver with the rest of their reports; the driver alone writes files (:class:`CellEventWriters`):
the event files lie in each cell's folder, `results/<experiment>/cells/<cell id>/`, so
TensorBoard lists every cell by its id. At the end the driver adds the validation mIoU, mAcc,
aAcc, per-class IoU and (context scenes) the context flip rate at the last iteration; with
`train.eval_interval` the workers also send the learning curve (`curve/*`, `curve_iou/*`) and the
relation recovery (`relations/*`, harness/train.py `curve_scalars`). Writer: tensorboardX (a dependency of Ray Tune).
"""
from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import torch
from torch import nn


def gradient_norm(model: nn.Module) -> float | None:
    """L2 norm of all parameter gradients as they are now (after any clipping), None without any."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else None


def pick_count_entropy(pick_counts: torch.Tensor) -> float:
    """Entropy of the deletion picks over classes, divided by log K: 1 when every class was
    picked equally often (the picks' aim), towards 0 when a few classes take all picks."""
    counts = pick_counts.detach().double().cpu()
    p = counts / counts.sum()
    entropy = -(p * p.clamp(min=1e-300).log()).sum()
    return float(entropy / math.log(len(counts))) if len(counts) > 1 else 0.0


def relation_scalars(model: nn.Module) -> dict[str, float]:
    """Mean |R| of the relation matrices (all entries and off the diagonal) and the pick-count
    entropy of every IDR head in `model` (modules with `relations_mean` and `pick_counts`)."""
    heads = [(name, m) for name, m in model.named_modules() if hasattr(m, "relations_mean") and hasattr(m, "pick_counts")]
    out: dict[str, float] = {}
    for name, head in heads:
        prefix = "idr/" if len(heads) == 1 else f"idr/{name}/"
        for which in ("relations_mean", "relations_var"):
            r = getattr(head, which).detach().float().abs()
            off_diagonal = ~torch.eye(r.shape[0], dtype=torch.bool, device=r.device)
            out[f"{prefix}{which}_abs"] = float(r.mean())
            out[f"{prefix}{which}_offdiag_abs"] = float(r[off_diagonal].mean()) if r.shape[0] > 1 else 0.0
        out[f"{prefix}pick_count_entropy"] = pick_count_entropy(head.pick_counts)
    return out


def training_scalars(loss_terms: dict[str, float], lr: float, model: nn.Module) -> dict[str, float]:
    """The scalars of one log interval: mean loss per term and in total, lr, gradient norm, IDR stats."""
    scalars = {f"loss/{name}": value for name, value in loss_terms.items()}
    scalars["loss/total"] = sum(loss_terms.values())
    scalars["lr"] = lr
    norm = gradient_norm(model)
    if norm is not None:
        scalars["grad_norm"] = norm
    return {**scalars, **relation_scalars(model)}


def evaluation_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """val/mIoU, val/mAcc, val/aAcc and val_iou/<class> of a cell's final evaluation."""
    scalars = {f"val/{key}": float(metrics[key]) for key in ("mIoU", "mAcc", "aAcc") if key in metrics}
    for name, value in metrics.get("per_class_iou", {}).items():
        scalars[f"val_iou/{name}"] = float(value)
    flip = (metrics.get("context_flip") or {}).get("flip_rate")
    if flip is not None:
        scalars["val/context_flip_rate"] = float(flip)
    return scalars


class CellEventWriters:
    """One tensorboardX writer per cell folder, opened at the cell's first scalars.

    The first step a cell reports purges later steps of earlier event files in its folder (a
    rerun or a resume from an earlier checkpoint shows one curve, not two).
    """

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders
        self._writers: dict[str, Any] = {}

    def _writer(self, cell_id: str, step: int):
        writer = self._writers.get(cell_id)
        if writer is None:
            from tensorboardX import SummaryWriter

            folder = self.folders[cell_id]
            folder.mkdir(parents=True, exist_ok=True)
            writer = self._writers[cell_id] = SummaryWriter(logdir=str(folder), purge_step=step, flush_secs=10)
        return writer

    def scalars(self, cell_id: str, step: int, values: dict[str, float]) -> None:
        writer = self._writer(cell_id, step)
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                writer.add_scalar(tag, value, step)

    def close(self, cell_id: str | None = None) -> None:
        """Flush and close one cell's writer, or all of them."""
        for key in [cell_id] if cell_id is not None else list(self._writers):
            writer = self._writers.pop(key, None)
            if writer is not None:
                writer.close()


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from every event file in `folder` (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found
