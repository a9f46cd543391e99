"""LightHead: a small segmentation head kept in its own package, with its IDR wiring.

IDRBench finds it without any change of its own code, by the entry point this package declares
(``lighthead`` in the group ``idrbench.frameworks``, see pyproject.toml) or by the import path
``idrbench_example_head.lighthead:FRAMEWORK``. The contract (README, "Adding a framework"):

* the head is built as ``head(in_channels, num_classes, cfg)``: ``in_channels`` are the widths of
  the backbone's feature pyramid, ``cfg`` the experiment's ``model`` section; its ``forward(pyramid,
  target=None)`` returns a dict of logit maps and the head names the one used for prediction in
  ``main_output`` (each map is trained with ``model.loss_weights[name]``);
* the IDR wiring is built as ``wiring(in_channels, cfg)``: it says what IDR's stage 1 reads
  (``coarse_context``), how that context is refined (``refine``, ``refine_at``) and what stage 2
  reads besides F and Z (``stage2_context``), with the widths ``stage1_channels`` and
  ``stage2_channels``. IDR itself (models.plugins.idr_head.IDRHead) is not copied.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.registry import Framework


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class GlobalContext(nn.Module):
    """x + a 1x1 projection of x's global average, broadcast back over the map."""

    def __init__(self, channels: int):
        super().__init__()
        self.project = conv_bn_relu(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)
        return x + self.project(pooled).expand_as(x)


class LightHead(nn.Module):
    """Stage 4 -> 1x1 reduction -> global context -> 3x3 conv -> classifier."""

    main_output = "decode"

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.reduce = conv_bn_relu(in_channels[-1], channels, 1)
        self.context = GlobalContext(channels)
        self.fuse = conv_bn_relu(channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, pyramid: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.fuse(self.context(self.reduce(pyramid[-1])))
        return {"decode": self.classifier(self.dropout(x))}


class LightWiring(nn.Module):
    """IDR wiring: stage 1 reads GlobalContext(F); no self-attention; stage 2 reads [F, Z, GlobalContext(F)]."""

    refine_at = "none"

    def __init__(self, feats_channels: int):
        super().__init__()
        self.context = GlobalContext(feats_channels)
        self.stage1_channels = feats_channels
        self.stage2_channels = 3 * feats_channels

    def coarse_context(self, feats: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return self.context(feats)

    def refine(self, coarse: torch.Tensor) -> torch.Tensor:
        return coarse

    def stage2_context(self, coarse: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return coarse


FRAMEWORK = Framework(
    head=lambda in_channels, num_classes, cfg: LightHead(in_channels, cfg.head_channels, num_classes, cfg.dropout),
    wiring=lambda in_channels, cfg: LightWiring(cfg.feats_channels),
)
