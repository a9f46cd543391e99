"""GPU check: training speed and memory of every framework with and without IDR, in one command.

    python benchmarks/gpu_check.py [--out gpu_check.json]                 # on a GPU, <= 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny [--no-ray-cell]     # the same path, tiny, on CPU

On the GPU: each framework with and without IDR at 512x512, ResNet-50-D8 (random init), K=150,
C=512, 2 images per step, under bf16 and under fp16 autocast (GradScaler): training images/s,
peak memory (torch.cuda.max_memory_allocated, weights included; on CPU the rise of the resident
set, `benchmarks/step_memory.py`) and the +IDR / baseline step-time ratio; then Mask2Former with
and without IDR (transformers ResNet-50) at the same size and batch, which answers whether
Mask2Former+IDR fits at 2 images per GPU. The targets (+IDR / baseline step time <= 1.10 for the
four heads; Mask2Former+IDR / Mask2Former peak memory <= 1.5) are printed as pass / FAIL and
kept in the JSON under `targets`. Then
`python -m harness.measure --latency` (CUDA-event timing) for FCN +- IDR, and one short Ray
cell (`python -m harness.run`, scaling.use_gpu) run as a user would. Everything goes into one
JSON file; its `gpu_rate_flops_per_s` (the median over the bf16 rows of 3 x fvcore forward
FLOPs x images/s) is what `python -m harness.run EXP --dry-run --gpu-rate-from FILE` uses.
`--tiny` shrinks everything (ResNet-18, 32x32, K=5, C=16, one timed step) so that the CPU path runs
in a test (bf16 and fp16 convolutions are slow on CPUs without native support).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.step_memory import PeakMemory, kind  # noqa: E402
from harness.config import ModelConfig  # noqa: E402
from harness.measure import count_flops, environment  # noqa: E402
from models import build_segmentor, framework_names  # noqa: E402

PAPER = {"backbone": "resnet50c", "size": 512, "classes": 150, "channels": 512, "batch": 2, "steps": 10, "warmup": 3}
TINY = {"backbone": "resnet18", "size": 32, "classes": 5, "channels": 16, "batch": 2, "steps": 1, "warmup": 1}
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
MASK2FORMER = "mask2former"
MASK2FORMER_BACKBONES = {"resnet50c": "resnet50"}  # the transformers ResNet of the same depth
TIME_TARGET = 1.10  # +IDR / baseline step time, the four heads
MEMORY_TARGET = 1.5  # Mask2Former+IDR / Mask2Former peak memory


def model_config(shape: dict, framework: str = "fcn") -> ModelConfig:
    c = shape["channels"]
    backbone = shape["backbone"]
    if framework == MASK2FORMER:
        backbone = MASK2FORMER_BACKBONES.get(backbone, backbone)
    return ModelConfig(backbone=backbone, feats_channels=c, head_channels=c,
                       aux_channels=max(c // 2, 8), refine_channels=max(c // 2, 8))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_speed(model: torch.nn.Module, shape: dict, amp: str, device: torch.device) -> dict:
    """Images/s over timed steps (forward, backward, SGD) and the peak memory of the run."""
    g = torch.Generator().manual_seed(0)
    size, batch = shape["size"], shape["batch"]
    images = torch.randn(batch, 3, size, size, generator=g).to(device)
    target = torch.randint(0, shape["classes"], (batch, size, size), generator=g).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    model.train()
    with PeakMemory(device) as peak:
        for step in range(shape["warmup"] + shape["steps"]):
            if step == shape["warmup"]:
                _sync(device)
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=AMP[amp]):
                losses = model(images, target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(sum(losses.values())).backward()
            scaler.step(optimizer)
            scaler.update()
            del losses
        _sync(device)
        seconds = time.perf_counter() - start
    return {"images_per_s": shape["steps"] * batch / seconds, "step_ms": 1e3 * seconds / shape["steps"],
            "peak_memory_mib": peak.mib, "peak_memory_kind": kind(device)}


def framework_rows(shape: dict, device: torch.device, frameworks: list[str]) -> list[dict]:
    rows = []
    for name in frameworks:
        cfg = model_config(shape, name)
        for idr in (False, True):
            torch.manual_seed(0)
            model = build_segmentor(name, idr, shape["classes"], cfg)
            flops = count_flops(model, (shape["size"], shape["size"]))["total"]
            model = model.to(device)
            for amp in AMP:
                row = {"framework": name, "idr": idr, "amp": amp, "forward_flops": flops,
                       **train_speed(model, shape, amp, device)}
                row["flops_per_s"] = 3 * flops * row["images_per_s"]
                rows.append(row)
                print(f"{name:10} {'+IDR' if idr else 'base':5} {amp}: {row['images_per_s']:8.2f} img/s, "
                      f"peak {row['peak_memory_mib'] or 0:8.0f} MiB", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for row in rows:
        base = next(r for r in rows if r["framework"] == row["framework"] and r["amp"] == row["amp"] and not r["idr"])
        row["idr_over_base_step"] = row["step_ms"] / base["step_ms"]
        mib, base_mib = row["peak_memory_mib"], base["peak_memory_mib"]
        row["idr_over_base_memory"] = mib / base_mib if mib is not None and base_mib else None
    return rows


def targets(rows: list[dict]) -> list[dict]:
    """Each target the rows bear on, per AMP mode: its ratio, the bound and whether it is met."""
    out = []
    for row in rows:
        if not row["idr"]:
            continue
        if row["framework"] == MASK2FORMER:
            what, ratio, bound = "peak memory +IDR / base", row["idr_over_base_memory"], MEMORY_TARGET
        else:
            what, ratio, bound = "step time +IDR / base", row["idr_over_base_step"], TIME_TARGET
        out.append({"framework": row["framework"], "amp": row["amp"], "what": what, "ratio": ratio,
                    "target_at_most": bound, "met": None if ratio is None else ratio <= bound})
    return out


def latency(shape: dict, device: torch.device, folder: Path) -> dict:
    """`python -m harness.measure --latency` for FCN +- IDR, as a user runs it."""
    out = folder / "measure.json"
    c = str(shape["channels"])
    command = [sys.executable, "-m", "harness.measure", "--framework", "fcn", "--idr", "both",
               "--backbone", shape["backbone"], "--size", f"{shape['size']}x{shape['size']}",
               "--num-classes", str(shape["classes"]), "--feats-channels", c, "--head-channels", c,
               "--aux-channels", str(max(shape["channels"] // 2, 8)),
               "--refine-channels", str(max(shape["channels"] // 2, 8)),
               "--latency", "--device", str(device), "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(out.read_text())


def ray_cell(shape: dict, device: torch.device, folder: Path) -> dict:
    """One short cell through `python -m harness.run` (Ray Tune + Ray Train), on the GPU when there is one."""
    exp = {
        "name": "gpu_check",
        "grid": {"frameworks": ["fcn"], "datasets": ["context_scenes"], "idr": [True], "seeds": [0]},
        "model": {"backbone": shape["backbone"], "feats_channels": 64, "head_channels": 64, "aux_channels": 32,
                  "refine_channels": 32},
        "train": {"iterations": 20, "batch_size": 8, "log_interval": 10, "amp": "bf16"},
        "scaling": {"num_workers": 1, "cpus_per_worker": 2, "use_gpu": device.type == "cuda"},
        "data": {"root": str(folder / "datasets"), "options": {"context_scenes": {"num_train": 32, "num_val": 8}}},
    }
    path = folder / "gpu_check.yaml"
    path.write_text(yaml.safe_dump(exp))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness.run", str(path), "--results", str(folder / "results")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    result = {"exit": done.returncode, "wall_s": time.perf_counter() - start}
    records = list((folder / "results" / "gpu_check" / "cells").glob("*/record.json"))
    if records:
        record = json.loads(records[0].read_text())
        result.update(device=record.get("device"), mIoU=record["metrics"]["mIoU"],
                      iterations_per_s=record.get("iterations_per_s"))
    else:
        result["error"] = done.stderr.strip().splitlines()[-3:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and inputs (CPU test of this script)")
    parser.add_argument("--frameworks", nargs="*", default=None, help="default: the four heads and mask2former")
    parser.add_argument("--no-ray-cell", action="store_true", help="skip the Ray cell")
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; use --device cpu --tiny", file=sys.stderr)
        return 2
    shape = TINY if args.tiny else PAPER
    start = time.perf_counter()
    report = {"shape": shape, "env": environment(str(device)),
              "rows": framework_rows(shape, device, args.frameworks or framework_names() + [MASK2FORMER])}
    report["targets"] = targets(report["rows"])
    for t in report["targets"]:
        verdict = "—" if t["met"] is None else "pass" if t["met"] else "FAIL"
        ratio = "—" if t["ratio"] is None else f"{t['ratio']:.2f}"
        print(f"target {t['framework']:11} {t['amp']} {t['what']}: {ratio} (<= {t['target_at_most']}) {verdict}")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        report["measure_latency"] = latency(shape, device, Path(tmp))
        report["ray_cell"] = None if args.no_ray_cell else ray_cell(shape, device, Path(tmp))
    report["gpu_rate_flops_per_s"] = statistics.median(r["flops_per_s"] for r in report["rows"] if r["amp"] == "bf16")
    report["wall_s"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"rate {report['gpu_rate_flops_per_s']:.3g} fvcore FLOPs/s (bf16 median); {report['wall_s']:.0f} s; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
