"""GPU-hours of a plan, estimated from fvcore FLOPs (for `python -m harness.run --dry-run`).

For a cell, estimate = (training FLOPs + evaluation FLOPs) / rate, where

* training = 3 x forward FLOPs at the training crop x batch size x iterations (a backward pass
  costs about two forwards);
* evaluation = forward FLOPs of one test image x images of the split x test-time augmentations
  (flip doubles; a scale r costs r^2). A test image has the card's test scale; a keep-ratio scale
  (long, short) is taken as a 4:3 image fitted into it. Sliding windows count every window.
* rate = fvcore FLOPs one GPU sustains while training. It is *measured* when `results/` holds
  finished GPU cells of the experiment (the median over them of the training FLOPs per second
  per GPU), and otherwise the assumption `ASSUMED_RATE` (overridable with `--gpu-rate`), which
  the plan prints beside the figures. It is an estimate, never a measurement of the cell itself.

Forward FLOPs are counted once per distinct model with fvcore (`harness.measure.count_flops`,
a fused multiply-add = 1 flop) at a quarter of the crop's side and scaled by the pixel count,
which is exact for convolutions (tests/test_estimate.py). Measured against full-size counts with
ResNet-50 (full_table.yaml settings): FCN and PSPNet within 0.2%; FCN + IDR 3-4% and PSPNet + IDR
(512x1024) 7% below, since IDR's count grows a little faster than the pixel count.

Counts are cached on disk outside results/ (`~/.cache/idrbench/flop_counts.json`, or the folder
in $IDRBENCH_CACHE_DIR), one entry per model and counted input size, keyed by everything that
changes a count: framework, IDR, number of classes, the model config (pretrained weights
aside), the input size, the versions of torch, timm, fvcore and transformers, and a hash of
the model code (models/*.py, harness/measure.py). A second `--dry-run` counts nothing again.
"""
from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable, Iterable

from harness.config import Cell
from harness.data import dataset_card
from harness.diskcache import library_version, read_json, write_json

# fvcore FLOPs/s per GPU during training when nothing was measured: 20e12 multiply-adds/s, about
# 40 TFLOP/s in the usual 2-flops-per-MAC count, which is roughly what convolutional
# segmentation training sustains on an A100 with TF32 convolutions. An assumption, not a figure
# measured by this project: calibrate it with a finished GPU cell (see the module docstring).
ASSUMED_RATE = 20e12
TEST_ASPECT = 4 / 3  # long / short side assumed for keep-ratio test scales
_MIN_SIDE = 64


@dataclass(frozen=True)
class Rate:
    flops_per_s: float
    source: str  # "measured from N GPU cells" or "assumed"


@dataclass(frozen=True)
class Estimate:
    cell_id: str
    forward_gflops: float  # at the training crop
    train_gflops: float
    eval_gflops: float
    gpu_hours: float
    wall_hours: float  # gpu_hours / GPUs per cell


def reduced_size(size: tuple[int, int], factor: int = 4) -> tuple[int, int]:
    """`size` divided by `factor` per side, rounded to a multiple of 32 (at least 64)."""
    return tuple(max(_MIN_SIDE, int(round(side / factor / 32)) * 32) for side in size)


def scaled_forward_flops(count: Callable[[tuple[int, int]], int], size: tuple[int, int]) -> float:
    """Forward FLOPs at `size`, counted at a reduced size and scaled by the pixel ratio."""
    small = reduced_size(size)
    if small[0] >= size[0] and small[1] >= size[1]:
        return float(count(size))
    return count(small) * (size[0] * size[1]) / (small[0] * small[1])


def eval_image_size(card) -> tuple[int, int]:
    """(height, width) of a typical test image after the card's test resize."""
    long_side, short_side = card.eval_scale
    if not card.keep_ratio:
        return long_side, short_side  # exact (height, width)
    width = min(long_side, round(short_side * TEST_ASPECT))
    return short_side, width


def window_count(size: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int]) -> int:
    """Sliding windows over an image of `size` (as harness.evaluate.window_starts)."""
    total = 1
    for length, c, s in zip(size, crop, stride):
        total *= 1 if length <= c else math.ceil((length - c) / s) + 1
    return total


def eval_pixels_per_image(cell: Cell, card) -> float:
    """Pixels the model sees per test image, summed over windows and augmentations."""
    height, width = eval_image_size(card)
    total = 0.0
    for ratio in cell.eval.scales:
        h, w = round(height * ratio), round(width * ratio)
        if cell.eval.mode == "slide":
            crop = tuple(cell.eval.crop_size)
            total += window_count((max(h, crop[0]), max(w, crop[1])), crop, tuple(cell.eval.stride)) * crop[0] * crop[1]
        else:
            total += h * w
    return total * (2 if cell.eval.flip else 1)


def model_key(cell: Cell, num_classes: int) -> str:
    from models.registry import framework_source

    model = cell.model.model_dump_json(exclude={"pretrained"})
    key = f"{cell.framework}|{cell.idr}|{num_classes}|{model}"
    source = framework_source(cell.framework)  # a user's framework: its code decides the count too
    return key + f"|{hashlib.sha256(source.encode()).hexdigest()[:16]}" if source else key


