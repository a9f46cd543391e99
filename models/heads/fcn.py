"""FCN: the baseline head and how a plug-in (IDR, MCIBI++) is wired into it.

Baseline (the official sssegmentation FCN, whose figures the paper compares against): two 3x3
conv-BN-ReLU on backbone stage 4, Dropout2d and a 1x1 classifier. mmsegmentation's FCN also
concatenates the stage-4 input and fuses it with a third 3x3 conv (52.00 M parameters at R50-D8
instead of 40.20 M); that variant is not kept, since no table of the paper uses it.

With IDR (official config): no context module; stage 1 reads the bottleneck features F;
stage 2 reads [F, Z] (2C channels).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import ConvBNReLU
from models.plugins.wiring import PluginSite


class FCNHead(nn.Module):
    main_output = "decode"

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        top = in_channels[-1]
        self.convs = nn.Sequential(ConvBNReLU(top, channels, 3), ConvBNReLU(channels, channels, 3))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"decode": self.classifier(self.dropout(self.convs(feats[-1])))}


class FCNWiring(nn.Module):
    """Plug-in wiring for FCN: no coarse context; stage 2 reads the plug-in output alone (IDR: [F, Z])."""

    refine_at = "none"
    has_context = False

    def __init__(self, feats_channels: int, site: PluginSite):
        super().__init__()
        self.plugin_at = site.plugin_at
        self.stage1_channels = feats_channels
        self.stage2_channels = site.plugin_channels

    def coarse_context(self, feats: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor | None:
        return None

    def refine(self, coarse: torch.Tensor | None) -> torch.Tensor | None:
        return coarse

    def stage2_context(self, coarse: torch.Tensor | None, pyramid: list[torch.Tensor]) -> None:
        return None
