"""Training-pipeline throughput of one loader worker, and the loader workers a GPU needs.

    python benchmarks/bench_data_pipeline.py [--images N] [--epochs N] [--step-s S] [--batch B]

Writes synthetic image/label pairs in a temporary folder, in each release's formats:
Cityscapes-like 2048x1024 sources (RGB PNG as in leftImg8bit, and the same as JPEG) with raw
labelIds PNGs, and ADE20K-like 683x512 JPEGs with raw annotation PNGs. Each row runs
``SegmentationDataset.__getitem__`` (decode, raw-id mapping, checks, then the card's
training pipeline: random resize, crop, flip, photometric distortion, normalisation, padding)
over every sample for a few epochs, single-threaded like one DataLoader worker.

The last column is how many such workers keep one GPU fed when a training step takes
``--step-s`` seconds (default 0.25) at ``--batch`` images per GPU (default 2):
ceil(batch / step_s / images_per_s).
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.data import ade20k, cityscapes, dataset_card  # noqa: E402
from harness.data.base import Sample, SegmentationDataset  # noqa: E402
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


def measure(dataset: SegmentationDataset, epochs: int) -> tuple[float, float, float]:
    """(images/s, ms per image in load, ms per image in the pipeline) over `epochs` passes."""
    dataset[0]  # warm-up
    n = len(dataset)
    load_s = pipe_s = 0.0
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for i in range(n):
            t0 = time.perf_counter()
            image, label = dataset.load(i)
            t1 = time.perf_counter()
            dataset.pipeline(image, label, i, epoch)
            t2 = time.perf_counter()
            load_s += t1 - t0
            pipe_s += t2 - t1
    total = epochs * n
    return total / (load_s + pipe_s), 1000 * load_s / total, 1000 * pipe_s / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="synthetic pairs per source (default 6)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over them (default 2)")
    parser.add_argument("--step-s", type=float, default=0.25, help="GPU training step time in seconds")
    parser.add_argument("--batch", type=int, default=2, help="images per GPU per step")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one DataLoader worker

    city_card, ade_card = dataset_card("cityscapes"), dataset_card("ade20k")
    city_ids = np.array([label.id for label in cityscapes.cs_labels.labels if 0 <= label.id < 34])
    ade_ids = np.arange(0, 151)
    need = args.batch / args.step_s
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        city_png = write_pairs(tmp / "city_png", args.images, (1024, 2048), "PNG", city_ids, 0)
        city_jpg = write_pairs(tmp / "city_jpg", args.images, (1024, 2048), "JPEG", city_ids, 1)
        ade_jpg = write_pairs(tmp / "ade_jpg", args.images, (512, 683), "JPEG", ade_ids, 2)
        crop512 = replace(city_card, crop_size=(512, 512))
        cases = [
            ("Cityscapes-like 2048x1024 PNG", crop512, city_png, cityscapes.decode_label),
            ("Cityscapes-like 2048x1024 JPEG", crop512, city_jpg, cityscapes.decode_label),
            ("Cityscapes card 2048x1024 PNG", city_card, city_png, cityscapes.decode_label),
            ("ADE-like 683x512 JPEG", ade_card, ade_jpg, ade20k.decode_label),
        ]
        for title, card, samples, decode in cases:
            dataset = SegmentationDataset(samples, card, TrainPipeline(card, seed=0), decode)
            per_s, load_ms, pipe_ms = measure(dataset, args.epochs)
            crop = f"{card.crop_size[0]}x{card.crop_size[1]}"
            rows.append((title, crop, per_s, load_ms, pipe_ms, math.ceil(need / per_s)))

    print(f"training pipeline, one worker (1 thread), {args.images} images x {args.epochs} epochs per row")
    print(f"GPU demand: batch {args.batch} per {args.step_s:g} s step = {need:g} images/s per GPU")
    header = f"{'source':32} {'crop':>9} {'images/s':>9} {'load ms':>8} {'pipe ms':>8} {'workers/GPU':>12}"
    print(header)
    print("-" * len(header))
    for title, crop, per_s, load_ms, pipe_ms, workers in rows:
        print(f"{title:32} {crop:>9} {per_s:9.2f} {load_ms:8.1f} {pipe_ms:8.1f} {workers:>12d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
