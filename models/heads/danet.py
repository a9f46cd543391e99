"""DANet (dual attention, Fu et al. 2019) as a framework: the official sssegmentation 1.7.0 head.

Two branches on backbone stage 4, each a 3x3 conv-BN-ReLU 2048 -> C (512), an attention module
and a 3x3 conv-BN-ReLU: the position attention module (query / key 1x1 convs C -> C/8 = 64, value
C -> C, no bias, no norm; unscaled softmax affinity over positions) and the channel attention
module (softmax over channels of max(energy) - energy, energy = X X^T); each adds its attended
features times a learnable gain (0 at init) to its input. The sum of the two branches is
classified (Dropout2d 0.1, 1x1 conv: the main output); in training each branch is also
classified on its own ("pam", "cam": weight 1.0 each, as the main loss), and the auxiliary
head on stage 3 adds 0.4.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import ConvBNReLU, LearnableScale

PAM_KEY_REDUCTION = 8  # query / key width C / 8 (64 at C = 512)


class PositionAttention(nn.Module):
    def __init__(self, channels: int, key_channels: int):
        super().__init__()
        self.key_project = nn.Conv2d(channels, key_channels, 1, bias=False)
        self.query_project = nn.Conv2d(channels, key_channels, 1, bias=False)
        self.value_project = nn.Conv2d(channels, channels, 1, bias=False)
        self.gamma = LearnableScale(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.query_project(x).flatten(2).transpose(1, 2)  # [B,N,D]
        key = self.key_project(x).flatten(2)  # [B,D,N]
        value = self.value_project(x).flatten(2).transpose(1, 2)  # [B,N,C]
        attended = torch.bmm(torch.bmm(query, key).softmax(dim=-1), value)
        return self.gamma(attended.transpose(1, 2).reshape(x.shape)) + x


class ChannelAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.gamma = LearnableScale(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # [B,C,N]
        energy = torch.bmm(flat, flat.transpose(1, 2))  # [B,C,C]
        weights = (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=-1)
        return self.gamma(torch.bmm(weights, flat).reshape(x.shape)) + x


def _classifier(channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))


class DANetHead(nn.Module):
    main_output = "decode"
    context_modules = ("pam", "cam")
    loss_defaults = {"pam": 1.0, "cam": 1.0}  # the branch losses, beside "decode" and "aux"

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        top = in_channels[-1]
        self.pam_in = ConvBNReLU(top, channels, 3)
        self.pam = PositionAttention(channels, channels // PAM_KEY_REDUCTION)
        self.pam_out = ConvBNReLU(channels, channels, 3)
        self.pam_classifier = _classifier(channels, num_classes, dropout)
        self.cam_in = ConvBNReLU(top, channels, 3)
        self.cam = ChannelAttention()
        self.cam_out = ConvBNReLU(channels, channels, 3)
        self.cam_classifier = _classifier(channels, num_classes, dropout)
        self.classifier = _classifier(channels, num_classes, dropout)

    def forward(self, feats: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        top = feats[-1]
        pam = self.pam_out(self.pam(self.pam_in(top)))
        cam = self.cam_out(self.cam(self.cam_in(top)))
        out = {"decode": self.classifier(pam + cam)}
        if self.training:  # the branch classifiers only train (the official inference skips them)
            out.update(pam=self.pam_classifier(pam), cam=self.cam_classifier(cam))
        return out
