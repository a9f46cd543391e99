"""Framework registry: frameworks (baseline head, plug-in wiring), plug-ins, context schemes.

To add a framework, write `models/heads/<name>.py` with a head returning a dict of logit maps
(and naming its main output), plus a plug-in wiring (models/plugins/wiring.py), then register
both in FRAMEWORKS. To add a plug-in, write `models/plugins/<name>.py` (its head, built on any
framework's wiring, and its PluginSite) and register it in PLUGINS: every framework then gets
`<framework>_<name>`. A context scheme with a head of its own (ISNet, MCIBI; the similarity-driven
Non-local, DNL, OCRNet, DANet, CCNet) goes into SCHEMES: it is compared with IDR, not combined.
A framework in the user's own package needs no edit here: an experiment names it by import path
(``"my_pkg.heads:FRAMEWORK"``) or by the name its package declares in the entry-point group
``idrbench.frameworks``; the object is a :class:`Framework` (or a :class:`StandaloneFramework`).
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
from models.heads.ccnet import ccnet_head
from models.heads.danet import DANetHead
from models.heads.deeplabv3 import ASPPHead, DeepLabV3Wiring
from models.heads.dnlnet import dnl_head
from models.heads.fcn import FCNHead, FCNWiring
from models.heads.isnet import ISNetHead, isnet_options
from models.heads.mcibi import MCIBIHead, MCIBIOptions
from models.heads.nonlocalnet import nonlocal_head
from models.heads.ocrnet import OCRHead
from models.hf_backbones import backbone_spec, resolve_backbone_weights
from models.plugins.idr_head import IDRCore, IDRHead, idr_site
from models.plugins.mcibipp import MCIBIPPHead, MCIBIPPOptions, mcibipp_site
from models.plugins.wiring import PluginSite
from models.layers import AuxiliaryHead, use_activation
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
        build=_idr_head,
    ),
    "mcibipp": Plugin(
        site=lambda cfg: mcibipp_site(cfg.feats_channels), refine_at=lambda cfg: "none",
        build=_mcibipp_head,
    ),
}

#: Frameworks that carry a plug-in other than IDR: `<framework>_<plugin>` -> (framework, plugin).
#: IDR itself is selected by the `grid.idr` axis on the plain framework names.
PLUGIN_FRAMEWORKS: dict[str, tuple[str, str]] = {
    f"{framework}_{plugin}": (framework, plugin) for plugin in PLUGINS if plugin != "idr" for framework in FRAMEWORKS
}

#: Context schemes with a head of their own (no plug-in wiring, no IDR):
#: name -> (in_channels, num_classes, cfg, ignore_index) -> head. A head may own its auxiliary head
#: (`owns_auxiliary`: OCRNet reads the auxiliary logits as its object regions), name default weights
#: of its extra outputs (`loss_defaults`, DANet's pam / cam) and its context module
#: (`context_modules`, reported by harness.measure).
SCHEMES: dict[str, Callable[..., nn.Module]] = {
    "isnet": lambda chans, k, cfg, ignore_index: ISNetHead(
        chans, k, cfg.feats_channels, cfg.refine_channels, cfg.dropout, **isnet_options(cfg.plugin_options)
    ),
    "nonlocalnet": lambda chans, k, cfg, ignore_index: nonlocal_head(chans, cfg.head_channels, k, cfg.dropout),
    "dnlnet": lambda chans, k, cfg, ignore_index: dnl_head(chans, cfg.head_channels, k, cfg.dropout),
    "ocrnet": lambda chans, k, cfg, ignore_index: OCRHead(chans, cfg.head_channels, cfg.aux_channels, k, cfg.dropout),
    "danet": lambda chans, k, cfg, ignore_index: DANetHead(chans, cfg.head_channels, k, cfg.dropout),
    "ccnet": lambda chans, k, cfg, ignore_index: ccnet_head(chans, cfg.head_channels, k, cfg.dropout),
    "mcibi": lambda chans, k, cfg, ignore_index: MCIBIHead(
        chans, k, cfg.feats_channels, cfg.refine_channels, cfg.dropout, ignore_index,
        aspp_dilations(cfg.output_stride), MCIBIOptions.from_mapping(cfg.plugin_options),
    ),
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


ENTRY_POINT_GROUP = "idrbench.frameworks"


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def _load_user_framework(name: str) -> Framework | StandaloneFramework:
    """The framework object at import path `module:attribute`, or declared under entry point `name`;
    ValueError in one line if it cannot be imported or is not a framework."""
    import importlib

    try:
        if ":" in name:
            module_name, _, attribute = name.partition(":")
            found = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
        else:
            found = _entry_points()[name].load()
    except KeyError:
        raise ValueError(f"unknown framework {name!r}; allowed: {', '.join(all_framework_names())}, "
                         "an import path module:attribute, or an entry point of group "
                         f"{ENTRY_POINT_GROUP}") from None
    except (ImportError, AttributeError) as err:
        raise ValueError(f"framework {name!r}: cannot import it ({type(err).__name__}: {err})") from None
    if isinstance(found, (Framework, StandaloneFramework)):
        return found
    if callable(getattr(found, "head", None)) and callable(getattr(found, "wiring", None)):
        return Framework(head=found.head, wiring=found.wiring)
    raise ValueError(f"framework {name!r}: {type(found).__name__} is not a models.registry.Framework "
                     "(head(in_channels, num_classes, cfg) and wiring(in_channels, cfg, site, refine_at))")


def framework_spec(name: str) -> Framework | StandaloneFramework:
    """The framework `name`: registered here, an import path, or an entry point; ValueError (one line) if none."""
    if name in FRAMEWORKS:
        return FRAMEWORKS[name]
    if name in PLUGIN_FRAMEWORKS:
        return FRAMEWORKS[PLUGIN_FRAMEWORKS[name][0]]
    if name in STANDALONE:
        return STANDALONE[name]
    return _load_user_framework(name)


def framework_source(name: str) -> str:
    """The source of a user's framework module (its FLOP counts are cached by it); '' for ours."""
    import inspect

    if name in FRAMEWORKS or name in PLUGIN_FRAMEWORKS or name in STANDALONE or name in SCHEMES:
        return ""
    spec = framework_spec(name)
    module = inspect.getmodule(spec.head if isinstance(spec, Framework) else spec.build)
    try:
        return inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        return ""


