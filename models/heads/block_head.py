"""The head shape shared by Non-local, DNL and CCNet (sssegmentation 1.7.0).

A 3x3 conv-BN-ReLU takes backbone stage 4 down to `channels`, a similarity block runs on it, a
second 3x3 conv-BN-ReLU follows; the result is concatenated with the stage-4 features, fused by
a 3x3 conv-BN-ReLU, then Dropout2d and a 1x1 classifier. Output at the stage-4 resolution.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import ConvBNReLU


class BlockContextHead(nn.Module):
    """conv_before -> block -> conv_after, concatenated with the input, fuse, dropout, classifier."""

    main_output = "decode"
    context_modules = ("block",)  # what harness.measure reports as the context module

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout: float, block: nn.Module):
        super().__init__()
        top = in_channels[-1]
        self.conv_before = ConvBNReLU(top, channels, 3)
        self.block = block
        self.conv_after = ConvBNReLU(channels, channels, 3)
        self.fuse = ConvBNReLU(top + channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        top = feats[-1]
        context = self.conv_after(self.block(self.conv_before(top)))
        fused = self.fuse(torch.cat([top, context], dim=1))
        return {"decode": self.classifier(self.dropout(fused))}
