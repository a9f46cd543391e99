"""Model zoo: timm backbones, decode heads (one file per framework) and the IDR module."""
from models.registry import build_segmentor, framework_names

__all__ = ["build_segmentor", "framework_names"]
