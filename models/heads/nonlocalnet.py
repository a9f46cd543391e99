"""Non-local (NonLocalNet, Wang et al. 2018) as a framework: the official sssegmentation 1.7.0 head.

Head (`BlockContextHead`): 3x3 conv-BN-ReLU 2048 -> C (512), an embedded-Gaussian non-local
block on it, 3x3 conv-BN-ReLU, concatenation with stage 4, 3x3 conv-BN-ReLU fusion, Dropout2d
(0.1), 1x1 classifier; the FCN auxiliary head on stage 3 (weight 0.4).

Non-local block (official config: mode embeddedgaussian, reduction 2, use_scale, no sub-sampling):
theta, phi, g are 1x1 convs with bias C -> C/2; the affinity softmax(theta^T phi / sqrt(C/2))
over all positions weights g; a 1x1 conv (no bias) + BN back to C is added to the input.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.heads.block_head import BlockContextHead


def affinity(query: torch.Tensor, key: torch.Tensor, scaled: bool, temperature: float = 1.0) -> torch.Tensor:
    """softmax over positions of query [B,N,D] . key [B,D,M], / sqrt(D) if `scaled`, / temperature."""
    logits = torch.bmm(query, key)
    if scaled:
        logits = logits / query.shape[-1] ** 0.5
    return (logits / temperature).softmax(dim=-1)


class NonLocal2d(nn.Module):
    """Embedded-Gaussian non-local block: x + W_z(softmax(theta(x)^T phi(x)) g(x))."""

    def __init__(self, channels: int, reduction: int = 2, use_scale: bool = True):
        super().__init__()
        inner = max(channels // reduction, 1)
        self.use_scale = use_scale
        # registration order as the official block: g, conv_out, theta, phi
        self.g = nn.Conv2d(channels, inner, 1)
        self.conv_out = nn.Sequential(nn.Conv2d(inner, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)

    def embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """query [B,N,D], key [B,D,N] and value [B,N,D] of the N positions of x."""
        query = self.theta(x).flatten(2).transpose(1, 2)
        key = self.phi(x).flatten(2)
        value = self.g(x).flatten(2).transpose(1, 2)
        return query, key, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query, key, value = self.embeddings(x)
        context = torch.bmm(affinity(query, key, self.use_scale), value)  # [B,N,D]
        return x + self.conv_out(context.transpose(1, 2).reshape(b, -1, h, w))


def nonlocal_head(in_channels: list[int], channels: int, num_classes: int, dropout: float) -> BlockContextHead:
    return BlockContextHead(in_channels, channels, num_classes, dropout, NonLocal2d(channels))