def count_model_flops(cell: Cell, num_classes: int, ignore_index: int) -> Callable[[tuple[int, int]], int]:
    """A FLOP counter of the cell's model, built without pretrained weights."""
    import torch

    from harness.measure import count_flops
    from models import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor(cell.framework, cell.idr, num_classes, cell.model.model_copy(update={"pretrained": None}),
                            ignore_index)
    return lambda size: count_flops(model, size)["total"]


_ROOT = Path(__file__).resolve().parents[1]
_COUNTED_LIBRARIES = ("torch", "timm", "fvcore", "transformers")
FLOP_COUNTS_FILE = "flop_counts.json"


@cache
def code_fingerprint() -> str:
    """Library versions and a hash of the code that decides a model's FLOP count."""
    digest = hashlib.sha256()
    for name in _COUNTED_LIBRARIES:
        digest.update(f"{name}={library_version(name)};".encode())
    for path in sorted([*(_ROOT / "models").rglob("*.py"), _ROOT / "harness" / "measure.py"]):
        digest.update(str(path.relative_to(_ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


class FlopCache:
    """FLOP counts on disk (harness/diskcache.py), one per (model key, input size, code fingerprint)."""

    def __init__(self):
        self.counts: dict[str, int] = read_json(FLOP_COUNTS_FILE)
        self.dirty = False

    @staticmethod
    def key(model: str, size: tuple[int, int]) -> str:
        text = f"{code_fingerprint()}|{model}|{size[0]}x{size[1]}"
        return hashlib.sha256(text.encode()).hexdigest()

    def count(self, model: str, size: tuple[int, int], counter: Callable[[], Callable[[tuple[int, int]], int]]) -> int:
        """The cached count, or `counter()(size)` stored for next time."""
        key = self.key(model, size)
        if key not in self.counts:
            self.counts[key] = int(counter()(size))
            self.dirty = True
        return self.counts[key]

    def save(self) -> None:
        if self.dirty:
            write_json(FLOP_COUNTS_FILE, self.counts)


def measured_rate(records: Iterable[dict]) -> Rate | None:
    """Median training FLOPs/s per GPU over finished GPU cells (None if there are none)."""
    rates = []
    for rec in records:
        flops = (rec.get("complexity") or {}).get("total")
        config = rec.get("config") or {}
        train = config.get("train") or {}
        seconds = rec.get("train_time_s")
        iterations = train.get("iterations", 0) - rec.get("resumed_from_iteration", 0)
        gpus = rec.get("world_size") or 1
        trained_here = not rec.get("evaluated_from")
        if not trained_here or not str(rec.get("device", "")).startswith("cuda") or not flops or not seconds or iterations <= 0:
            continue
        rates.append(3 * flops * train.get("batch_size", 0) * iterations / (seconds * gpus))
    if not rates:
        return None
    return Rate(statistics.median(rates), f"measured from {len(rates)} finished GPU cell(s)")


def estimate_cells(cells: list[Cell], rate: Rate, on_model: Callable[[int, int], None] | None = None) -> list[Estimate]:
    """An estimate per cell; each distinct model is counted once (`on_model(done, total)` reports)."""
    cards = {c.cell_id: dataset_card(c.dataset, c.data_options) for c in cells}
    keys = {c.cell_id: model_key(c, cards[c.cell_id].num_classes) for c in cells}
    per_pixel: dict[str, float] = {}
    distinct: dict[str, Cell] = {}
    for cell in cells:
        distinct.setdefault(keys[cell.cell_id], cell)
    flop_cache = FlopCache()
    try:
        for done, (key, cell) in enumerate(distinct.items(), 1):
            card = cards[cell.cell_id]
            built = cache(lambda cell=cell, card=card: count_model_flops(cell, card.num_classes, card.ignore_index))
            crop = tuple(card.crop_size)
            counted = scaled_forward_flops(lambda size, key=key, built=built: flop_cache.count(key, size, built), crop)
            per_pixel[key] = counted / (crop[0] * crop[1])
            if on_model is not None:
                on_model(done, len(distinct))
    finally:
        flop_cache.save()  # the models counted so far, even when a later one fails
    out = []
    for cell in cells:
        card = cards[cell.cell_id]
        flops_per_pixel = per_pixel[keys[cell.cell_id]]
        crop_pixels = card.crop_size[0] * card.crop_size[1]
        forward = flops_per_pixel * crop_pixels
        train = 3 * forward * cell.train.batch_size * cell.train.iterations
        val_images = card.splits.get(cell.eval.split, 0)
        evaluation = flops_per_pixel * eval_pixels_per_image(cell, card) * val_images
        gpu_hours = (train + evaluation) / rate.flops_per_s / 3600
        out.append(Estimate(cell.cell_id, forward / 1e9, train / 1e9, evaluation / 1e9, gpu_hours,
                            gpu_hours / cell.scaling.num_workers))
    return out


def plan_rate(results_dir: Path, assumed: float | None, source: str = "given with --gpu-rate") -> Rate:
    """The rate for a plan: `--gpu-rate` if given, else measured from results_dir, else ASSUMED_RATE."""
    if assumed is not None:
        return Rate(assumed, source)
    from harness.records import find_records

    return measured_rate(find_records(results_dir)) or Rate(ASSUMED_RATE, "assumed (no finished GPU cell to measure it)")
