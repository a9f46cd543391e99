"""DeepLabV3: the baseline head and how a plug-in (IDR, MCIBI++) is wired into it.

Baseline (official): ASPP on backbone stage 4 (a 1x1 branch and 3x3 branches dilated 12/24/36
at output stride 8, 6/12/18 at 16, then image pooling), whose 3x3 fusion conv-BN-ReLU is
the head's bottleneck, then Dropout2d and a 1x1 classifier. Output at the stage-4 resolution.

With IDR (official config): ASPP runs on F (C -> C) as the coarse context; stage 1 reads the
ASPP output; it is refined by self-attention after stage 1 (before it on COCO-Stuff-10k, not
at all on LIP: `coarse_refine`); stage 2 reads [F, Z, refined ASPP]
(3C channels).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from models.context import ASPP, RefinedContextWiring, aspp_dilations
from models.plugins.wiring import PluginSite


class ASPPHead(nn.Module):
    main_output = "decode"

    context_modules = ("aspp",)  # harness.measure: the atrous spatial pyramid pooling

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        num_classes: int,
        dropout: float = 0.1,
        dilations: Sequence[int] = aspp_dilations(8),
    ):
        super().__init__()
        self.aspp = ASPP(in_channels[-1], channels, dilations)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"decode": self.classifier(self.dropout(self.aspp(feats[-1])))}


class DeepLabV3Wiring(RefinedContextWiring):
    """Plug-in wiring for DeepLabV3.

    coarse_context: reads F [B,C,h,w]; writes ASPP(F) [B,C,h,w] (image pooling + dilations
                    1,12,24,36 at output stride 8 / 1,6,12,18 at 16, C -> C).
    stage 1:        reads ASPP(F).
    refine:         reads ASPP(F); writes SA(ASPP(F)) [B,C,h,w] (self-attention, refine_channels wide).
    stage2_context: SA(ASPP(F)); stage 2 reads [F, Z, SA(ASPP(F))] [B,3C,h,w].
    The backbone pyramid is not read beyond stage 4 (through F).
    """

    def __init__(
        self,
        in_channels: list[int],
        feats_channels: int,
        refine_channels: int,
        site: PluginSite,
        dilations: Sequence[int] = aspp_dilations(8),
        refine_at: str = "after",
    ):
        width = site.context_channels or feats_channels
        aspp = ASPP(site.context_input_channels(feats_channels, in_channels), width, dilations)
        super().__init__(aspp, width, site, refine_channels, refine_at)
