"""ISNet (Jin et al., ICCV 2021: "ISNet: Integrate Image-Level and Semantic-Level Context for
Semantic Segmentation"), module for module the official sssegmentation 1.7.0 `ISNet`.

F = 3x3 conv-BN-ReLU(backbone stage 4), C wide. Image-level context: a self-attention with query
F and key/value [global mean of F, F] (2C), fused with F by a 3x3 conv-BN-ReLU. Stage 1: a 1x1
conv-BN-ReLU, Dropout2d and a 1x1 classifier on F. Semantic-level context: each pixel takes the
softmax-weighted feature sum of its stage-1 argmax region (the same grouping as IDR's step 3,
:func:`models.idr.group_by_class`), refined by a self-attention with query F and fused with the
image-level context by a 3x3 conv-BN-ReLU. Stage 2: Dropout2d and a 1x1 classifier (the official
ADE20K / Cityscapes / COCO-Stuff-10k configs); with `shortcut` (the official LIP config) the
context is upsampled to backbone stage 1, concatenated with a 1x1 conv(with bias)-BN-ReLU of
stage 1 (48 wide), and stage 2 is a 1x1 conv-BN-ReLU, Dropout2d and a 1x1 classifier. (LIP's
LeakyReLU in the head is `ModelConfig.head_activation`.)
Losses: stage 1 x 0.4, stage 2 x 1.0, auxiliary x 0.4.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from models.context import resize
from models.idr import group_by_class, scatter_to_pixels
from models.layers import ConvBNReLU, PixelClassifier, SelfAttentionBlock


class ImageLevelContext(nn.Module):
    def __init__(self, channels: int, transform_channels: int):
        super().__init__()
        self.attention = SelfAttentionBlock(2 * channels, channels, transform_channels, channels)
        self.fuse = ConvBNReLU(2 * channels, channels, 3)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        image_mean = feats.mean(dim=(2, 3), keepdim=True).expand_as(feats)
        context = self.attention(feats, torch.cat([image_mean, feats], dim=1))
        return self.fuse(torch.cat([feats, context], dim=1))


class SemanticLevelContext(nn.Module):
    def __init__(self, channels: int, transform_channels: int):
        super().__init__()
        self.attention = SelfAttentionBlock(channels, channels, transform_channels, channels)
        self.fuse = ConvBNReLU(2 * channels, channels, 3)

    def forward(self, feats: torch.Tensor, logits: torch.Tensor, image_context: torch.Tensor) -> torch.Tensor:
        reps, _ = group_by_class(feats, logits)
        context = self.attention(feats, scatter_to_pixels(reps, logits))
        return self.fuse(torch.cat([image_context, context], dim=1))


SHORTCUT_CHANNELS = 48


def isnet_options(options: Mapping[str, Any]) -> dict[str, bool]:
    """ISNet's switches from `model.plugin_options` (`shortcut`: the LIP decoder); ValueError naming an unknown key."""
    unknown = sorted(set(options) - {"shortcut"})
    if unknown:
        raise ValueError(f"model.plugin_options: unknown key {unknown[0]!r} for ISNet; allowed: shortcut")
    return {"shortcut": bool(options.get("shortcut", False))}


class ISNetHead(nn.Module):
    main_output = "stage2"

    context_modules = ("image_context", "semantic_context")  # harness.measure: both context blocks

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        feats_channels: int = 512,
        transform_channels: int = 256,
        dropout: float = 0.1,
        shortcut: bool = False,
    ):
        super().__init__()
        c = feats_channels
        self.bottleneck = ConvBNReLU(in_channels[-1], c, 3)
        self.image_context = ImageLevelContext(c, transform_channels)
        self.semantic_context = SemanticLevelContext(c, transform_channels)
        self.stage1 = PixelClassifier(c, c, num_classes, dropout)
        if shortcut:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels[0], SHORTCUT_CHANNELS, 1), nn.BatchNorm2d(SHORTCUT_CHANNELS), nn.ReLU(inplace=True)
            )
            self.stage2 = PixelClassifier(c + SHORTCUT_CHANNELS, c, num_classes, dropout)
        else:
            self.shortcut = None
            self.stage2 = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(c, num_classes, 1))

    def forward(self, pyramid: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feats = self.bottleneck(pyramid[-1])
        image_context = self.image_context(feats)
        stage1 = self.stage1(feats)
        context = self.semantic_context(feats, stage1, image_context)
        if self.shortcut is not None:
            low = self.shortcut(pyramid[0])
            context = torch.cat([resize(context, low.shape[2:]), low], dim=1)
        return {"stage1": stage1, "stage2": self.stage2(context)}
