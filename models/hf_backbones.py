"""The transformers backbones Mask2Former is built on: their configs and local weights.

Kept apart from models/heads/mask2former.py so that checking a plan's backbone names and weight files
imports neither transformers nor torchvision.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.backbones import CACHE, PretrainedWeightsError, _hf_cached_file, resolve_name

OUT_FEATURES = ["stage1", "stage2", "stage3", "stage4"]


@dataclass(frozen=True)
class BackboneSpec:
    family: str  # "resnet" or "swin"
    kwargs: dict
    hub_repo: str  # where `pretrained: cache` looks in the local Hugging Face cache

    def config(self, **overrides):
        from transformers import ResNetConfig, SwinConfig

        cls = ResNetConfig if self.family == "resnet" else SwinConfig
        return cls(**{**self.kwargs, "out_features": list(OUT_FEATURES), **overrides})


def _resnet(depths: list[int], bottleneck: bool, repo: str) -> BackboneSpec:
    widths = [256, 512, 1024, 2048] if bottleneck else [64, 128, 256, 512]
    kwargs = dict(
        embedding_size=64,
        hidden_sizes=widths,
        depths=depths,
        layer_type="bottleneck" if bottleneck else "basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,  # stride in the 3x3 conv (torchvision / detectron2 STRIDE_IN_1X1 False)
    )
    return BackboneSpec("resnet", kwargs, repo)


def _swin(embed_dim: int, depths: list[int], heads: list[int], window: int, image_size: int, repo: str) -> BackboneSpec:
    kwargs = dict(
        image_size=image_size,
        patch_size=4,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=window,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.3,
        use_absolute_embeddings=False,
    )
    return BackboneSpec("swin", kwargs, repo)


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": _resnet([2, 2, 2, 2], False, "microsoft/resnet-18"),
    "resnet34": _resnet([3, 4, 6, 3], False, "microsoft/resnet-34"),
    "resnet50": _resnet([3, 4, 6, 3], True, "microsoft/resnet-50"),
    "resnet101": _resnet([3, 4, 23, 3], True, "microsoft/resnet-101"),
    "swin_tiny_patch4_window7_224": _swin(
        96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 224, "microsoft/swin-tiny-patch4-window7-224"
    ),
    "swin_base_patch4_window12_384": _swin(
        128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384, "microsoft/swin-base-patch4-window12-384-in22k"
    ),
    "swin_large_patch4_window12_384": _swin(
        192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 384, "microsoft/swin-large-patch4-window12-384-in22k"
    ),
}


def _spec_key(name: str) -> str:
    return resolve_name(name).split(".", 1)[0]  # aliases resolved, timm pretrained tag dropped


def backbone_spec(name: str) -> BackboneSpec:
    """The transformers backbone for a `ModelConfig.backbone` name; ValueError if unsupported."""
    key = _spec_key(name)
    if key not in BACKBONES:
        allowed = "resnet18, resnet34, resnet50, resnet101, swin_t, swin_b, swin_l"
        raise ValueError(f"mask2former backbone {name!r} is not supported; allowed: {allowed}")
    return BACKBONES[key]


def resolve_backbone_weights(name: str, pretrained: str | Path | None) -> Path | None:
    """The local transformers-format weights file for the backbone, or None. Never downloads."""
    if pretrained is None:
        return None
    spec = backbone_spec(name)
    if str(pretrained) == CACHE:
        looked = []
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found, pattern = _hf_cached_file(spec.hub_repo, filename, None)
            if found is not None:
                return found
            looked.append(str(pattern))
        raise PretrainedWeightsError(
            f"model.pretrained: cache: no local weights for the mask2former backbone {name!r} ({spec.hub_repo}); "
            f"looked for {'; '.join(looked)}; nothing is downloaded: put the file there or give its path"
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(
            f"model.pretrained: {path} does not exist; expected there a local transformers-format state dict "
            f"(.safetensors/.bin/.pth) of {spec.hub_repo} for the mask2former backbone {name!r} "
            f"(weights are never downloaded)"
        )
    return path
