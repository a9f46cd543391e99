"""How a plug-in context module (IDR, MCIBI++, ...) attaches to a framework.

A *wiring* is the framework's side of the contract. It is built for one plug-in from that
plug-in's :class:`PluginSite` and tells it:

- what the framework hands the plug-in: `coarse_context(feats, pyramid)` (the framework's own
  context module, e.g. PPM / ASPP, on F or on the backbone's top stage; None for FCN) and
  `refine(coarse)` (an optional self-attention on it, run `refine_at` "before" / "after" the
  plug-in's first classifier, or "none");
- what the framework's decoder reads back: `stage2_context(coarse, pyramid)` (what the decoder
  reads besides the plug-in output, computed once per forward: the context itself, or UPerNet's
  FPN over it) and `stage2_channels` (the decoder's input width). The plug-in output sits either
  beside that context (`plugin_at="beside"`: decoder reads [plugin output, context]) or inside it
  (`"top"`: it is concatenated to the coarse context before the context is built on it, e.g.
  as the FPN's top level). :func:`decoder_input` does either.

The framework files (`models/heads/<framework>.py`) hold the wirings; the plug-in files
(`models/plugins/<plugin>.py`) say their site and read the wiring through this module only. A
new plug-in is one file: its head, its :class:`PluginSite`, and a :class:`Plugin` entry in
`models/registry.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

CONTEXT_INPUTS = ("feats", "backbone")
PLUGIN_PLACES = ("beside", "top")


@dataclass(frozen=True)
class PluginSite:
    """What a plug-in asks of the framework's wiring.

    context_reads: the framework's context module reads F (the plug-in's bottleneck output,
        IDR) or the backbone's top stage (MCIBI++).
    plugin_channels: width of the plug-in output the decoder reads (IDR: [F, Z] = 2C).
    plugin_at: the plug-in output sits beside the framework's context in the decoder input,
        or at the top of it (concatenated to the coarse context before, e.g., UPerNet's FPN).
    context_channels: width of the framework's context module; None = the framework's default
        (C, or UPerNet's FPN width).
    """

    context_reads: Literal["feats", "backbone"]
    plugin_channels: int
    plugin_at: Literal["beside", "top"] = "beside"
    context_channels: int | None = None

    def __post_init__(self) -> None:
        if self.context_reads not in CONTEXT_INPUTS:
            raise ValueError(f"unknown context_reads {self.context_reads!r}; allowed: {', '.join(CONTEXT_INPUTS)}")
        if self.plugin_at not in PLUGIN_PLACES:
            raise ValueError(f"unknown plugin_at {self.plugin_at!r}; allowed: {', '.join(PLUGIN_PLACES)}")

    def context_input_channels(self, feats_channels: int, backbone_channels: list[int]) -> int:
        """Input width of the framework's context module."""
        return feats_channels if self.context_reads == "feats" else backbone_channels[-1]

    def context_input(self, feats: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return feats if self.context_reads == "feats" else pyramid[-1]


class PluginWiring(Protocol):
    """The framework side of the plug-in contract (see the module docstring)."""

    stage1_channels: int
    stage2_channels: int
    refine_at: str
    plugin_at: str
    has_context: bool  # False: coarse_context is always None (FCN)

    def coarse_context(self, feats: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor | None: ...

    def refine(self, coarse: torch.Tensor | None) -> torch.Tensor | None: ...

    def stage2_context(self, coarse: torch.Tensor | None, pyramid: list[torch.Tensor]) -> torch.Tensor | None:
        """What the decoder reads besides the plug-in output (computed once per forward)."""


def concat_at(plugin_out: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    """[plugin_out, extra], plugin_out resized bilinearly to extra's resolution; plugin_out alone if no extra."""
    if extra is None:
        return plugin_out
    if plugin_out.shape[2:] != extra.shape[2:]:
        plugin_out = F.interpolate(plugin_out, size=extra.shape[2:], mode="bilinear", align_corners=False)
    return torch.cat([plugin_out, extra], dim=1)


def decoder_input(
    wiring: PluginWiring, plugin_out: torch.Tensor, coarse: torch.Tensor | None, pyramid: list[torch.Tensor]
) -> torch.Tensor:
    """What the framework's decoder reads, the plug-in output placed where the wiring says."""
    if wiring.plugin_at == "top" and coarse is not None:
        return wiring.stage2_context(torch.cat([plugin_out, coarse], dim=1), pyramid)
    return concat_at(plugin_out, wiring.stage2_context(coarse, pyramid))
