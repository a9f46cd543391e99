"""MCIBI on DeepLabV3 (Jin et al., ICCV 2021: "Mining Contextual Information Beyond Image for
Semantic Segmentation"), module for module the official sssegmentation 1.7.0 `MCIBI` segmentor
(its R50-D8 configs `ssseg/configs/mcibi/mcibi_deeplabv3_resnet50os8_<dataset>.py`).

Per forward: the ASPP context X (on backbone stage 4, C wide); F = 3x3 conv-BN-ReLU(stage 4);
stage 1 (1x1 conv-BN-ReLU, Dropout2d, 1x1 classifier) on F; the memory holds one C-vector per
class; each pixel reads the softmax(stage-1 logits)-weighted sum of those vectors, which a
self-attention (query F) refines and a 3x3 conv-BN-ReLU fuses with F into M; a self-attention
with query F refines X, and a 3x3 conv-BN-ReLU fuses [X', M]; stage 2 (1x1 conv-BN-ReLU,
Dropout2d, 1x1 classifier) predicts. After the step, each class present in the label moves its
vector towards a weighted mean of its pixels' features (F upsampled to label size; a pixel
weighs 1 - its cosine similarity to the class vector; a class seen for the first time takes
its plain mean), at momentum `memory_momentum * lr / momentum_lr` (the current learning rate,
handed by the training loop through :mod:`models.training_state`). From the second epoch on
(ADE20K's config), stage 2 also classifies the memory vectors themselves (loss "memory",
cross-entropy against each vector's class).

Buffer (in `state_dict`, averaged across DDP ranks after every update): `memory.memory`
[K,1,C] (starts at zero; the official `num_feats_per_cls` is 1 in every config).

Where the official code runs as written, so does this: the gradient of the memory read is taken
with the memory after this step's update (the official read aliases the memory's storage, which
the update then changes in place); the memory loss reads the memory after this step's update, as the official `stored_memory` (the same storage, updated in place); under
DDP the official loss reads this rank's updated memory before the ranks are averaged, and so
does this one. Stage 2's BatchNorm sees the K memory vectors as a batch in training (its
running statistics move with them), as the official one does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.class_memory import (
    average_across_ranks,
    class_pixels,
    class_sums,
    keep_unseen,
    options_from_mapping,
    soft_class_read,
)
from models.context import ASPP, aspp_dilations
from models.layers import ConvBNReLU, PixelClassifier, SelfAttentionBlock
from models.segmentor import OWN_LOSSES
from models.training_state import BEFORE_TRAINING, TrainingProgress

#: the official `epoch > 1`: the memory loss joins from the second epoch
MEMORY_LOSS_FROM_EPOCH = 2


@dataclass(frozen=True)
class MCIBIOptions:
    """The switches of the official MCIBI configs (`model.plugin_options`).

    memory_momentum: the update momentum at lr == momentum_lr (`base_momentum`).
    momentum_lr: the learning rate at which the momentum is `memory_momentum`; it scales with the
        current lr (`adjust_by_learning_rate` with `base_lr`); None: a fixed momentum.
    memory_loss: stage 2 classifies the memory vectors from the second epoch on (`use_loss`).
    """

    memory_momentum: float = 0.9
    momentum_lr: float | None = 0.01
    memory_loss: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.memory_momentum <= 1.0:
            raise ValueError(f"model.plugin_options.memory_momentum: {self.memory_momentum!r}; expected in (0, 1]")
        if self.momentum_lr is not None and not self.momentum_lr > 0.0:
            raise ValueError(f"model.plugin_options.momentum_lr: {self.momentum_lr!r}; expected > 0 or null")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> "MCIBIOptions":
        """Options from `model.plugin_options`; ValueError naming an unknown key."""
        return options_from_mapping(cls, options, "MCIBI")

    def momentum_at(self, lr: float | None) -> float:
        """The update momentum at learning rate `lr` (the base momentum when lr is unknown)."""
        if self.momentum_lr is None or lr is None:
            return self.memory_momentum
        return self.memory_momentum / self.momentum_lr * lr


def updated_class_vectors(
    memory: torch.Tensor, feats: torch.Tensor, target: torch.Tensor, ignore_index: int, momentum: float
) -> torch.Tensor:
    """The official cosine-similarity update of each labelled class's vector. memory [K,C],
    feats [B,C,H,W] at the label size, target [B,H,W].

    A class whose vector is all zeros takes the plain mean of its pixels; any other moves by
    `momentum` towards the mean of its pixels weighted by 1 - cos(pixel, vector) (normalised).
    """
    k = memory.shape[0]
    seen = class_pixels(feats, target, ignore_index, k)
    memory = memory.to(seen.pixels.dtype)
    dissimilarity = 1.0 - F.cosine_similarity(seen.pixels, memory[seen.labels], dim=1)
    weighted = class_sums(seen.pixels * dissimilarity.unsqueeze(1), seen.labels, k)
    weighted = weighted / class_sums(dissimilarity, seen.labels, k).unsqueeze(1)
    moved = (1.0 - momentum) * memory + momentum * weighted
    empty = (memory == 0).all(dim=1, keepdim=True)
    return keep_unseen(torch.where(empty, seen.means, moved), memory, seen.counts)


class ClassMemory(nn.Module):
    """The official FeaturesMemory (one vector per class, context within the image on)."""

    def __init__(self, num_classes: int, channels: int, transform_channels: int):
        super().__init__()
        self.register_buffer("memory", torch.zeros(num_classes, 1, channels))
        self.attention = SelfAttentionBlock(channels, channels, transform_channels, channels)
        self.fuse = ConvBNReLU(2 * channels, channels, 3)
        self.context_attention = SelfAttentionBlock(channels, channels, transform_channels, channels)
        self.context_fuse = ConvBNReLU(2 * channels, channels, 3)

    def forward(self, feats: torch.Tensor, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # `.data`, as the official read: the backward of this read sees the memory after the step's
        # in-place update (the same storage), as the official one does
        selected = self.attention(feats, soft_class_read(logits, self.memory.data[:, 0]))
        memory_out = self.fuse(torch.cat([feats, selected], dim=1))
        context = self.context_attention(feats, context)
        return self.context_fuse(torch.cat([context, memory_out], dim=1))

    @torch.no_grad()
    def update(self, feats: torch.Tensor, target: torch.Tensor, ignore_index: int, momentum: float) -> torch.Tensor:
        """Update from this step; returns this rank's updated memory [K,1,C] (before the ranks are averaged)."""
        feats = F.interpolate(feats, size=target.shape[-2:], mode="bilinear", align_corners=False)
        vectors = updated_class_vectors(self.memory[:, 0], feats, target, ignore_index, momentum)
        self.memory.copy_(vectors.unsqueeze(1))
        local = self.memory.clone()
        average_across_ranks(self.memory)
        return local


