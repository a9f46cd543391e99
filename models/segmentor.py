"""Backbone + decode head + auxiliary head, with the training losses."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.plugins.idr_head import DELETION_OUTPUT
from models.losses import cross_entropy_and_pixels

#: A head's output under this key is a dict of loss terms it computed itself (e.g. MCIBI's memory
#: loss), each weighted by `loss_weights[name]` like the logit maps' losses.
OWN_LOSSES = "own_losses"


class Segmentor(nn.Module):
    """`forward(images)` gives class logits at image size; `losses(images, target)` the weighted losses.

    Every logit map the head returns is upsampled to the label size and scored with
    cross-entropy (ignore index excluded), weighted by `loss_weights[name]`; the auxiliary
    head on backbone stage 3 adds `loss_weights["aux"]`; loss terms the head computed itself
    (under OWN_LOSSES) are weighted the same way.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        aux_head: nn.Module | None,
        loss_weights: dict[str, float],
        ignore_index: int = 255,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.loss_weights = dict(loss_weights)
        self.ignore_index = ignore_index

    def forward(self, images: torch.Tensor, target: torch.Tensor | None = None):
        pyramid = self.backbone(images)
        if self.training and target is not None:
            return self._losses(pyramid, target)
        logits = self.head(pyramid)[self.head.main_output]
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def _losses(self, pyramid: list[torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = dict(self.head(pyramid, target))
        pending = outputs.pop(DELETION_OUTPUT, None)
        own_losses = outputs.pop(OWN_LOSSES, {})
        if self.aux_head is not None:
            outputs["aux"] = self.aux_head(pyramid[2])
        losses, anchor_loss = {}, None
        for name, logits in outputs.items():
            up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            if pending is not None and name == self.head.main_output:
                loss, anchor_loss = cross_entropy_and_pixels(up, target, self.ignore_index)
            else:
                loss = F.cross_entropy(up, target, ignore_index=self.ignore_index)
            losses[name] = self.loss_weights[name] * loss
        for name, loss in own_losses.items():
            losses[name] = self.loss_weights[name] * loss
        if pending is not None:
            with torch.no_grad():  # IDR step 8 reuses the stage-2 loss of each pixel as its anchor
                self.head.record_deletion(anchor_loss.detach(), pending.deleted_logits, pending.deleted, target)
        return losses