def framework_names() -> list[str]:
    """Registered frameworks in registration order (the paper's table order, FCN first)."""
    return list(FRAMEWORKS)


def all_framework_names() -> list[str]:
    """Every buildable framework: :func:`framework_names`, the plug-in ones (`fcn_mcibipp`, ...),
    the context schemes with heads of their own (isnet, ocrnet, ...), the standalone ones (mask2former),
    then those that installed packages declare (entry points); import paths are not listed."""
    ours = list(FRAMEWORKS) + list(PLUGIN_FRAMEWORKS) + list(SCHEMES) + list(STANDALONE)
    return ours + sorted(set(_entry_points()) - set(ours))


def check_framework(name: str) -> None:
    """ValueError with a one-line reason if `name` is no framework that can be built."""
    if name not in SCHEMES:
        framework_spec(name)


def carries_plugin(framework: str) -> bool:
    """True for frameworks that cannot take IDR on top: a plug-in is already built in, or a scheme head."""
    return framework in PLUGIN_FRAMEWORKS or framework in SCHEMES


def check_backbone(framework: str, backbone: str) -> None:
    """ValueError with a one-line reason if `framework` cannot be built on `backbone`."""
    spec = None if framework in SCHEMES else framework_spec(framework)
    if isinstance(spec, StandaloneFramework):
        spec.check_backbone(backbone)


def resolve_weights(framework: str, backbone: str, pretrained: str | None):
    """The local weights file `pretrained` stands for (never downloads); PretrainedWeightsError if missing."""
    spec = None if framework in SCHEMES else framework_spec(framework)
    if isinstance(spec, StandaloneFramework):
        return spec.resolve_weights(backbone, pretrained)
    return resolve_pretrained(backbone, pretrained)


def build_segmentor(framework: str, idr: bool, num_classes: int, cfg, ignore_index: int = 255) -> Segmentor:
    """The model of one cell. `cfg` is a `harness.config.ModelConfig`."""
    if framework not in SCHEMES:
        try:
            spec = framework_spec(framework)
        except ValueError as err:
            raise KeyError(str(err)) from None
        if isinstance(spec, StandaloneFramework):
            return with_relation_mode(spec.build(idr, num_classes, cfg, ignore_index), cfg)
    backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.output_stride, cfg.drop_path_rate)
    chans = backbone.channels
    activation = getattr(cfg, "head_activation", "relu")
    head = use_activation(head_of(framework, idr, chans, num_classes, cfg, ignore_index), activation)
    weights = {**getattr(head, "loss_defaults", {}), **cfg.loss_weights}
    aux = None if getattr(head, "owns_auxiliary", False) else AuxiliaryHead(chans[2], cfg.aux_channels, num_classes, cfg.dropout)
    aux = None if aux is None else use_activation(aux, activation)
    return with_relation_mode(Segmentor(backbone, head, aux, weights, ignore_index), cfg)


def with_relation_mode(model: nn.Module, cfg) -> nn.Module:
    """Every IDR module of `model` takes `cfg.idr_relations` (deletion, or a control)."""
    mode = getattr(cfg, "idr_relations", "deletion")
    for module in model.modules():
        if isinstance(module, IDRCore):
            module.relation_mode = mode
    return model


def head_of(framework: str, idr: bool, chans: list[int], num_classes: int, cfg, ignore_index: int = 255) -> nn.Module:
    """The decode head of a framework with a generic backbone (ours, a plug-in one, a context scheme or
    a user's); ValueError (one line) for a standalone framework or IDR on a framework that carries its own
    context module."""
    if idr and carries_plugin(framework):
        raise ValueError(f"framework {framework!r} carries its own context module; it cannot take IDR (grid.idr: [false])")
    if framework in SCHEMES:
        return SCHEMES[framework](chans, num_classes, cfg, ignore_index)
    spec = framework_spec(framework)
    if not isinstance(spec, Framework):
        raise ValueError(f"{framework} builds its whole segmentor: it has no head of its own")
    if not (idr or framework in PLUGIN_FRAMEWORKS):
        return spec.head(chans, num_classes, cfg)
    plugin = PLUGINS[PLUGIN_FRAMEWORKS[framework][1] if framework in PLUGIN_FRAMEWORKS else "idr"]
    wiring = spec.wiring(chans, cfg, plugin.site(cfg), plugin.refine_at(cfg))
    return plugin.build(chans, num_classes, wiring, cfg, ignore_index)
