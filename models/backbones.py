"""Backbones from timm as `features_only` pyramids; weights only from local files."""
from __future__ import annotations

from pathlib import Path

import timm
import torch.nn as nn


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but are not on disk (no hub access at run time)."""


def is_known_backbone(name: str) -> bool:
    return timm.is_model(name)


def build_backbone(name: str, pretrained: str | None = None, output_stride: int = 8) -> nn.Module:
    """A timm model returning its last four feature maps; `.channels` lists their widths.

    `pretrained` is a local weights file (a timm state dict); nothing is downloaded.
    """
    if pretrained is not None and not Path(pretrained).is_file():
        raise PretrainedWeightsError(
            f"model.pretrained: {pretrained} does not exist; expected a local timm state-dict file "
            f"for {name!r} (weights are never downloaded at run time)"
        )
    kwargs = {"features_only": True, "pretrained": pretrained is not None}
    if pretrained is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained), "hf_hub_id": None, "url": None}
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    model = timm.create_model(name, **kwargs)
    num_levels = len(model.feature_info)
    if num_levels > 4:
        model = timm.create_model(name, out_indices=tuple(range(num_levels - 4, num_levels)), **kwargs)
    model.channels = list(model.feature_info.channels())
    return model
