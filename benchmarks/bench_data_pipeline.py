"""Training-pipeline throughput of one loader worker before / after, and the workers a GPU needs.

    python benchmarks/bench_data_pipeline.py [--images N] [--epochs N] [--batch B]

Writes synthetic image/label pairs in a temporary folder, in each release's formats:
Cityscapes-like 2048x1024 sources (RGB PNG as in leftImg8bit, and the same as JPEG) with raw
labelIds PNGs, and ADE20K-like 683x512 JPEGs with raw annotation PNGs. Each row runs
``SegmentationDataset.load`` and the card's training pipeline (random resize, crop, flip,
photometric distortion, normalisation, padding) over every sample for a few epochs,
single-threaded like one DataLoader worker, twice per epoch: "before" is the pipeline kept in
``benchmarks/pipeline_reference.py`` (Pillow decode, whole-image resize, then crop), "after" is
``harness.data`` today (OpenCV decode, crop-window resize). Both run alternately in one process,
so their ratio holds on a loaded machine. Targets: >= 2x on Cityscapes-size images, >= 1.5x
on ADE-size.

"Workers per GPU" is how many such workers keep one GPU fed when a training step takes 0.15 s
or 0.25 s at ``--batch`` images per GPU (default 2): ceil(batch / step_s / images_per_s).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.data import ade20k, cityscapes, dataset_card  # noqa: E402
from harness.data.base import Sample, SegmentationDataset, read_image  # noqa: E402
from harness.data.transforms import TrainPipeline  # noqa: E402


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour gradients, a few blocks and mild noise: compresses roughly like a photo."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        fy, fx, phase = rng.uniform(2, 9), rng.uniform(2, 9), rng.uniform(0, 6.3)
        img[..., c] = 128 + 80 * np.sin(2 * np.pi * (y / h * fy + x / w * fx) + phase)
    for _ in range(12):
        y0, x0 = int(rng.integers(0, h - h // 8)), int(rng.integers(0, w - w // 8))
        img[y0 : y0 + h // 8, x0 : x0 + w // 8] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 6, size=(h, w, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def _regions(rng: np.random.Generator, h: int, w: int, values: np.ndarray, block: int) -> np.ndarray:
    """Label map of block x block regions, each a value drawn from `values`."""
    grid = rng.choice(values, size=(math.ceil(h / block), math.ceil(w / block)))
    return np.kron(grid, np.ones((block, block), grid.dtype))[:h, :w].astype(np.uint8)


def write_pairs(folder: Path, count: int, size: tuple[int, int], image_format: str, label_values, seed: int):
    """`count` (image, raw label) files of size (h, w); returns the samples."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    samples = []
    for i in range(count):
        image_path = folder / f"{i:04d}.{'png' if image_format == 'PNG' else 'jpg'}"
        label_path = folder / f"{i:04d}_label.png"
        extra = {"quality": 90} if image_format == "JPEG" else {}
        Image.fromarray(_photo(rng, *size)).save(image_path, format=image_format, **extra)
        Image.fromarray(_regions(rng, *size, np.asarray(label_values), block=max(size) // 16)).save(label_path)
        samples.append(Sample(image_path, label_path))
    return samples


def _reference():
    name = "pipeline_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "pipeline_reference.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def one_epoch(load, pipeline, n: int, epoch: int) -> float:
    """Seconds to load and transform every sample once."""
    start = time.perf_counter()
    for i in range(n):
        image, label = load(i)
        pipeline(image, label, i, epoch)
    return time.perf_counter() - start


def measure(dataset: SegmentationDataset, card, epochs: int) -> tuple[float, float]:
    """(before, after) images/s, the two pipelines alternating epoch by epoch."""
    ref = _reference()
    before = (partial(ref.load_with_pillow, dataset), ref.ReferenceTrainPipeline(card, seed=0))
    after = (dataset.load, TrainPipeline(card, seed=0))
    n = len(dataset)
    one_epoch(*before, 1, 0), one_epoch(*after, 1, 0)  # warm-up
    seconds = [0.0, 0.0]
    for epoch in range(epochs):
        seconds[0] += one_epoch(*before, n, epoch)
        seconds[1] += one_epoch(*after, n, epoch)
    return epochs * n / seconds[0], epochs * n / seconds[1]


def decode_ms(samples: list[Sample]) -> tuple[float, float]:
    """Milliseconds per image to decode with Pillow and with OpenCV (the library harness.data uses)."""
    ref = _reference()
    times = []
    for read in (ref.read_image_pillow, read_image):
        read(samples[0].image)
        start = time.perf_counter()
        for sample in samples:
            read(sample.image)
        times.append(1000 * (time.perf_counter() - start) / len(samples))
    return times[0], times[1]


def workers(batch: int, step_s: float, per_s: float) -> int:
    return math.ceil(batch / step_s / per_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="synthetic pairs per source (default 6)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over them (default 2)")
    parser.add_argument("--batch", type=int, default=2, help="images per GPU per step")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one DataLoader worker
    cv2.setNumThreads(1)

    city_card, ade_card = dataset_card("cityscapes"), dataset_card("ade20k")
    city_ids = np.array([label.id for label in cityscapes.cs_labels.labels if 0 <= label.id < 34])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        cases = [
            ("Cityscapes 2048x1024 PNG", city_card, write_pairs(tmp / "cp", args.images, (1024, 2048), "PNG", city_ids, 0),
             cityscapes.decode_label, 2.0),
            ("Cityscapes 2048x1024 JPEG", city_card, write_pairs(tmp / "cj", args.images, (1024, 2048), "JPEG", city_ids, 1),
             cityscapes.decode_label, 2.0),
            ("ADE 683x512 JPEG", ade_card, write_pairs(tmp / "aj", args.images, (512, 683), "JPEG", np.arange(151), 2),
             ade20k.decode_label, 1.5),
        ]
        for title, card, samples, decode, target in cases:
            dataset = SegmentationDataset(samples, card, TrainPipeline(card, seed=0), decode)
            before, after = measure(dataset, card, args.epochs)
            rows.append((title, card.crop_size, before, after, target, *decode_ms(samples)))
    _print(rows, args)
    return 0


def _print(rows, args) -> None:
    print(f"training pipeline, one worker (1 thread), {args.images} images x {args.epochs} epochs per row, "
          f"before/after alternating; workers per GPU at {args.batch} images per step of 0.15 s / 0.25 s")
    header = (f"{'source':27} {'crop':>9} {'before/s':>9} {'after/s':>8} {'ratio':>6} {'target':>6} "
              f"{'PIL ms':>7} {'cv2 ms':>7} {'workers before':>15} {'workers after':>14}")
    print(header)
    print("-" * len(header))
    for title, crop, before, after, target, pil_ms, cv_ms in rows:
        w_before = f"{workers(args.batch, 0.15, before)} / {workers(args.batch, 0.25, before)}"
        w_after = f"{workers(args.batch, 0.15, after)} / {workers(args.batch, 0.25, after)}"
        verdict = "ok" if after / before >= target else "MISS"
        print(f"{title:27} {crop[0]:>4}x{crop[1]:<4} {before:9.2f} {after:8.2f} {after / before:5.2f}x {target:4.1f}x "
              f"{pil_ms:7.1f} {cv_ms:7.1f} {w_before:>15} {w_after:>14}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
