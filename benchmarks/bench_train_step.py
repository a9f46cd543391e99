"""Training-step time and peak memory of each framework with vs without IDR, same input, one process.

    python benchmarks/bench_train_step.py [--backbone resnet18] [--size 64] [--batch 8] [--classes 10]
        [--channels 128] [--iters 8] [--threads 2]
    python benchmarks/bench_train_step.py --paper [--frameworks fcn ... mask2former]

`--paper` is the paper's training shape: 512x512 crops, ResNet-50-D8 (resnet50c, output stride
8, random init), K=150, C=512, 2 images per step (the per-GPU batch; PSPNet's pooled BatchNorm
needs 2), 2 timed steps per variant, one per alternation after an untimed one (a CPU step at this
size takes minutes), for FCN, PSPNet, DeepLabV3 and UPerNet, then Mask2Former (transformers
ResNet-50, its C is the 256-wide mask features) at the same size. --paper fixes these settings;
for others use the explicit options (`--frameworks mask2former` adds Mask2Former on `--backbone`).

Prints, per framework, the median step time (forward + backward + SGD step) without and with
IDR and their ratio, the peak memory of a step without and with IDR and their ratio
(`benchmarks/step_memory.py`: on a GPU the CUDA max allocated, weights included; on CPU the rise
of the resident set over the step), and IDR's parameter overhead. With --paper each row ends in
the target it is held to, pass or FAIL: +IDR / baseline step time <= 1.10 for the four heads,
Mask2Former+IDR / Mask2Former peak memory <= 1.5. The two variants of a framework are timed
alternately in the same run, so the ratios are meaningful on any machine; absolute times are
only meaningful on a GPU.
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

from benchmarks.step_memory import PeakMemory, kind  # noqa: E402
from harness.config import ModelConfig  # noqa: E402
from models import build_segmentor, framework_names  # noqa: E402

PAPER = {"backbone": "resnet50c", "size": 512, "batch": 2, "classes": 150, "channels": 512, "iters": 2, "warmup": 1}
MASK2FORMER = "mask2former"
PAPER_MASK2FORMER_BACKBONE = "resnet50"  # transformers' ResNet-50 (Mask2Former's own backbone family)
TIME_TARGET = 1.10  # +IDR / baseline step time, the four heads at the paper's size
MEMORY_TARGET = 1.5  # Mask2Former+IDR / Mask2Former peak memory at 512x512


def step_times(
    model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, iters: int, warmup: int = 2
) -> tuple[list[float], float | None]:
    """Seconds of each timed step and the largest peak memory (MiB) among them (None: not measurable)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    times, peaks = [], []
    for i in range(iters + warmup):
        with PeakMemory(images.device) as peak:
            start = time.perf_counter()
            losses = model(images, target)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            if images.is_cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            del losses
        if i >= warmup:
            times.append(seconds)
            peaks.append(peak.mib)
    return times, None if None in peaks else max(peaks)


def verdict(ratio: float | None, target: float) -> str:
    if ratio is None:
        return f"— (target <= {target:.2f})"
    return f"{'pass' if ratio <= target else 'FAIL'} (target <= {target:.2f})"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def model_config(args, framework: str) -> ModelConfig:
    backbone = PAPER_MASK2FORMER_BACKBONE if args.paper and framework == MASK2FORMER else args.backbone
    return ModelConfig(
        backbone=backbone,
        feats_channels=args.channels,
        head_channels=args.channels,
        aux_channels=256 if args.paper else max(args.channels // 2, 8),
        refine_channels=max(args.channels // 2, 8),
    )


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
    parser.add_argument("--frameworks", nargs="*", default=None, help="any of the registered ones and mask2former")
    parser.add_argument("--paper", action="store_true", help="the paper's shape (512x512, R50-D8, K=150, C=512)")
    args = parser.parse_args()
    if args.paper:
        vars(args).update(PAPER)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
    target = torch.randint(0, args.classes, (args.batch, args.size, args.size), generator=g).to(device)
    print(
        f"train step, {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, backbone {args.backbone}, "
        f"{args.batch}x3x{args.size}x{args.size}, K={args.classes}, C={args.channels}, median of {args.iters}; "
        f"memory: {kind(device)} (MiB), the largest of the timed steps"
    )
    print(f"{'framework':11} {'base ms':>9} {'+IDR ms':>9} {'ratio':>6} {'base MiB':>9} {'+IDR MiB':>9} {'ratio':>6} "
          f"{'base M':>7} {'+IDR M':>7} {'param +%':>8}  target")
    frameworks = args.frameworks or (framework_names() + [MASK2FORMER] if args.paper else framework_names())
    for name in frameworks:
        cfg = model_config(args, name)
        torch.manual_seed(0)
        base = build_segmentor(name, False, args.classes, cfg).to(device)
        idr = build_segmentor(name, True, args.classes, cfg).to(device)
        base_t, idr_t, base_m, idr_m = [], [], [], []
        for _ in range(2):  # alternate to share machine noise
            for model, times, peaks in ((base, base_t, base_m), (idr, idr_t, idr_m)):
                t, m = step_times(model, images, target, args.iters // 2, args.warmup)
                times += t
                peaks.append(m)
        b_ms, i_ms = 1e3 * statistics.median(base_t), 1e3 * statistics.median(idr_t)
        b_mib = None if None in base_m else max(base_m)
        i_mib = None if None in idr_m else max(idr_m)
        mem_ratio = _ratio(i_mib, b_mib)
        b_p = sum(p.numel() for p in base.parameters()) / 1e6
        i_p = sum(p.numel() for p in idr.parameters()) / 1e6
        goal = ""
        if args.paper:
            goal = f"memory {verdict(mem_ratio, MEMORY_TARGET)}" if name == MASK2FORMER else \
                f"time {verdict(i_ms / b_ms, TIME_TARGET)}"
        print(f"{name:11} {b_ms:9.1f} {i_ms:9.1f} {i_ms / b_ms:5.2f}x {_mib(b_mib):>9} {_mib(i_mib):>9} "
              f"{'—' if mem_ratio is None else f'{mem_ratio:.2f}x':>6} {b_p:7.2f} {i_p:7.2f} "
              f"{100 * (i_p / b_p - 1):+7.1f}%  {goal}", flush=True)
        del base, idr

if __name__ == "__main__":
    main()
