"""Framework registry: frameworks (baseline head, plug-in wiring), plug-ins, context schemes.

To add a framework, write `models/heads/<name>.py` with a head returning a dict of logit maps
(and naming its main output), plus a plug-in wiring (models/plugins/wiring.py), then register
both in FRAMEWORKS. To add a plug-in, write `models/plugins/<name>.py` (its head, built on any
framework's wiring, and its PluginSite) and register it in PLUGINS: every framework then gets
`<framework>_<name>`. A context scheme with a head of its own goes into SCHEMES.
A framework that builds its whole segmentor itself (Mask2Former, on transformers backbones)
registers a hook in `STANDALONE` instead; `framework_names()` stays the paper's table of heads,
`all_framework_names()` lists both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from models.backbones import build_backbone, resolve_pretrained
from models.context import aspp_dilations
from models.heads.deeplabv3 import ASPPHead, DeepLabV3Wiring
from models.heads.fcn import FCNHead, FCNWiring
from models.heads.isnet import ISNetHead
from models.hf_backbones import backbone_spec, resolve_backbone_weights
from models.plugins.idr_head import IDRHead, idr_site
from models.plugins.mcibipp import MCIBIPPHead, MCIBIPPOptions, mcibipp_site
from models.plugins.wiring import PluginSite
from models.layers import AuxiliaryHead
from models.heads.pspnet import PSPHead, PSPNetWiring
from models.segmentor import Segmentor
from models.heads.upernet import UPerHead, UPerNetWiring


@dataclass(frozen=True)
class Framework:
    head: Callable[..., nn.Module]  # (in_channels, num_classes, cfg) -> baseline head
    wiring: Callable[..., nn.Module]  # (in_channels, cfg, site, refine_at) -> plug-in wiring


FRAMEWORKS: dict[str, Framework] = {
    "fcn": Framework(
        head=lambda chans, k, cfg: FCNHead(chans, cfg.head_channels, k, cfg.dropout),
        wiring=lambda chans, cfg, site, refine_at: FCNWiring(cfg.feats_channels, site),
    ),
    "pspnet": Framework(
        head=lambda chans, k, cfg: PSPHead(chans, cfg.head_channels, k, cfg.dropout),
        wiring=lambda chans, cfg, site, refine_at: PSPNetWiring(
            chans, cfg.feats_channels, cfg.refine_channels, site, refine_at=refine_at
        ),
    ),
    "deeplabv3": Framework(
        head=lambda chans, k, cfg: ASPPHead(
            chans, cfg.head_channels, k, cfg.dropout, aspp_dilations(cfg.output_stride)
        ),
        wiring=lambda chans, cfg, site, refine_at: DeepLabV3Wiring(
            chans, cfg.feats_channels, cfg.refine_channels, site, aspp_dilations(cfg.output_stride), refine_at=refine_at
        ),
    ),
    "upernet": Framework(
        head=lambda chans, k, cfg: UPerHead(chans, cfg.head_channels, k, cfg.dropout),
        # the FPN (and so IDR's coarse context, its top level) is head_channels wide
        wiring=lambda chans, cfg, site, refine_at: UPerNetWiring(
            chans,
            cfg.feats_channels,
            cfg.head_channels,
            cfg.refine_channels,
            site,
            cfg.upernet_context,
            aspp_dilations(cfg.output_stride),
            refine_at=refine_at,
        ),
    ),
}


@dataclass(frozen=True)
class Plugin:
    """A context module that attaches to every framework of FRAMEWORKS through its wiring."""

    site: Callable[..., PluginSite]  # (cfg) -> where it sits in the framework
    refine_at: Callable[..., str]  # (cfg) -> when the wiring's self-attention refines the context
    build: Callable[..., nn.Module]  # (in_channels, num_classes, wiring, cfg, ignore_index) -> head
    loss_defaults: dict[str, float]  # weights of its outputs that ModelConfig.loss_weights may not name


def _idr_head(chans, k, wiring, cfg, ignore_index) -> nn.Module:
    return IDRHead(
        chans,
        k,
        wiring,
        feats_channels=cfg.feats_channels,
        refine_channels=cfg.refine_channels,
        dropout=cfg.dropout,
        relation_momentum=cfg.relation_momentum,
        reps_momentum=cfg.dataset_reps_momentum,
        ignore_index=ignore_index,
        stage1_input=cfg.stage1_input,
    )


def _mcibipp_head(chans, k, wiring, cfg, ignore_index) -> nn.Module:
    options = MCIBIPPOptions.from_mapping(cfg.plugin_options)
    return MCIBIPPHead(chans, k, wiring, cfg.feats_channels, cfg.refine_channels, cfg.dropout, ignore_index, options)


PLUGINS: dict[str, Plugin] = {
    "idr": Plugin(
        site=lambda cfg: idr_site(cfg.feats_channels), refine_at=lambda cfg: cfg.coarse_refine,
        build=_idr_head, loss_defaults={},
    ),
    "mcibipp": Plugin(
        site=lambda cfg: mcibipp_site(cfg.feats_channels), refine_at=lambda cfg: "none",
        build=_mcibipp_head, loss_defaults={"context": 1.0},
    ),
}

#: Frameworks that carry a plug-in other than IDR: `<framework>_<plugin>` -> (framework, plugin).
#: IDR itself is selected by the `grid.idr` axis on the plain framework names.
PLUGIN_FRAMEWORKS: dict[str, tuple[str, str]] = {
    f"{framework}_{plugin}": (framework, plugin) for plugin in PLUGINS if plugin != "idr" for framework in FRAMEWORKS
}

#: Context schemes with a head of their own (no plug-in wiring, no IDR): name -> head factory.
SCHEMES: dict[str, Callable[..., nn.Module]] = {
    "isnet": lambda chans, k, cfg, ignore_index: ISNetHead(chans, k, cfg.feats_channels, cfg.refine_channels, cfg.dropout),
}


def _build_mask2former(idr: bool, num_classes: int, cfg, ignore_index: int) -> nn.Module:
    from models.heads.mask2former import build_mask2former  # imports transformers: only when asked for

    return build_mask2former(idr, num_classes, cfg, ignore_index)


@dataclass(frozen=True)
class StandaloneFramework:
    """A framework that builds its whole segmentor (own backbone family, no generic head / aux)."""

    build: Callable[..., nn.Module]  # (idr, num_classes, cfg, ignore_index) -> segmentor
    check_backbone: Callable[[str], object]  # raises ValueError (one line) for a backbone it cannot build
    resolve_weights: Callable[[str, str | None], object]  # local weights file; PretrainedWeightsError if missing


#: Frameworks beyond the paper's table of heads, built by their own hook.
STANDALONE: dict[str, StandaloneFramework] = {
    "mask2former": StandaloneFramework(
        build=_build_mask2former, check_backbone=backbone_spec, resolve_weights=resolve_backbone_weights
    ),
}


def framework_names() -> list[str]:
    """Registered frameworks in registration order (the paper's table order, FCN first)."""
    return list(FRAMEWORKS)


def all_framework_names() -> list[str]:
    """Every buildable framework: :func:`framework_names`, the plug-in ones (`fcn_mcibipp`, ...),
    the context schemes with heads of their own (isnet, mcibi), then the standalone ones (mask2former)."""
    return list(FRAMEWORKS) + list(PLUGIN_FRAMEWORKS) + list(SCHEMES) + list(STANDALONE)


def carries_plugin(framework: str) -> bool:
    """True for frameworks that cannot take IDR on top: a plug-in is already built in, or a scheme head."""
    return framework in PLUGIN_FRAMEWORKS or framework in SCHEMES


def check_backbone(framework: str, backbone: str) -> None:
    """ValueError with a one-line reason if `framework` cannot be built on `backbone`."""
    if framework in STANDALONE:
        STANDALONE[framework].check_backbone(backbone)


def resolve_weights(framework: str, backbone: str, pretrained: str | None):
    """The local weights file `pretrained` stands for (never downloads); PretrainedWeightsError if missing."""
    if framework in STANDALONE:
        return STANDALONE[framework].resolve_weights(backbone, pretrained)
    return resolve_pretrained(backbone, pretrained)


def build_segmentor(framework: str, idr: bool, num_classes: int, cfg, ignore_index: int = 255) -> Segmentor:
    """The model of one cell. `cfg` is a `harness.config.ModelConfig`."""
    if framework in STANDALONE:
        return STANDALONE[framework].build(idr, num_classes, cfg, ignore_index)
    if framework not in FRAMEWORKS and not carries_plugin(framework):
        raise KeyError(f"unknown framework {framework!r}; allowed: {', '.join(all_framework_names())}")
    if idr and carries_plugin(framework):
        raise ValueError(f"framework {framework!r} carries its own context module; it cannot take IDR (grid.idr: [false])")
    backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.output_stride, cfg.drop_path_rate)
    chans = backbone.channels
    weights = dict(cfg.loss_weights)
    if framework in SCHEMES:
        head = SCHEMES[framework](chans, num_classes, cfg, ignore_index)
        weights = {**getattr(head, "loss_defaults", {}), **weights}
    elif idr or framework in PLUGIN_FRAMEWORKS:
        base, name = PLUGIN_FRAMEWORKS.get(framework, (framework, "idr"))
        plugin = PLUGINS[name]
        wiring = FRAMEWORKS[base].wiring(chans, cfg, plugin.site(cfg), plugin.refine_at(cfg))
        head = plugin.build(chans, num_classes, wiring, cfg, ignore_index)
        weights = {**plugin.loss_defaults, **weights}
    else:
        head = FRAMEWORKS[framework].head(chans, num_classes, cfg)
    aux = AuxiliaryHead(chans[2], cfg.aux_channels, num_classes, cfg.dropout)
    return Segmentor(backbone, head, aux, weights, ignore_index)
