"""OCRNet (object-contextual representations, Yuan et al. 2020) as a framework: the official
sssegmentation 1.7.0 R50-D8 head.

The auxiliary head (3x3 conv-BN-ReLU 1024 -> 512, Dropout2d, 1x1 to K, on stage 3) is part of
the head here: its logits are the soft object regions OCR gathers by, at inference too, and its
loss (weight 0.4) is the head's "aux" output. A 3x3 conv-BN-ReLU takes stage 4 to C (512); the
spatial gather pools these features into one representation per class (softmax over positions
of each class's region logits); the object context block attends from every pixel to the K
class representations (self-attention: query / key two 1x1 conv-BN-ReLU, value and output one,
transform width C/2 = 256, scaled by its square root), concatenates the result with the pixel
features and fuses them with a 3x3 conv-BN-ReLU (2C -> C); Dropout2d and a 1x1 classifier.
The official ADE20K and Cityscapes configs set the dropout of both classifiers to 0 and the
gather scale to 1 (no query down-sampling), the only setting written here.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import AuxiliaryHead, ConvBNReLU, SelfAttentionBlock

OCR_TRANSFORM_RATIO = 2  # transform width C / 2 (256 at C = 512)


def gather_class_representations(feats: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
    """[B,C,K,1]: for each class, the feature average weighted by its softmax over positions."""
    weights = region_logits.flatten(2).softmax(dim=-1)  # [B,K,N]
    reps = torch.bmm(weights, feats.flatten(2).transpose(1, 2))  # [B,K,C]
    return reps.transpose(1, 2).unsqueeze(-1)


class SpatialGather(nn.Module):
    def forward(self, feats: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
        return gather_class_representations(feats, region_logits)


class ObjectContextBlock(nn.Module):
    """Pixel -> class-representation attention, concatenated with the pixels and fused (3x3)."""

    def __init__(self, channels: int, transform_channels: int):
        super().__init__()
        self.attention = SelfAttentionBlock(channels, channels, transform_channels, channels)
        self.fuse = ConvBNReLU(2 * channels, channels, 3)

    def forward(self, pixels: torch.Tensor, class_reps: torch.Tensor) -> torch.Tensor:
        context = self.attention(pixels, class_reps)
        return self.fuse(torch.cat([context, pixels], dim=1))


class OCRHead(nn.Module):
    main_output = "decode"
    owns_auxiliary = True  # the segmentor builds no separate auxiliary head
    context_modules = ("gather", "object_context")

    def __init__(
        self, in_channels: list[int], channels: int, aux_channels: int, num_classes: int, dropout: float = 0.0
    ):
        super().__init__()
        self.aux = AuxiliaryHead(in_channels[2], aux_channels, num_classes, dropout)
        self.bottleneck = ConvBNReLU(in_channels[-1], channels, 3)
        self.gather = SpatialGather()
        self.object_context = ObjectContextBlock(channels, channels // OCR_TRANSFORM_RATIO)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        regions = self.aux(feats[2])
        pixels = self.bottleneck(feats[-1])
        context = self.object_context(pixels, self.gather(pixels, regions))
        return {"decode": self.classifier(self.dropout(context)), "aux": regions}
