"""CCNet (criss-cross attention, Huang et al. 2019) as a framework: the official sssegmentation 1.7.0 head.

Head: as Non-local's (`BlockContextHead`, auxiliary head weight 0.4), with the criss-cross
attention module applied twice (`num_recurrence` 2, the same weights each time) as its block.

The official model takes the module from mmcv (`mmcv.ops.CrissCrossAttention`; since mmcv 1.3.13
plain PyTorch, before that a compiled op): query and key are 1x1 convs with bias C -> C/8, value
a 1x1 conv C -> C; each position attends to the H + W - 1 positions of its column and row (itself
once, in its row: the column's diagonal is masked out), one softmax over all of them; the
attended value times a learnable gain (0 at init) is added to the input. Written here in plain
tensor ops (batched matmuls over rows and columns), checked against a per-pixel loop in
tests/test_scheme_parity_similarity.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.heads.block_head import BlockContextHead
from models.layers import LearnableScale

CC_RECURRENCE = 2
CC_KEY_REDUCTION = 8


def criss_cross_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Each position's softmax-weighted sum of `value` over its column and row.

    query, key [B,D,H,W], value [B,C,H,W] -> [B,C,H,W]. A position's own key is counted once
    (in its row; excluded from its column).
    """
    b, _, h, w = query.shape
    q_rows, k_rows, v_rows = (t.permute(0, 2, 3, 1) for t in (query, key, value))  # [B,H,W,*]
    q_cols, k_cols, v_cols = (t.permute(0, 3, 2, 1) for t in (query, key, value))  # [B,W,H,*]
    column_logits = torch.matmul(q_cols, k_cols.transpose(-1, -2))  # [B,W,H,H']: (w, h) to (h', w)
    own_position = torch.eye(h, dtype=torch.bool, device=query.device)
    column_logits = column_logits.masked_fill(own_position, float("-inf")).transpose(1, 2)  # [B,H,W,H']
    row_logits = torch.matmul(q_rows, k_rows.transpose(-1, -2))  # [B,H,W,W']: (h, w) to (h, w')
    weights = torch.cat([column_logits, row_logits], dim=-1).softmax(dim=-1)
    column_weights, row_weights = weights.split([h, w], dim=-1)
    from_column = torch.matmul(column_weights.transpose(1, 2), v_cols)  # [B,W,H,C]
    from_row = torch.matmul(row_weights, v_rows)  # [B,H,W,C]
    return from_column.permute(0, 3, 2, 1) + from_row.permute(0, 3, 1, 2)


class CrissCrossAttention(nn.Module):
    """x + gamma * criss_cross_attention(q(x), k(x), v(x)); parameters named as mmcv's module."""

    def __init__(self, channels: int):
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // CC_KEY_REDUCTION, 1)
        self.key_conv = nn.Conv2d(channels, channels // CC_KEY_REDUCTION, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = LearnableScale(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended = criss_cross_attention(self.query_conv(x), self.key_conv(x), self.value_conv(x))
        return self.gamma(attended) + x


class RecurrentCrissCross(nn.Module):
    """One criss-cross attention module applied `recurrence` times (two passes reach every position)."""

    def __init__(self, channels: int, recurrence: int = CC_RECURRENCE):
        super().__init__()
        self.attention = CrissCrossAttention(channels)
        self.recurrence = recurrence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self.attention(x)
        return x


def ccnet_head(in_channels: list[int], channels: int, num_classes: int, dropout: float) -> BlockContextHead:
    return BlockContextHead(in_channels, channels, num_classes, dropout, RecurrentCrissCross(channels))
