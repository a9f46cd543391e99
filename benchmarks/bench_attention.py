"""IDR's self-attention block: fused attention against the explicit softmax(QK^T)V matrix, one process.

    python benchmarks/bench_attention.py [--batch 2] [--side 64] [--in-channels 3072] [--transform 256]
        [--repeats 2] [--threads 2]

One `models.layers.SelfAttentionBlock` (the IDR refiner's shape at the paper's size by default:
6C = 3072 channels in, 256 wide, a 64x64 map = N 4096 positions at 512x512 / 8), training mode,
forward + backward, timed alternately with the same block computing the [B, N, N] matrix with
bmm + softmax (`tests/test_attention.py::attention_as_before`, the code the block had before).
Prints the median seconds and the peak memory of each (`benchmarks/step_memory.py`) and the
ratios explicit / fused.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.step_memory import PeakMemory, kind  # noqa: E402
from models.layers import SelfAttentionBlock  # noqa: E402
from tests.test_attention import attention_as_before  # noqa: E402


def timed(forward, feats: torch.Tensor) -> tuple[float, float | None]:
    with PeakMemory(feats.device) as peak:
        start = time.perf_counter()
        x = feats.clone().requires_grad_()
        forward(x, x).sum().backward()
        if feats.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, peak.mib


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--in-channels", type=int, default=3072)
    p.add_argument("--transform", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    block = SelfAttentionBlock(args.in_channels, args.in_channels, args.transform, 512).to(device).train()
    feats = torch.randn(args.batch, args.in_channels, args.side, args.side, device=device)
    variants = {"fused": block, "explicit": lambda q, k: attention_as_before(block, q, k)}
    runs = {name: [] for name in variants}
    for name, forward in variants.items():  # warm-up
        timed(forward, feats)
    for _ in range(args.repeats):
        for name, forward in variants.items():
            runs[name].append(timed(forward, feats))
    n = args.side * args.side
    print(f"SelfAttentionBlock fwd+bwd, {device}, threads {torch.get_num_threads()}, B={args.batch}, N={n}, "
          f"in={args.in_channels}, T={args.transform}; memory: {kind(device)} (MiB), median of {args.repeats}")
    result = {}
    for name, timings in runs.items():
        seconds = statistics.median(t for t, _ in timings)
        peaks = [m for _, m in timings]
        peak = None if None in peaks else max(peaks)
        result[name] = (seconds, peak)
        print(f"{name:9} {seconds:8.3f} s  {'—' if peak is None else f'{peak:8.0f}'} MiB")
    (ft, fm), (et, em) = result["fused"], result["explicit"]
    memory = "—" if fm is None or em is None else f"{em / fm:.2f}x"
    print(f"explicit / fused: time {et / ft:.2f}x, memory {memory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
