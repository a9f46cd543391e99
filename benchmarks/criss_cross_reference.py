"""Slow, per-pixel reference of criss-cross attention (CCNet), as mmcv's `CrissCrossAttention` defines it.

For each position (i, j) the candidates are its column without itself, then its whole row
(itself included once); one softmax of query . key over them weights the values. The single
copy of the reference: tests/test_criss_cross.py holds `models.heads.ccnet.criss_cross_attention`
against it, and tests/test_scheme_parity_similarity.py builds the official CCNet with
`ReferenceCrissCrossAttention` in place of mmcv's op (mmcv is not a dependency).
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ref_criss_cross_attention", "ReferenceCrissCrossAttention"]


def _pixel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """[B,C]: the attended value of position (i, j)."""
    h = key.shape[2]
    others = [r for r in range(h) if r != i]
    keys = torch.cat([key[:, :, others, j], key[:, :, i, :]], dim=2)  # [B,D,H-1+W]
    values = torch.cat([value[:, :, others, j], value[:, :, i, :]], dim=2)  # [B,C,H-1+W]
    weights = torch.softmax((query[:, :, i, j].unsqueeze(2) * keys).sum(1), dim=-1)  # [B,H-1+W]
    return (values * weights.unsqueeze(1)).sum(2)


def ref_criss_cross_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """query, key [B,D,H,W], value [B,C,H,W] -> [B,C,H,W], one position at a time."""
    _, _, h, w = query.shape
    rows = [torch.stack([_pixel(query, key, value, i, j) for j in range(w)], dim=-1) for i in range(h)]
    return torch.stack(rows, dim=-2)


class _Gain(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.0))


class ReferenceCrissCrossAttention(nn.Module):
    """mmcv's module (same parameters, names and order) with the per-pixel reference as its op."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.query_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = _Gain()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended = ref_criss_cross_attention(self.query_conv(x), self.key_conv(x), self.value_conv(x))
        return attended * self.gamma.scale + x
