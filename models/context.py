"""Context modules shared by the baseline heads and their IDR wirings.

- :class:`PyramidPooling` (PSPNet's PPM): pooled branches at several grid sizes, concatenated with
  the input, fused by a 3x3 conv-BN-ReLU.
- :class:`ASPP` (DeepLabV3): an image-pooling branch plus one 1x1 and several dilated 3x3
  branches, fused by a 3x3 conv-BN-ReLU.
- :class:`FPN` (UPerNet): lateral 1x1 convs, top-down sums, 3x3 output convs; every level is
  returned at the finest level's resolution.

Both PPM and ASPP end in their 3x3 fusion conv, so each maps `in_channels -> channels` and can
serve directly as IDR's coarse context module (the official IDRNet uses them that way).

:class:`RefinedContextWiring` is the plug-in wiring (:mod:`models.plugins.wiring`) common to PSPNet,
DeepLabV3 and UPerNet: a context module on F or the backbone's top stage feeds the plug-in's
first stage, and a self-attention block may refine it.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.layers import ConvBNReLU, SelfAttentionBlock
from models.plugins.wiring import PluginSite

PSP_POOL_SCALES = (1, 2, 3, 6)
_ASPP_DILATIONS_OS16 = (1, 6, 12, 18)


def aspp_dilations(output_stride: int) -> tuple[int, ...]:
    """ASPP rates for a backbone output stride: (1, 6, 12, 18) at 16, (1, 12, 24, 36) at 8.

    The first entry is the 1x1 branch; the dilated rates scale inversely with the output stride
    so that each branch keeps its field of view in image pixels (at 32: (1, 3, 6, 9)).
    """
    first, *dilated = _ASPP_DILATIONS_OS16
    return (first, *(max(1, round(d * 16 / output_stride)) for d in dilated))


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) to `size`; the tensor itself when already that size."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PPM: per pool scale s, adaptive average pooling to s x s and a 1x1 conv-BN-ReLU to
    `channels`, upsampled back; the input and all branches are concatenated and fused by a
    3x3 conv-BN-ReLU to `channels`. [B,in,h,w] -> [B,channels,h,w]."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int] = PSP_POOL_SCALES):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvBNReLU(in_channels, channels, 1)) for scale in pool_scales
        )
        self.fuse = ConvBNReLU(in_channels + len(pool_scales) * channels, channels, 3)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pooled = [resize(branch(x), size) for branch in self.branches]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: per dilation d a conv-BN-ReLU (1x1 when d == 1, else 3x3
    with dilation d), then an image-pooling branch (global average, 1x1 conv-BN-ReLU, broadcast
    back); concatenated in that order (the official ASPP's: dilated branches first, pooling last)
    and fused by a 3x3 conv-BN-ReLU to `channels`. [B,in,h,w] -> [B,channels,h,w]."""

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1 if d == 1 else 3, dilation=d) for d in dilations
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, channels, 1))
        self.fuse = ConvBNReLU((len(dilations) + 1) * channels, channels, 3)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(resize(self.image_pool(x), x.shape[2:]))
        return self.fuse(torch.cat(outs, dim=1))


class FPN(nn.Module):
    """UPerNet's feature pyramid over the lower backbone levels plus a given top level.

    `in_channels` lists the widths of the lower levels (backbone stages 1-3). The top level is
    passed in ready-made at `channels` width (a PPM or ASPP output); the lower levels leave their
    3x3 convs `out_channels` wide (default `channels`; MCIBI++ narrows them). Each lower level gets a 1x1
    conv-BN-ReLU lateral; from the top down every level adds the bilinearly upsampled level
    above it; the lower levels then go through a 3x3 conv-BN-ReLU (the top level is taken as
    is); finally all levels are upsampled to the first level's size. Returns the list of the
    `len(in_channels) + 1` maps, each [B,channels,h1,w1].
    """

    def __init__(self, in_channels: Sequence[int], channels: int, out_channels: int | None = None):
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        self.laterals = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels)
        self.outputs = nn.ModuleList(ConvBNReLU(channels, out_channels, 3) for _ in in_channels)
        self.channels = channels
        self.out_channels = out_channels
        self.num_levels = len(in_channels) + 1

    def forward(self, lower: Sequence[torch.Tensor], top: torch.Tensor) -> list[torch.Tensor]:
        levels = [lateral(x) for lateral, x in zip(self.laterals, lower, strict=True)] + [top]
        for i in range(len(levels) - 1, 0, -1):
            levels[i - 1] = levels[i - 1] + resize(levels[i], levels[i - 1].shape[2:])
        outs = [conv(level) for conv, level in zip(self.outputs, levels[:-1])] + [levels[-1]]
        size = outs[0].shape[2:]
        return [resize(out, size) for out in outs]


REFINE_POSITIONS = ("before", "after", "none")


class RefinedContextWiring(nn.Module):
    """Plug-in wiring around a context module whose output may be refined by self-attention.

    Reads: F (the plug-in's bottleneck output) or the backbone's top stage, as `site` says,
    through `context`; stage 1 reads the context output; `refine` runs a self-attention block
    (query = key = the context, `refine_channels` wide, output at the context's width); stage 2
    reads [plug-in output, refined context] (IDR: [F, Z, context], 2C + context channels).
    Subclasses change what stage 2 reads (`stage2_context`).

    `refine_at` says when the refinement runs (the official use_sa_on_coarsecontext_before /
    _after): "before" stage 1 (stage 1 then reads the refined context), "after" stage 1, or
    "none" (no self-attention block at all; the official LIP configs).
    """

    has_context = True

    def __init__(
        self,
        context: nn.Module,
        context_channels: int,
        site: PluginSite,
        refine_channels: int,
        refine_at: str = "after",
    ):
        super().__init__()
        if refine_at not in REFINE_POSITIONS:
            raise ValueError(f"unknown coarse_refine {refine_at!r}; allowed: {', '.join(REFINE_POSITIONS)}")
        self.context = context
        self.site = site
        self.plugin_at = site.plugin_at
        self.refine_at = refine_at
        self.refiner = (
            None
            if refine_at == "none"
            else SelfAttentionBlock(context_channels, context_channels, refine_channels, context_channels)
        )
        self.context_channels = context_channels
        self.stage1_channels = context_channels
        self.stage2_channels = site.plugin_channels + context_channels

    def coarse_context(self, feats: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return self.context(self.site.context_input(feats, pyramid))

    def refine(self, coarse: torch.Tensor) -> torch.Tensor:
        return coarse if self.refiner is None else self.refiner(coarse, coarse)

    def stage2_context(self, coarse: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return coarse
