"""DNL (Disentangled Non-Local, Yin et al. 2020) as a framework: the official sssegmentation 1.7.0 head.

Head: as Non-local's (`BlockContextHead`, auxiliary head weight 0.4), with the disentangled
non-local block in place of the non-local one.

Disentangled block (official config: embeddedgaussian, reduction 2, use_scale, temperature
0.05): the pairwise term whitens query and key (each minus its mean over positions) and divides
the scaled affinity by the temperature; the unary term is a softmax over positions of a 1x1 conv
(C -> 1, with bias) of the input, pooling g into one vector added at every position before the
output conv: x + W_z(pairwise(g) + unary(g)).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.heads.block_head import BlockContextHead
from models.heads.nonlocalnet import NonLocal2d, affinity

DNL_TEMPERATURE = 0.05


class DisentangledNonLocal2d(NonLocal2d):
    def __init__(self, channels: int, reduction: int = 2, use_scale: bool = True, temperature: float = DNL_TEMPERATURE):
        super().__init__(channels, reduction, use_scale)
        self.temperature = temperature
        self.conv_mask = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query, key, value = self.embeddings(x)
        query = query - query.mean(dim=1, keepdim=True)  # whitened over positions
        key = key - key.mean(dim=2, keepdim=True)
        pairwise = torch.bmm(affinity(query, key, self.use_scale, self.temperature), value)  # [B,N,D]
        unary = torch.bmm(self.conv_mask(x).flatten(2).softmax(dim=-1), value)  # [B,1,D]
        context = (pairwise + unary).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.conv_out(context)


def dnl_head(in_channels: list[int], channels: int, num_classes: int, dropout: float) -> BlockContextHead:
    return BlockContextHead(in_channels, channels, num_classes, dropout, DisentangledNonLocal2d(channels))
