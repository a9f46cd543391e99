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
    # keep_ratio True: (long side, short side) the image is fitted into, aspect ratio kept;
    # keep_ratio False: the exact output (height, width), aspect ratio ignored.
    base_scale: tuple[int, int] = (2048, 512)
    keep_ratio: bool = True
    ratio_range: tuple[float, float] = (0.5, 2.0)  # training: base_scale times a factor drawn from this range
    crop_size: tuple[int, int] = (512, 512)  # (height, width)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    # label pairs exchanged when an image is flipped horizontally (left/right body parts)
    flip_swap: tuple[tuple[int, int], ...] = ()
    rotate_prob: float = 0.0  # probability of a random rotation (after crop and flip)
    rotate_degrees: float = 0.0  # angle drawn uniformly from [-rotate_degrees, rotate_degrees]
    photometric: bool = True
    test_scale: tuple[int, int] | None = None  # test-time resize, same meaning as base_scale; None: base_scale
    test_protocol: str = "whole image, single scale"
    focus_classes: tuple[str, ...] = ()  # classes whose IoU tables show one by one
    # label mapping, class set and averaging: "official" (the official dataset class's, the only
    # one the dataset has) or a named protocol, e.g. coco_stuff10k "paper (182 classes)"
    label_protocol: str = "official"

    def __post_init__(self) -> None:
        if len(self.palette) != len(self.class_names):
            raise ValueError(f"{self.name}: {len(self.palette)} palette colours for {len(self.class_names)} classes")
        if not 0.0 <= self.rotate_prob <= 1.0 or self.rotate_degrees < 0:
            raise ValueError(f"{self.name}: rotate_prob must be in [0, 1] and rotate_degrees >= 0")
        seen: set[int] = set()
        for a, b in self.flip_swap:
            if a == b or not (0 <= a < self.num_classes and 0 <= b < self.num_classes) or {a, b} & seen:
                raise ValueError(f"{self.name}: flip_swap pair ({a}, {b}) must be two distinct class ids used once")
            seen |= {a, b}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def eval_scale(self) -> tuple[int, int]:
        return self.test_scale if self.test_scale is not None else self.base_scale


def bit_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """`count` distinct colours from the PASCAL VOC bit-interleaving colour map (skipping black).

    For visualisation only; datasets without an official palette use it.
    """
    colours = []
    for index in range(1, count + 1):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)
