"""UPerNet: the baseline head and how a plug-in (IDR, MCIBI++) is wired into it.

Baseline (mmsegmentation-style): the pyramid pooling module on backbone stage 4 (to the head
width) is the top level of an FPN over stages 1-3 (1x1 laterals, top-down sums, 3x3 output
convs); the four levels, upsampled to stage 1's resolution (1/4) and concatenated, are fused by a
3x3 conv-BN-ReLU, then Dropout2d and a 1x1 classifier. Output at 1/4.

With IDR (official config): IDR runs before the FPN. The coarse context (ASPP or PPM on F, to
the FPN width; `ModelConfig.upernet_context`) feeds stage 1 at F's resolution (1/8), is refined
by self-attention after stage 1 (`coarse_refine`: before it, or not at all), and becomes
the FPN's top level; stage 2 reads [F, Z, FPN]
at 1/4 (2C + 4 x FPN width channels).
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn as nn

from models.context import ASPP, FPN, PSP_POOL_SCALES, PyramidPooling, RefinedContextWiring, aspp_dilations
from models.layers import ConvBNReLU
from models.plugins.wiring import PluginSite


class UPerHead(nn.Module):
    main_output = "decode"

    context_modules = ("ppm", "fpn")  # harness.measure: the PPM on the top level and the FPN (not the fuse conv)

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
        self.fpn = FPN(in_channels[:-1], channels)
        self.fuse = ConvBNReLU(self.fpn.num_levels * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        levels = self.fpn(feats[:-1], self.ppm(feats[-1]))
        return {"decode": self.classifier(self.dropout(self.fuse(torch.cat(levels, dim=1))))}


class UPerNetWiring(RefinedContextWiring):
    """Plug-in wiring for UPerNet (the plug-in before the FPN).

    coarse_context: reads F [B,C,h,w] (1/8) (or the backbone's top stage, as the plug-in's site
                    says); writes X = ASPP or PPM [B,P,h,w], P = FPN width (or the site's width).
    stage 1:        reads X at 1/8 (its logits are at F's size, as IDR needs).
    refine:         reads X; writes SA(X) [B,P,h,w] (self-attention, refine_channels wide).
    stage2_context: reads backbone stages 1-3 (pyramid[:-1]) and the top level T; builds the FPN on
                    T (laterals on stages 1-3, top-down sums, 3x3 convs on the lower levels, all
                    four levels upsampled to stage 1's size, 1/4); writes [FPN_1, FPN_2, FPN_3, T up]
                    (once per forward).
    plug-in beside (IDR): T = SA(X); stage 2 reads [F up, Z up, FPN] [B,2C+4P,H/4,W/4], as the
                    official decoder_stage2.
    plug-in at top (MCIBI++): T = [plug-in output, X]; the FPN's laterals are T's width, its 3x3
                    convs `fpn_channels` wide; the decoder reads the FPN output alone.
    """

    def __init__(
        self,
        in_channels: list[int],
        feats_channels: int,
        fpn_channels: int,
        refine_channels: int,
        site: PluginSite,
        context: Literal["aspp", "ppm"] = "ppm",
        dilations: Sequence[int] = aspp_dilations(8),
        pool_scales: Sequence[int] = PSP_POOL_SCALES,
        refine_at: str = "after",
    ):
        width = site.context_channels or fpn_channels
        source = site.context_input_channels(feats_channels, in_channels)
        if context == "aspp":
            module = ASPP(source, width, dilations)
        elif context == "ppm":
            module = PyramidPooling(source, width, pool_scales)
        else:
            raise ValueError(f"unknown UPerNet coarse context {context!r}; allowed: aspp, ppm")
        super().__init__(module, width, site, refine_channels, refine_at)
        if site.plugin_at == "top":
            top = site.plugin_channels + width
            self.fpn = FPN(in_channels[:-1], top, fpn_channels)
            self.stage2_channels = (self.fpn.num_levels - 1) * fpn_channels + top
        else:
            self.fpn = FPN(in_channels[:-1], width)
            self.stage2_channels = site.plugin_channels + self.fpn.num_levels * width

    def stage2_context(self, coarse: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(self.fpn(pyramid[:-1], coarse), dim=1)
