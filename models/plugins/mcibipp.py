"""MCIBI++ (Jin et al., TPAMI 2022: "MCIBI++: Soft Mining Contextual Information Beyond Image for
Semantic Segmentation") as a plug-in head, module for module the official sssegmentation 1.7.0
`MCIBIPlusPlus` segmentor.

Per forward: F = 3x3 conv-BN-ReLU(backbone stage 4); the framework's context module (PPM /
ASPP on the backbone's top stage; none for FCN) gives X; a classifier on F (stage 1, official
`decoder_pr`) and one on X (official `decoder_cwi`) predict K classes; the memory holds a
(mean, std) pair per class, from which a C-vector per class is drawn; each pixel reads the
softmax(logits)-weighted sum of those vectors (logits of X, or of F when `gather_from: feats`,
official `force_use_preds_pr`), which a self-attention (query F) refines and a 3x3
conv-BN-ReLU fuses with F into the memory output M. Optionally a self-attention with query X
refines M (`self_attention`). The framework's decoder reads M placed at the top of its context
([M, X], then UPerNet's FPN on it). After the step, each class present in the label updates its
(mean, std) by momentum from the mean feature of its pixels (F upsampled to label size).

Buffers (in `state_dict`, averaged across DDP ranks after every update): `memory.memory` [K,2]
(start (0, 1)).

Where the official code differs from a plain reading, the code is followed, except: the
official forward draws each class's vector after `torch.manual_seed(class index)` on the global
generator, which also resets every later random draw of the step (dropout) to the same stream
each iteration; here the same vectors come from per-class generators kept in a (non-persistent)
buffer, and the global generator is left alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.class_memory import average_across_ranks, class_pixels, keep_unseen, options_from_mapping, soft_class_read
from models.layers import ConvBNReLU, PixelClassifier, SelfAttentionBlock
from models.plugins.wiring import PluginSite, PluginWiring, decoder_input

GATHER_SOURCES = ("context", "feats")


@dataclass(frozen=True)
class MCIBIPPOptions:
    """The switches of the official MCIBI++ configs (`model.plugin_options`).

    self_attention: refine M by self-attention with the context as query (`use_self_attention`).
    gather_from: which logits weight the memory: the context classifier's, or stage 1's on F
        (`force_use_preds_pr`); with no context it is always stage 1's.
    stage1_kernel / context_kernel / decode_kernel: the first conv of decoder_pr / _cwi / _cls (1 or 3).
    memory_momentum: the (mean, std) update momentum (`base_momentum`).
    """

    self_attention: bool = False
    gather_from: str = "context"
    stage1_kernel: int = 1
    context_kernel: int = 1
    decode_kernel: int = 1
    memory_momentum: float = 0.1

    def __post_init__(self) -> None:
        if self.gather_from not in GATHER_SOURCES:
            raise ValueError(f"model.plugin_options.gather_from: {self.gather_from!r}; allowed: {', '.join(GATHER_SOURCES)}")
        for name in ("stage1_kernel", "context_kernel", "decode_kernel"):
            if getattr(self, name) not in (1, 3):
                raise ValueError(f"model.plugin_options.{name}: {getattr(self, name)!r}; allowed: 1, 3")
        if not 0.0 < self.memory_momentum <= 1.0:
            raise ValueError(f"model.plugin_options.memory_momentum: {self.memory_momentum!r}; expected in (0, 1]")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> "MCIBIPPOptions":
        """Options from `model.plugin_options`; ValueError naming an unknown key."""
        return options_from_mapping(cls, options, "MCIBI++")


def mcibipp_site(feats_channels: int) -> PluginSite:
    """MCIBI++'s place in a framework: the context module reads the backbone's top stage, to C
    channels; the decoder reads the memory output (C) at the top of the context."""
    return PluginSite(context_reads="backbone", plugin_channels=feats_channels, plugin_at="top",
                      context_channels=feats_channels)


def class_noise(num_classes: int, channels: int) -> torch.Tensor:
    """[K,C] standard normal draws, row k from a generator seeded k (the official per-class seeds)."""
    rows = [torch.randn(channels, generator=torch.Generator().manual_seed(k)) for k in range(num_classes)]
    return torch.stack(rows)


def updated_memory(
    memory: torch.Tensor, feats: torch.Tensor, target: torch.Tensor, ignore_index: int, momentum: float
) -> torch.Tensor:
    """Momentum update of each labelled class's (mean, std): the mean and std over channels of
    the mean feature of its pixels. feats [B,C,H,W] at the label size, target [B,H,W]."""
    seen = class_pixels(feats, target, ignore_index, memory.shape[0])
    stats = torch.stack([seen.means.mean(1), seen.means.std(1)], dim=1).to(memory.dtype)
    return keep_unseen((1.0 - momentum) * memory + momentum * stats, memory, seen.counts)


class FeatureMemory(nn.Module):
    """The official FeaturesMemoryV2: per-class (mean, std), read back by soft class weights."""

    def __init__(self, num_classes: int, channels: int, transform_channels: int):
        super().__init__()
        self.register_buffer("memory", torch.cat([torch.zeros(num_classes, 1), torch.ones(num_classes, 1)], dim=1))
        self.register_buffer("noise", class_noise(num_classes, channels), persistent=False)
        self.attention = SelfAttentionBlock(channels, channels, transform_channels, channels)
        self.fuse = ConvBNReLU(2 * channels, channels, 3)

    def class_vectors(self) -> torch.Tensor:
        """[K,C]: mean_k + std_k * noise_k, in float32 as the official draw."""
        stats = self.memory.float()
        return stats[:, :1] + stats[:, 1:] * self.noise.float()

    def forward(self, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        selected = self.attention(feats, soft_class_read(logits, self.class_vectors()))
        return self.fuse(torch.cat([feats, selected], dim=1))

    @torch.no_grad()
    def update(self, feats: torch.Tensor, target: torch.Tensor, ignore_index: int, momentum: float) -> None:
        feats = F.interpolate(feats, size=target.shape[-2:], mode="bilinear", align_corners=False)
        self.memory.copy_(updated_memory(self.memory, feats, target, ignore_index, momentum))
        average_across_ranks(self.memory)


class MCIBIPPHead(nn.Module):
    """MCIBI++ around a framework's wiring (built for :func:`mcibipp_site`).

    Outputs: "stage1" (official decoder_pr, on F), "context" (decoder_cwi, on the framework's
    context; absent for FCN), "decode" (decoder_cls, the prediction).
    """

    main_output = "decode"
    loss_defaults = {"context": 1.0}  # official cwi weight; ModelConfig.loss_weights may override it

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        wiring: PluginWiring,
        feats_channels: int = 512,
        transform_channels: int = 256,
        dropout: float = 0.1,
        ignore_index: int = 255,
        options: MCIBIPPOptions = MCIBIPPOptions(),
    ):
        super().__init__()
        c, k = feats_channels, num_classes
        self.options = options
        self.ignore_index = ignore_index
        self.bottleneck = ConvBNReLU(in_channels[-1], c, 3)
        self.wiring = wiring
        self.stage1 = PixelClassifier(c, c, k, dropout, options.stage1_kernel)
        has_context = wiring.has_context
        self.context_classifier = (
            PixelClassifier(wiring.stage1_channels, c, k, dropout, options.context_kernel) if has_context else None
        )
        self.memory = FeatureMemory(k, c, transform_channels)
        self.context_attention = (
            SelfAttentionBlock(c, c, c // 2, c) if has_context and options.self_attention else None
        )
        self.decoder = PixelClassifier(wiring.stage2_channels, c, k, dropout, options.decode_kernel)

    @property
    def context_modules(self) -> tuple[str, ...]:
        """harness.measure: MCIBI++'s own parts, as IDR's: the stage-1 classifier (the soft class weights that
        read the memory), the memory read-out and the self-attention on the context when the config has it."""
        return ("stage1", "memory") + (("context_attention",) if self.context_attention is not None else ())

    def forward(self, pyramid: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feats = self.bottleneck(pyramid[-1])
        coarse = self.wiring.coarse_context(feats, pyramid)
        outputs = {"stage1": self.stage1(feats)}
        gather = outputs["stage1"]
        if coarse is not None:
            outputs["context"] = self.context_classifier(coarse)
            if self.options.gather_from == "context":
                gather = outputs["context"]
        memory_out = self.memory(feats, gather)
        if self.context_attention is not None:
            memory_out = self.context_attention(coarse, memory_out)
        outputs["decode"] = self.decoder(decoder_input(self.wiring, memory_out, coarse, pyramid))
        if self.training and target is not None:
            self.memory.update(feats.detach(), target, self.ignore_index, self.options.memory_momentum)
        return outputs
