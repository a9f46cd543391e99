"""Dataset cards: the facts about a benchmark that the pipelines, metrics and tables need."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetCard:
    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    splits: dict[str, int] = field(default_factory=dict)  # official split sizes (0: generated)
    ignore_index: int = 255
    base_scale: tuple[int, int] = (2048, 512)  # (long side, short side) of the keep-ratio resize
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: tuple[int, int] = (512, 512)  # (height, width)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    test_protocol: str = "whole image, single scale"
    focus_classes: tuple[str, ...] = ()  # classes whose IoU tables show one by one

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
