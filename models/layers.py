"""Building blocks shared by the heads: conv-BN-ReLU, classifiers, self-attention."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class PixelClassifier(nn.Sequential):
    """1x1 (or `kernel_size`) conv-BN-ReLU, Dropout2d, 1x1 conv to K: IDR's stage-1 and stage-2 decoders."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float, kernel_size: int = 1):
        super().__init__(
            ConvBNReLU(in_channels, channels, kernel_size),
            nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )


class AuxiliaryHead(nn.Sequential):
    """The FCN auxiliary head on backbone stage 3: 3x3 conv-BN-ReLU, Dropout2d, 1x1 conv to K."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__(
            ConvBNReLU(in_channels, channels, 3),
            nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )


def _projection(in_channels: int, out_channels: int, num_convs: int) -> nn.Sequential:
    layers = [ConvBNReLU(in_channels, out_channels, 1)]
    layers += [ConvBNReLU(out_channels, out_channels, 1) for _ in range(num_convs - 1)]
    return nn.Sequential(*layers)


def _positions(feats: torch.Tensor) -> torch.Tensor:
    """[B,T,h,w] -> [B,1,N,T], contiguous: one head, the layout the fused attention kernels take."""
    return feats.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()


class SelfAttentionBlock(nn.Module):
    """Scaled dot-product attention over all positions of a feature map.

    Query and key go through two 1x1 conv-BN-ReLU layers into `transform_channels`, the value
    through one; the attended values are projected to `out_channels` by a 1x1 conv-BN-ReLU.
    The attention is `F.scaled_dot_product_attention` (one head), which never holds the
    [N, N] matrix in the fused kernels: on CPU the flash-attention CPU kernel, on CUDA flash
    attention under fp16 / bf16 autocast and the memory-efficient kernel in fp32 (PyTorch picks;
    its math fallback is the plain softmax(QK^T)V).
    """

    def __init__(self, key_in: int, query_in: int, transform_channels: int, out_channels: int):
        super().__init__()
        self.query_project = _projection(query_in, transform_channels, 2)
        self.key_project = _projection(key_in, transform_channels, 2)
        self.value_project = _projection(key_in, transform_channels, 1)
        self.out_project = _projection(transform_channels, out_channels, 1)
        self.scale = transform_channels**-0.5

    def forward(self, query_feats: torch.Tensor, key_feats: torch.Tensor) -> torch.Tensor:
        first_convs = [projection[0][0] for projection in self.projections()]
        inputs = (query_feats, key_feats, key_feats)
        return self.attend(*(conv(x) for conv, x in zip(first_convs, inputs)))

    def projections(self) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
        """The query, key and value projections; each starts with a bias-free 1x1 convolution."""
        return self.query_project, self.key_project, self.value_project

    def attend(self, query_pre: torch.Tensor, key_pre: torch.Tensor, value_pre: torch.Tensor) -> torch.Tensor:
        """The block from the outputs of the projections' first convolutions on (query, key, key)."""
        b, _, h, w = query_pre.shape
        query, key, value = (
            _positions(_after_first_conv(projection, pre))  # [B,1,N,T], [B,1,M,T], [B,1,M,T]
            for projection, pre in zip(self.projections(), (query_pre, key_pre, value_pre))
        )
        context = F.scaled_dot_product_attention(query, key, value, scale=self.scale)  # [B,1,N,T]
        return self.out_project(context.squeeze(1).transpose(1, 2).reshape(b, -1, h, w))


def _after_first_conv(projection: nn.Sequential, pre_activation: torch.Tensor) -> torch.Tensor:
    """`projection` (conv-BN-ReLU layers) with its first convolution's output given."""
    first = projection[0]
    return projection[1:](first[2](first[1](pre_activation)))


class LearnableScale(nn.Module):
    """x * s with one learnable scalar s (the residual gain of DANet's and CCNet's attention, 0 at init)."""

    def __init__(self, initial: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(initial))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


LEAKY_SLOPE = 0.01  # the official LIP configs' act_cfg negative_slope


def use_activation(module: nn.Module, activation: str) -> nn.Module:
    """`module` with every ReLU replaced by the named activation ("relu": unchanged; "leaky_relu")."""
    if activation == "relu":
        return module
    if activation != "leaky_relu":
        raise ValueError(f"unknown activation {activation!r}; allowed: relu, leaky_relu")
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.LeakyReLU(LEAKY_SLOPE, inplace=child.inplace))
        else:
            use_activation(child, activation)
    return module
