"""Pixel-wise cross-entropy shared by the training losses and IDR's deletion pass.

The training loss of the stage-2 prediction and the deletion pass's anchor loss are the same
per-pixel cross-entropy at label size; computing it once (log-softmax, then a gather) and
handing the per-pixel values to the deletion pass saves one full-resolution log-sum-exp over K.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_and_pixels(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over labelled pixels and the per-pixel cross-entropy [B,H,W].

    The mean is bitwise equal to `F.cross_entropy(logits, target, ignore_index=...)` (which is
    log-softmax followed by the NLL loss); ignored pixels hold 0 in the per-pixel map.
    """
    log_probs = F.log_softmax(logits, dim=1)
    mean = F.nll_loss(log_probs, target, ignore_index=ignore_index)
    per_pixel = F.nll_loss(log_probs, target, ignore_index=ignore_index, reduction="none")
    return mean, per_pixel


def pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-pixel cross-entropy [B,H,W]; 0 where the target is `ignore_index`."""
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
