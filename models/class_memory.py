"""What the class memories of MCIBI (models/heads/mcibi.py) and MCIBI++ (models/plugins/mcibipp.py)
share: the per-class statistics of a step's labelled pixels that both updates start from, the
soft per-pixel read of the class vectors, averaging buffers across DDP ranks (IDR's class buffers,
models/plugins/idr_head.py, too), and reading their options from `model.plugin_options`.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, NamedTuple, TypeVar

import torch
import torch.distributed as dist

Options = TypeVar("Options")


class ClassPixels(NamedTuple):
    """A step's labelled pixels [N,C] with their classes [N], and per class the pixel count [K]
    and mean feature [K,C] (zero for a class with no pixel)."""

    pixels: torch.Tensor
    labels: torch.Tensor
    counts: torch.Tensor
    means: torch.Tensor


def class_sums(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum of `values` [N,...] per class of `labels` [N] -> [K,...]."""
    out = torch.zeros(num_classes, *values.shape[1:], dtype=values.dtype, device=values.device)
    return out.index_add_(0, labels, values)


def class_pixels(feats: torch.Tensor, target: torch.Tensor, ignore_index: int, num_classes: int) -> ClassPixels:
    """The labelled pixels of feats [B,C,H,W] (at the label size) under target [B,H,W], grouped by class."""
    c = feats.shape[1]
    pixels = feats.permute(0, 2, 3, 1).reshape(-1, c)
    labels = target.reshape(-1)
    valid = labels != ignore_index
    pixels, labels = pixels[valid], labels[valid].long()
    counts = torch.bincount(labels, minlength=num_classes)
    means = class_sums(pixels, labels, num_classes) / counts.clamp(min=1).unsqueeze(1).to(pixels.dtype)
    return ClassPixels(pixels, labels, counts, means)


def keep_unseen(updated: torch.Tensor, memory: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """`updated` for the classes with pixels in this step, `memory` for the others (rows: classes)."""
    return torch.where((counts > 0).unsqueeze(1), updated, memory)


def soft_class_read(logits: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Each pixel's softmax(logits)-weighted sum of the class vectors: [B,K,h,w], [K,C] -> [B,C,h,w]."""
    weights = torch.softmax(logits, dim=1)
    return torch.einsum("bkhw,kc->bchw", weights, vectors.to(weights.dtype))


def average_across_ranks(*buffers: torch.Tensor) -> None:
    """In place: the mean of each buffer over the DDP ranks (nothing when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in buffers:
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(dist.get_world_size())


def options_from_mapping(options_class: type[Options], options: Mapping[str, Any], scheme: str) -> Options:
    """A frozen options dataclass from `model.plugin_options`; ValueError naming an unknown key."""
    known = {f.name for f in fields(options_class)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"model.plugin_options: unknown key {unknown[0]!r} for {scheme}; allowed: {', '.join(sorted(known))}")
    return options_class(**dict(options))
