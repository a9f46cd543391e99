"""PSPNet: the baseline head and how a plug-in (IDR, MCIBI++) is wired into it.

Baseline (mmsegmentation-style): the pyramid pooling module (pool scales 1, 2, 3, 6) on backbone
stage 4, whose 3x3 fusion conv-BN-ReLU is the head's bottleneck, then Dropout2d and a 1x1
classifier. Output at the stage-4 resolution.

With IDR (official config): the PPM runs on F (C -> C) as the coarse context; stage 1 reads the
PPM output (or F: `stage1_input: feats`, Cityscapes); the PPM output is refined by self-attention
after stage 1 (before it on COCO-Stuff-10k, not at all on LIP: `coarse_refine`); stage 2 reads
[F, Z, refined PPM] (3C channels).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from models.context import PSP_POOL_SCALES, PyramidPooling, RefinedContextWiring
from models.plugins.wiring import PluginSite


class PSPHead(nn.Module):
    main_output = "decode"

    context_modules = ("ppm",)  # harness.measure: the pyramid pooling module

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        num_classes: int,
        dropout: float = 0.1,
        pool_scales: Sequence[int] = PSP_POOL_SCALES,
    ):
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"decode": self.classifier(self.dropout(self.ppm(feats[-1])))}


class PSPNetWiring(RefinedContextWiring):
    """Plug-in wiring for PSPNet.

    coarse_context: reads F [B,C,h,w]; writes PPM(F) [B,C,h,w] (pool scales 1,2,3,6, C -> C).
    stage 1:        reads PPM(F).
    refine:         reads PPM(F); writes SA(PPM(F)) [B,C,h,w] (self-attention, refine_channels wide).
    stage2_context: SA(PPM(F)); stage 2 reads [F, Z, SA(PPM(F))] [B,3C,h,w].
    The backbone pyramid is not read beyond stage 4 (through F).
    """

    def __init__(
        self,
        in_channels: list[int],
        feats_channels: int,
        refine_channels: int,
        site: PluginSite,
        pool_scales: Sequence[int] = PSP_POOL_SCALES,
        refine_at: str = "after",
    ):
        width = site.context_channels or feats_channels
        ppm = PyramidPooling(site.context_input_channels(feats_channels, in_channels), width, pool_scales)
        super().__init__(ppm, width, site, refine_channels, refine_at)