class MCIBIHead(nn.Module):
    """Outputs: "stage1" (on F), "stage2" (the prediction) and, in training from the second
    epoch, the memory loss (under :data:`models.segmentor.OWN_LOSSES`)."""

    main_output = "stage2"
    loss_defaults = {"memory": 1.0}  # official loss_cfg scale_factor; ModelConfig.loss_weights may override it
    context_modules = ("memory",)

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        feats_channels: int = 512,
        transform_channels: int = 256,
        dropout: float = 0.1,
        ignore_index: int = 255,
        dilations: Sequence[int] = aspp_dilations(8),
        options: MCIBIOptions = MCIBIOptions(),
    ):
        super().__init__()
        c = feats_channels
        self.options = options
        self.ignore_index = ignore_index
        self.progress = BEFORE_TRAINING
        self.context = ASPP(in_channels[-1], c, dilations)
        self.bottleneck = ConvBNReLU(in_channels[-1], c, 3)
        self.memory = ClassMemory(num_classes, c, transform_channels)
        self.stage1 = PixelClassifier(c, c, num_classes, dropout)
        self.stage2 = PixelClassifier(c, c, num_classes, dropout)

    def follow_training(self, progress: TrainingProgress) -> None:
        self.progress = progress

    def forward(self, pyramid: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, Any]:
        context = self.context(pyramid[-1])
        feats = self.bottleneck(pyramid[-1])
        stage1 = self.stage1(feats)
        outputs: dict[str, Any] = {"stage1": stage1, "stage2": self.stage2(self.memory(feats, stage1, context))}
        if self.training and target is not None:
            momentum = self.options.momentum_at(self.progress.lr)
            local = self.memory.update(feats.detach(), target, self.ignore_index, momentum)
            if self.options.memory_loss and self.progress.epoch >= MEMORY_LOSS_FROM_EPOCH:
                outputs[OWN_LOSSES] = {"memory": self.memory_loss(local)}
        return outputs

    def memory_loss(self, memory: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of stage 2 on the memory vectors (as 1x1 maps) against their classes."""
        k, per_class, c = memory.shape
        logits = self.stage2(memory.reshape(k * per_class, c, 1, 1)).flatten(1)
        classes = torch.arange(k, device=memory.device).repeat_interleave(per_class)
        return F.cross_entropy(logits, classes)
