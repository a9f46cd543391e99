"""Training-step time of the official IDRNet (sssegmentation 1.7.0) against ours, same config.

    python benchmarks/bench_vs_official.py [--framework fcn] [--channels 512,1024] [--size 512x512]
        [--batch 2] [--num-classes 150] [--threads N] [--repeats 2] [--device cpu] [--clock wall]

Both models are the official R50-D8 (V1c) IDRNet head of `--framework` on ADE20K (its switches),
at K classes and C = each of `--channels`, built at random init with the official weights copied
into ours (harness.convert), on the same images and labels, in the same process and thread
count. Per model, after one warm-up step, the median over `--repeats` of

* step: forward + backward + SGD step (the whole training step);
* IDR: the IDR part of the forward alone: the head's forward minus the modules any segmentation
  head has (bottleneck, coarse context and its refiner, FPN, stage-1 / stage-2 decoders, the
  official loss and auxiliary code), timed with module hooks. It holds the class grouping, the
  relation-guided context, the IDR self-attention, the deletion pass and the relation and
  dataset-representation updates. Ours adds `record_deletion` (the relation update from the
  deleted prediction's loss), which our segmentor runs after the head's forward; the official
  code runs it inside its forward.

The two models' steps alternate (official, ours, official, ...), so both see the same machine
load. On a machine busy with other work, `--clock cpu --threads 1` times CPU seconds of this
process (`time.process_time`) instead of wall seconds, which the other work barely changes. Labels hold about 30 classes per image (ADE20K-like blocks). The ratios are official /
ours; the IDR ratio's target, >= 5 at 512x512, is printed with pass or FAIL.
Requires sssegmentation==1.7.0 (`pip install '.[parity]'`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ssseg.modules.models.segmentors.idrnet.idrnet as official_idrnet
from ssseg.modules.models.segmentors.builder import BuildSegmentor
from ssseg.modules.utils import SSSegInputStructure
from torch import nn

from harness.convert import build_official_model, convert_state_dict
from harness.official import R50, official_segmentor_cfg

OFFICIAL_HEAD_MODULES = ("bottleneck", "coarse_context_module", "coarsecontext_refiner_before",
                         "coarsecontext_refiner_after", "lateral_convs", "fpn_convs", "decoder_stage1",
                         "decoder_stage2")
# stage 2's layers one by one: our deleted pass calls its BatchNorm, ReLU and classifier but not the
# decoder as a whole (it reuses the anchor's first convolution; that delta and the reused dropout
# mask count as IDR time, while the official second decoder call does not)
OUR_HEAD_MODULES = ("bottleneck", "wiring.context", "wiring.refiner", "wiring.fpn", "stage1",
                    "stage2.0.0", "stage2.0.1", "stage2.0.2", "stage2.1", "stage2.2")
IDR_TARGET = 5.0  # official / ours, the IDR part at 512x512
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


class Stopwatch:
    """Accumulated seconds of the forwards of chosen modules (and wrapped functions)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.total = 0.0
        self._starts: list[float] = []

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return clock()

    def start(self, *_) -> None:
        self._starts.append(self._now())

    def stop(self, *_) -> None:
        self.total += self._now() - self._starts.pop()

    @contextmanager
    def span(self):
        self.start()
        try:
            yield
        finally:
            self.stop()


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    module = model
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def blocky_labels(batch: int, size: tuple[int, int], num_classes: int, present: int = 30) -> torch.Tensor:
    """Per image `present` random classes on a grid of 32x32 blocks."""
    gen = torch.Generator().manual_seed(0)
    gh, gw = size[0] // 32, size[1] // 32
    out = []
    for _ in range(batch):
        present = min(present, num_classes)
        classes = torch.randperm(num_classes, generator=gen)[:present]
        grid = classes[torch.randint(present, (gh, gw), generator=gen)]
        out.append(grid.repeat_interleave(32, 0).repeat_interleave(32, 1))
    return torch.stack(out)


