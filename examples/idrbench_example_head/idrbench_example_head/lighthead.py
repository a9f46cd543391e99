"""LightHead: a small segmentation head kept in its own package, with its IDR wiring.

IDRBench finds it without any change of its own code, by the entry point this package declares
(``lighthead`` in the group ``idrbench.frameworks``, see pyproject.toml) or by the import path
``idrbench_example_head.lighthead:FRAMEWORK``. The contract (README, "Adding a framework"):

* the head is built as ``head(in_channels, num_classes, cfg)``: ``in_channels`` are the widths of
  the backbone's feature pyramid, ``cfg`` the experiment's ``model`` section; its ``forward(pyramid,
  target=None)`` returns a dict of logit maps and the head names the one used for prediction in
  ``main_output`` (each map is trained with ``model.loss_weights[name]``);
* the plug-in wiring is built as ``wiring(in_channels, cfg, site, refine_at)`` (the contract is
  ``models.plugins.wiring.PluginWiring``; ``site`` says what the plug-in, IDR or MCIBI++, asks of
  the framework): what the plug-in's stage 1 reads (``coarse_context``), how that context is
  refined (``refine``) and what stage 2 reads besides the plug-in's output (``stage2_context``).
  Here the framework's context module is GlobalContext, with no self-attention, through the
  shared ``models.context.RefinedContextWiring``. IDR itself (models.plugins.idr_head.IDRHead)
  is not copied.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.context import RefinedContextWiring
from models.plugins.wiring import PluginSite
from models.registry import Framework


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class GlobalContext(nn.Module):
    """x + a 1x1 projection of x's global average, broadcast back over the map."""

    def __init__(self, channels: int):
        super().__init__()
        self.project = conv_bn_relu(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)
        return x + self.project(pooled).expand_as(x)


class LightHead(nn.Module):
    """Stage 4 -> 1x1 reduction -> global context -> 3x3 conv -> classifier."""

    main_output = "decode"

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.reduce = conv_bn_relu(in_channels[-1], channels, 1)
        self.context = GlobalContext(channels)
        self.fuse = conv_bn_relu(channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, pyramid: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.fuse(self.context(self.reduce(pyramid[-1])))
        return {"decode": self.classifier(self.dropout(x))}


def light_wiring(in_channels: list[int], cfg, site: PluginSite, refine_at: str) -> RefinedContextWiring:
    """Plug-in wiring: the context is GlobalContext on what the site names (IDR: F), never refined;
    stage 2 reads [plug-in output, GlobalContext(F)] (IDR: [F, Z, GlobalContext(F)])."""
    width = site.context_channels or cfg.feats_channels
    context = nn.Sequential(
        conv_bn_relu(site.context_input_channels(cfg.feats_channels, in_channels), width, 1), GlobalContext(width)
    )
    return RefinedContextWiring(context, width, site, cfg.refine_channels, refine_at="none")


FRAMEWORK = Framework(
    head=lambda in_channels, num_classes, cfg: LightHead(in_channels, cfg.head_channels, num_classes, cfg.dropout),
    wiring=light_wiring,
)
