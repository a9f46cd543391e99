"""Training-step time of each framework with vs without IDR, same input, one process.

    python benchmarks/bench_train_step.py [--backbone resnet18] [--size 64] [--batch 8] [--classes 10]
        [--channels 128] [--iters 8] [--threads 2]
    python benchmarks/bench_train_step.py --paper [--frameworks fcn ...]

`--paper` is the paper's training shape: 512x512 crops, ResNet-50-D8 (resnet50c, output stride
8, random init), K=150, C=512, 2 images per step (the per-GPU batch; PSPNet's pooled BatchNorm
needs 2), 2 timed steps per variant, one per alternation after an untimed one (a CPU step at this
size takes minutes). --paper fixes these settings; for others use the explicit options.

Prints, per framework, the median step time (forward + backward + SGD step) without and with
IDR, their ratio (target <= 1.5x), and IDR's parameter overhead. The two variants of a
framework are timed alternately in the same run, so the ratio is meaningful on any machine;
absolute times are only meaningful on a GPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's code, not the installed one
    sys.path.insert(0, str(ROOT))

from harness.config import ModelConfig  # noqa: E402
from models import build_segmentor, framework_names  # noqa: E402

PAPER = {"backbone": "resnet50c", "size": 512, "batch": 2, "classes": 150, "channels": 512, "iters": 2, "warmup": 1}


def step_times(
    model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, iters: int, warmup: int = 2
) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    times = []
    for i in range(iters + warmup):
        start = time.perf_counter()
        losses = model(images, target)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        if images.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--channels", type=int, default=128, help="feats/head channels (paper: 512)")
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each timed series")
    parser.add_argument("--frameworks", nargs="*", default=None)
    parser.add_argument("--paper", action="store_true", help="the paper's shape (512x512, R50-D8, K=150, C=512)")
    args = parser.parse_args()
    if args.paper:
        vars(args).update(PAPER)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = ModelConfig(
        backbone=args.backbone,
        feats_channels=args.channels,
        head_channels=args.channels,
        aux_channels=256 if args.paper else max(args.channels // 2, 8),
        refine_channels=max(args.channels // 2, 8),
    )
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
    target = torch.randint(0, args.classes, (args.batch, args.size, args.size), generator=g).to(device)
    print(
        f"train step, {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, backbone {args.backbone}, "
        f"{args.batch}x3x{args.size}x{args.size}, K={args.classes}, C={args.channels}, median of {args.iters}"
    )
    print(f"{'framework':10} {'base ms':>9} {'+IDR ms':>9} {'ratio':>6} {'base M':>8} {'+IDR M':>8} {'param +%':>8}")
    for name in args.frameworks or framework_names():
        torch.manual_seed(0)
        base = build_segmentor(name, False, args.classes, cfg).to(device)
        idr = build_segmentor(name, True, args.classes, cfg).to(device)
        base_t, idr_t = [], []
        for _ in range(2):  # alternate to share machine noise
            base_t += step_times(base, images, target, args.iters // 2, args.warmup)
            idr_t += step_times(idr, images, target, args.iters // 2, args.warmup)
        b_ms, i_ms = 1e3 * statistics.median(base_t), 1e3 * statistics.median(idr_t)
        b_p = sum(p.numel() for p in base.parameters()) / 1e6
        i_p = sum(p.numel() for p in idr.parameters()) / 1e6
        print(f"{name:10} {b_ms:9.1f} {i_ms:9.1f} {i_ms / b_ms:5.2f}x {b_p:8.2f} {i_p:8.2f} {100 * (i_p / b_p - 1):+7.1f}%")


if __name__ == "__main__":
    main()