def build_models(framework: str, channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """(official, ours) with the same weights: the official ADE20K IDRNet config at C = channels."""
    cfg = official_segmentor_cfg(framework, "ade20k", True, num_classes=num_classes)
    cfg["head"]["feats_channels"] = channels
    official = BuildSegmentor(cfg, mode="TRAIN")
    ours, _ = build_official_model(framework, True, "ade20k", R50, num_classes, feats_channels=channels)
    ours.load_state_dict(convert_state_dict(official.state_dict(), ours, framework, True))
    return official, ours


def official_step(model: nn.Module, images, target, device) -> tuple[float, float]:
    """(whole step seconds, IDR seconds) of one official training step."""
    head, backbone, other = Stopwatch(device), Stopwatch(device), Stopwatch(device)
    handles = _hook_all(model, OFFICIAL_HEAD_MODULES, other) + _hook_all(model, ("backbone_net",), backbone)
    losses, customize = official_idrnet.calculatelosses, model.customizepredsandlosses

    def timed_losses(*args, **kwargs):
        with other.span():
            return losses(*args, **kwargs)

    def timed_customize(*args, **kwargs):
        with other.span():
            return customize(*args, **kwargs)

    official_idrnet.calculatelosses, model.customizepredsandlosses = timed_losses, timed_customize
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    try:
        start = clock()
        with head.span():
            out = model(SSSegInputStructure(mode="TRAIN", images=images, seg_targets=target))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step = _elapsed(start, device)
    finally:
        official_idrnet.calculatelosses = losses
        del model.customizepredsandlosses
        _remove(handles)
    return step, head.total - backbone.total - other.total


def our_step(model: nn.Module, images, target, device) -> tuple[float, float]:
    """(whole step seconds, IDR seconds) of one training step of ours."""
    head, other, deletion = Stopwatch(device), Stopwatch(device), Stopwatch(device)
    handles = _hook_all(model.head, OUR_HEAD_MODULES, other) + _hook_all(model, ("head",), head)
    record_deletion = model.head.record_deletion

    def timed_record_deletion(*args, **kwargs):
        with deletion.span():
            return record_deletion(*args, **kwargs)

    model.head.record_deletion = timed_record_deletion
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    try:
        start = clock()
        losses = model(images, target)
        sum(losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step = _elapsed(start, device)
    finally:
        del model.head.record_deletion
        _remove(handles)
    return step, head.total - other.total + deletion.total


def _hook_all(model: nn.Module, paths, watch: Stopwatch) -> list:
    handles = []
    for path in paths:
        module = _submodule(model, path)
        if module is not None:
            handles.append(module.register_forward_pre_hook(watch.start))
            handles.append(module.register_forward_hook(watch.stop))
    return handles


def _remove(handles: list) -> None:
    for handle in handles:
        handle.remove()


def _elapsed(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - start


def time_pair(framework, channels, args, device) -> dict[str, float]:
    torch.manual_seed(0)
    official, ours = (m.to(device).train() for m in build_models(framework, channels, args.num_classes))
    h, w = args.size
    images = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)
    target = blocky_labels(args.batch, (h, w), args.num_classes).to(device)
    pairs = (("official", official, official_step), ("ours", ours, our_step))
    for _, model, step_fn in pairs:
        step_fn(model, images, target, device)  # warm-up
    runs = {name: [] for name, _, _ in pairs}
    for _ in range(args.repeats):  # alternate, so that both models see the same machine load
        for name, model, step_fn in pairs:
            runs[name].append(step_fn(model, images, target, device))
    results = {}
    for name, timed in runs.items():
        results[f"{name}_step"] = statistics.median(r[0] for r in timed)
        results[f"{name}_idr"] = statistics.median(r[1] for r in timed)
    return results


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", default="fcn", choices=["fcn", "pspnet", "deeplabv3", "upernet"])
    p.add_argument("--channels", default="512,1024", help="IDR's C, comma-separated")
    p.add_argument("--size", default="512x512", help="HxW of the training crop")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument("--threads", type=int, default=0, help="torch threads for both (0 = torch's default)")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per model (median)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                   help="wall seconds, or CPU seconds of this process (CPU only; with --threads 1 on a busy machine)")
    args = p.parse_args(argv)
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    return args


def main(argv: list[str] | None = None) -> int:
    global clock
    args = parse_args(argv)
    if args.clock == "cpu" and args.device != "cpu":
        print("error: --clock cpu times CPU seconds, which do not include work on a GPU; use --clock wall "
              f"with --device {args.device}", file=sys.stderr)
        return 2
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{args.framework}+IDR R50-D8 K={args.num_classes} {args.size[0]}x{args.size[1]} batch {args.batch} "
          f"{device} threads={torch.get_num_threads()} repeats={args.repeats} clock={args.clock}")
    print(f"{'C':>5} {'official step':>14} {'ours step':>10} {'ratio':>6} {'official IDR':>13} {'ours IDR':>9} {'ratio':>6}"
          "  IDR target")
    for channels in (int(c) for c in args.channels.split(",")):
        r = time_pair(args.framework, channels, args, device)
        idr_ratio = r["official_idr"] / r["ours_idr"]
        goal = f"{'pass' if idr_ratio >= IDR_TARGET else 'FAIL'} (>= {IDR_TARGET:.0f}x at 512x512)"
        print(f"{channels:>5} {r['official_step']:>13.3f}s {r['ours_step']:>9.3f}s "
              f"{r['official_step'] / r['ours_step']:>6.2f} {r['official_idr']:>12.3f}s {r['ours_idr']:>8.3f}s "
              f"{idr_ratio:>6.2f}  {goal}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
