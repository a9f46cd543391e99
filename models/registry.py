"""Framework registry: name -> (baseline head factory, IDR wiring factory).

To add a framework, write `models/<name>.py` with a head returning a dict of logit maps
(and naming its main output), plus a wiring object for IDR, then register both here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from models.backbones import build_backbone
from models.context import aspp_dilations
from models.deeplabv3 import ASPPHead, DeepLabV3Wiring
from models.fcn import FCNHead, FCNWiring
from models.idr_head import IDRHead
from models.layers import AuxiliaryHead
from models.pspnet import PSPHead, PSPNetWiring
from models.segmentor import Segmentor
from models.upernet import UPerHead, UPerNetWiring


@dataclass(frozen=True)
class Framework:
    head: Callable[..., nn.Module]  # (in_channels, num_classes, cfg) -> head
    wiring: Callable[..., nn.Module]  # (in_channels, cfg) -> IDR wiring


FRAMEWORKS: dict[str, Framework] = {
    "fcn": Framework(
        head=lambda chans, k, cfg: FCNHead(chans, cfg.head_channels, k, cfg.dropout),
        wiring=lambda chans, cfg: FCNWiring(cfg.feats_channels),
    ),
    "pspnet": Framework(
        head=lambda chans, k, cfg: PSPHead(chans, cfg.head_channels, k, cfg.dropout),
        wiring=lambda chans, cfg: PSPNetWiring(cfg.feats_channels, cfg.refine_channels),
    ),
    "deeplabv3": Framework(
        head=lambda chans, k, cfg: ASPPHead(
            chans, cfg.head_channels, k, cfg.dropout, aspp_dilations(cfg.output_stride)
        ),
        wiring=lambda chans, cfg: DeepLabV3Wiring(
            cfg.feats_channels, cfg.refine_channels, aspp_dilations(cfg.output_stride)
        ),
    ),
    "upernet": Framework(
        head=lambda chans, k, cfg: UPerHead(chans, cfg.head_channels, k, cfg.dropout),
        # the FPN (and so the coarse context, its top level) is head_channels wide
        wiring=lambda chans, cfg: UPerNetWiring(
            chans,
            cfg.feats_channels,
            cfg.head_channels,
            cfg.refine_channels,
            cfg.upernet_context,
            aspp_dilations(cfg.output_stride),
        ),
    ),
}


def framework_names() -> list[str]:
    """Registered frameworks in registration order (the paper's table order, FCN first)."""
    return list(FRAMEWORKS)


def build_segmentor(framework: str, idr: bool, num_classes: int, cfg, ignore_index: int = 255) -> Segmentor:
    """The model of one cell. `cfg` is a `harness.config.ModelConfig`."""
    if framework not in FRAMEWORKS:
        raise KeyError(f"unknown framework {framework!r}; allowed: {', '.join(framework_names())}")
    spec = FRAMEWORKS[framework]
    backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.output_stride)
    chans = backbone.channels
    if idr:
        head = IDRHead(
            chans,
            num_classes,
            spec.wiring(chans, cfg),
            feats_channels=cfg.feats_channels,
            refine_channels=cfg.refine_channels,
            dropout=cfg.dropout,
            relation_momentum=cfg.relation_momentum,
            reps_momentum=cfg.dataset_reps_momentum,
            ignore_index=ignore_index,
        )
    else:
        head = spec.head(chans, num_classes, cfg)
    aux = AuxiliaryHead(chans[2], cfg.aux_channels, num_classes, cfg.dropout)
    return Segmentor(backbone, head, aux, cfg.loss_weights, ignore_index)
