"""Model complexity without training or data: parameters, FLOPs and (optionally) latency.

    python -m harness.measure --framework fcn [--dataset ade20k] --backbone resnet50c --idr both \\
        --size 512x512 --size 512x1024 [--num-classes 150] [--feats-channels 512] [--latency] [--json out.json]

`--dataset D` (default ade20k) measures the official configuration of (framework, D) as
:mod:`harness.official` lists it, with and without IDR: its class count and its head settings
(IDR's C, coarse context, refinement, stage-1 input; FCN+IDR on ADE20K has C = 1024). Any
explicit `--num-classes` / `--*-channels` flag overrides the official value; a framework or
backbone without an official config (or `--dataset none`) uses `ModelConfig`'s defaults.

Every model is built through :func:`models.registry.build_segmentor`, so one code path measures
every registered framework, with and without IDR. Weights do not change any figure, so models
are randomly initialised and nothing is loaded or downloaded.

Parameters
    total and trainable, in millions, with the split over the segmentor's top-level children
    (backbone, head, aux_head). The auxiliary head is counted in the total (it is part of the
    trained model) although inference never runs it.

FLOPs
    :class:`fvcore.nn.FlopCountAnalysis` on the model in eval mode (the inference forward: no
    auxiliary head, no IDR relation update) on one random ``[1, 3, H, W]`` input. fvcore counts
    one fused multiply-add as one flop, the convention of the mmsegmentation and detectron2
    complexity tools, so "GFLOPs" here are giga multiply-adds. Operators fvcore has no formula
    for are *not counted*; they are listed as "unsupported ops" with their call counts (typically
    element-wise ops such as residual additions and IDR's scatter / gather / softmax steps).
    ``aten::baddbmm`` (the masked cross-attention scores of Mask2Former's decoder, through
    ``nn.MultiheadAttention``) is counted as the batched matmul it contains, and
    ``aten::scaled_dot_product_attention`` (IDR's self-attention, timm's Swin) as its two.
    The breakdown is over the top-level children of the segmentor.

Context module
    A head that names its context module (`context_modules`, e.g. the non-local block of
    NonLocalNet, the spatial gather and object context block of OCRNet, DANet's position and
    channel attention) also gets that module's parameters and FLOPs, the attention or
    aggregation block alone (not the convs around it nor the classifier); "-" for heads that
    name none.

Latency (``--latency``)
    Batch 1, eval mode, ``torch.inference_mode``; ``--warmup`` untimed iterations, then
    ``--iters`` (at least 50) timed iterations. On CPU each iteration is timed with
    ``time.perf_counter``; on a GPU with CUDA events, synchronising after every iteration.
    Reported: median and p90 in ms, throughput in images/s (timed images / timed seconds) and
    peak memory: ``torch.cuda.max_memory_allocated`` over the timed loop on a GPU, the process's
    peak resident set size (``resource.getrusage``; everything the process held since it
    started) on CPU. CPU figures depend on ``torch.get_num_threads()``, reported with them.

Each result carries the device and library versions it was obtained with.

Exit status: 0 done; 2 bad input (unknown framework or backbone, malformed size, bad model
option), reported in one line on stderr naming the flag and what is allowed.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from harness.cli import Parser, UsageError
from harness.official import OFFICIAL_NUM_CLASSES
from harness.fileio import write_text_atomic

DEFAULT_NUM_CLASSES = 150
SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
MIN_CLI_ITERS = 50


# ------------------------------------------------------------------------------- figures


def count_params(model: nn.Module) -> dict:
    """Parameter counts: total and trainable (raw and in M), and per top-level child."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    by_module = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    return {
        "total": total,
        "trainable": trainable,
        "total_m": total / 1e6,
        "trainable_m": trainable / 1e6,
        "by_module": by_module,
    }


def count_module_params(model: nn.Module, names: list[str], trainable_only: bool = False) -> int:
    """Parameters of the named submodules of `model` (only those that require grad if `trainable_only`)."""
    return sum(p.numel() for name in names for p in model.get_submodule(name).parameters()
               if p.requires_grad or not trainable_only)


def _baddbmm_flops(inputs, outputs) -> int:
    """aten::baddbmm(input, batch1 [b,n,m], batch2 [b,m,p], ...): b*n*m*p multiply-adds (as bmm;
    the added `input`, e.g. nn.MultiheadAttention's attention mask, is not counted, as for addmm)."""
    from fvcore.nn.jit_handles import get_shape

    b, n, m = get_shape(inputs[1])
    p = get_shape(inputs[2])[-1]
    return b * n * m * p


def _sdpa_flops(inputs, outputs) -> int:
    """aten::scaled_dot_product_attention(q [..,n,e], k [..,m,e], v [..,m,f], ...): the two
    batched matmuls it contains, QK^T and (softmax)V, i.e. prod(..)*n*m*(e+f) multiply-adds,
    what fvcore counted for the same attention written as two bmm (the softmax is not counted)."""
    from fvcore.nn.jit_handles import get_shape

    *batch, n, e = get_shape(inputs[0])
    m, f = get_shape(inputs[2])[-2:]
    return int(np.prod(batch, dtype=np.int64)) * n * m * (e + f)


def context_module_names(model: nn.Module) -> list[str]:
    """Qualified names of the head's context module(s) (`head.context_modules`); [] if it names none."""
    head = getattr(model, "head", None)
    return [f"head.{name}" for name in getattr(head, "context_modules", ())]


def count_flops(model: nn.Module, input_size: tuple[int, int], submodules: tuple[str, ...] = ()) -> dict:
    """fvcore FLOPs (1 multiply-add = 1 flop) of one forward in eval mode on a random [1,3,H,W].

    Returns the total (flops and GFLOPs), the flops of each top-level child and of each named
    `submodules` entry, and the operators fvcore skipped (name -> number of calls); skipped
    operators are not in the total.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation warnings raised at fvcore's import
        from fvcore.nn import FlopCountAnalysis

    h, w = input_size
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, h, w, generator=generator).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings of torch.jit
            analysis = FlopCountAnalysis(model, (image,)).set_op_handle(
                "aten::baddbmm", _baddbmm_flops, "aten::scaled_dot_product_attention", _sdpa_flops
            )
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            total = int(analysis.total())
            per_module = analysis.by_module()
            unsupported = dict(sorted(analysis.unsupported_ops().items()))
    finally:
        model.train(was_training)
    by_module = {name: int(per_module.get(name, 0)) for name, _ in model.named_children()}
    return {
        "total": total,
        "gflops": total / 1e9,
        "by_module": by_module,
        "by_submodule": {name: int(per_module.get(name, 0)) for name in submodules},
        "unsupported_ops": {op: int(n) for op, n in unsupported.items()},
    }


def _peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def measure_latency(
    model: nn.Module, input_size: tuple[int, int], warmup: int = 10, iters: int = 50, device: str | None = None
) -> dict:
    """Batch-1 inference latency: median / p90 ms, images/s and peak memory on `device`."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0 (got iters={iters}, warmup={warmup})")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    h, w = input_size
    was_training = model.training
    model.eval().to(dev)
    image = torch.randn(1, 3, h, w, device=dev)
    times_ms: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(image)
            if cuda:
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                for _ in range(iters):
                    start.record()
                    model(image)
                    end.record()
                    torch.cuda.synchronize(dev)
                    times_ms.append(start.elapsed_time(end))
                peak_mib = torch.cuda.max_memory_allocated(dev) / 2**20
                peak_kind = "cuda max_memory_allocated"
            else:
                for _ in range(iters):
                    t0 = time.perf_counter()
                    model(image)
                    times_ms.append((time.perf_counter() - t0) * 1e3)
                peak_mib = _peak_rss_mib()
                peak_kind = "process peak RSS"
    finally:
        model.train(was_training)
    times = np.asarray(times_ms)
    return {
        "device": str(dev),
        "batch_size": 1,
        "warmup": warmup,
        "iters": iters,
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(times.mean()),
        "min_ms": float(times.min()),
        "throughput_img_s": float(iters / (times.sum() / 1e3)),
        "peak_memory_mib": float(peak_mib),
        "peak_memory_kind": peak_kind,
        "threads": torch.get_num_threads(),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str | None = None) -> dict:
    """Device and library versions, stored with every figure."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    env = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": _version("timm"),
        "transformers": _version("transformers"),
        "fvcore": _version("fvcore"),
        "platform": platform.platform(),
    }
    if dev.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def measure(
    framework: str,
    idr: bool,
    input_size: tuple[int, int],
    model_cfg,
    num_classes: int,
    latency: bool = False,
    warmup: int = 10,
    iters: int = 50,
    device: str | None = None,
) -> dict:
    """Params, FLOPs and optionally latency of one framework (with or without IDR) at one size.

    `model_cfg` is a :class:`harness.config.ModelConfig`; weights are never loaded.
    """
    from models.registry import build_segmentor

    cfg = model_cfg.model_copy(update={"pretrained": None})
    torch.manual_seed(0)
    model = build_segmentor(framework, idr, num_classes, cfg)
    context = context_module_names(model)
    flops = count_flops(model, input_size, tuple(context))
    result = {
        "framework": framework,
        "idr": bool(idr),
        "variant": f"{framework}+idr" if idr else framework,
        "backbone": cfg.backbone,
        "output_stride": cfg.output_stride,
        "input_size": [int(input_size[0]), int(input_size[1])],
        "num_classes": num_classes,
        "model": cfg.model_dump(),
        "params": count_params(model),
        "flops": flops,
        "context_module": {
            "modules": context,
            "params": count_module_params(model, context),
            "flops": sum(flops["by_submodule"].values()),
        } if context else None,
        "flops_convention": "fvcore: one fused multiply-add = one flop",
    }
    if latency:
        result["latency"] = measure_latency(model, input_size, warmup, iters, device)
    result["env"] = environment(device if latency else "cpu")
    return result


# ----------------------------------------------------------------------------------- output


def _fmt_latency(lat: dict | None) -> list[str]:
    if not lat:
        return []
    return [f"{lat['median_ms']:.1f}", f"{lat['p90_ms']:.1f}", f"{lat['throughput_img_s']:.2f}",
            f"{lat['peak_memory_mib']:.0f}"]


def _result_row(r: dict, with_latency: bool) -> list[str]:
    fl = r["flops"]["by_module"]
    row = [
        r["variant"],
        "x".join(map(str, r["input_size"])),
        f"{r['params']['total_m']:.2f}",
        f"{r['params']['trainable_m']:.2f}",
        f"{r['flops']['gflops']:.2f}",
        f"{fl.get('backbone', 0) / 1e9:.2f}",
        f"{fl.get('head', 0) / 1e9:.2f}",
        f"{fl.get('aux_head', 0) / 1e9:.2f}",
    ]
    ctx = r.get("context_module")
    row += [f"{ctx['params'] / 1e6:.2f}", f"{ctx['flops'] / 1e9:.2f}"] if ctx else ["-", "-"]
    if with_latency:
        row += _fmt_latency(r.get("latency")) or ["-"] * 4
    return row


def _difference_row(r: dict, b: dict, with_latency: bool) -> list[str]:
    """The +IDR result minus its baseline `b` at the same input size."""
    def module_gflops(result: dict, name: str) -> float:
        return result["flops"]["by_module"].get(name, 0) / 1e9

    row = [
        f"  IDR - {b['variant']}",
        "x".join(map(str, r["input_size"])),
        f"{r['params']['total_m'] - b['params']['total_m']:+.2f}",
        f"{r['params']['trainable_m'] - b['params']['trainable_m']:+.2f}",
        f"{r['flops']['gflops'] - b['flops']['gflops']:+.2f}",
        f"{module_gflops(r, 'backbone') - module_gflops(b, 'backbone'):+.2f}",
        f"{module_gflops(r, 'head') - module_gflops(b, 'head'):+.2f}",
        "",
        "",
        "",
    ]
    if with_latency:
        la, lb = r.get("latency"), b.get("latency")
        row += [f"{la['median_ms'] - lb['median_ms']:+.1f}", "", "", ""] if la and lb else [""] * 4
    return row


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    """Header, rule and rows; the first column left-aligned, the others right-aligned."""
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def _footer(results: list[dict], with_latency: bool) -> list[str]:
    """What the figures mean: backbone, skipped operators, latency protocol, environment."""
    first = results[0]
    lines = [
        f"backbone {first['backbone']} (output stride {first['output_stride']}), {first['num_classes']} classes; "
        f"FLOPs by fvcore, 1 fused multiply-add = 1 flop, eval-mode forward (aux head not run)"
    ]
    skipped: dict[tuple[str, tuple], list[str]] = {}
    for r in results:
        ops = tuple(r["flops"]["unsupported_ops"].items())
        if ops:
            skipped.setdefault((r["variant"], ops), []).append("x".join(map(str, r["input_size"])))
    for (variant, ops), sizes in skipped.items():
        listed = ", ".join(f"{op} x{n}" for op, n in ops)
        lines.append(f"not counted (no fvcore formula) in {variant} at {', '.join(sizes)}: {listed}")
    if with_latency:
        lat = next(r["latency"] for r in results if "latency" in r)
        lines.append(
            f"latency: batch 1, {lat['warmup']} warm-up + {lat['iters']} timed iterations on {lat['device']}"
            f" ({lat['threads']} threads); peak memory = {lat['peak_memory_kind']}"
        )
    env = first["env"]
    extra = f", CUDA {env['cuda']}" if "cuda" in env else ""
    lines.append(
        f"env: {env['device']} ({env['device_name']}), python {env['python']}, torch {env['torch']}{extra}, "
        f"timm {env['timm']}, fvcore {env['fvcore']}"
    )
    return lines


def format_table(results: list[dict]) -> str:
    """A plain-text table of the results (and +IDR minus baseline), then what the figures mean."""
    with_latency = any("latency" in r for r in results)
    header = ["model", "input", "params M", "trainable M", "GFLOPs", "backbone", "head", "aux (unused)",
              "context M", "context GFLOPs"]
    if with_latency:
        header += ["median ms", "p90 ms", "img/s", "peak MiB"]
    rows = [_result_row(r, with_latency) for r in results]
    base = {(r["framework"], tuple(r["input_size"])): r for r in results if not r["idr"]}
    for r in results:
        b = base.get((r["framework"], tuple(r["input_size"])))
        if r["idr"] and b is not None:
            rows.append(_difference_row(r, b, with_latency))
    return "\n".join([*_aligned(header, rows), "", *_footer(results, with_latency)])


# -------------------------------------------------------------------------------------- CLI


def parse_size(text: str) -> tuple[int, int]:
    """'512x1024' -> (512, 1024) as (H, W); raises ValueError."""
    match = SIZE_RE.match(text)
    if not match or int(match.group(1)) <= 0 or int(match.group(2)) <= 0:
        raise ValueError(text)
    return int(match.group(1)), int(match.group(2))


def build_parser() -> argparse.ArgumentParser:
    from harness.config import ModelConfig

    defaults = ModelConfig()
    p = Parser(prog="python -m harness.measure", description=__doc__.splitlines()[0])
    p.add_argument("--framework", required=True, help="a registered framework, e.g. fcn")
    p.add_argument("--backbone", default="resnet50c", help="a timm model name (default: resnet50c)")
    p.add_argument("--idr", default="both", help="on, off or both (default: both)")
    p.add_argument("--size", action="append", default=None, metavar="HxW",
                   help="input size, repeatable (default: 512x512)")
    p.add_argument("--dataset", default="ade20k",
                   help="whose official configuration to measure, or none (default: ade20k)")
    p.add_argument("--num-classes", type=int, default=None, help="classes K (default: the dataset's, else 150)")
    p.add_argument("--output-stride", type=int, default=defaults.output_stride, help="8, 16 or 32 (default: 8)")
    p.add_argument("--feats-channels", type=int, default=None, help="IDR's C (default: official, else 512)")
    p.add_argument("--head-channels", type=int, default=None)
    p.add_argument("--aux-channels", type=int, default=None)
    p.add_argument("--refine-channels", type=int, default=None)
    p.add_argument("--latency", action="store_true", help="also time batch-1 inference")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations (default: 10)")
    p.add_argument("--iters", type=int, default=MIN_CLI_ITERS,
                   help=f"timed iterations, at least {MIN_CLI_ITERS} (default: {MIN_CLI_ITERS})")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto = cuda when present)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    return p


def _idr_flags(framework: str, idr: str) -> list[bool]:
    """The IDR settings `--idr` asks for; a plug-in or scheme framework has only its own. Raises UsageError."""
    from models.registry import carries_plugin

    modes = {"on": [True], "off": [False], "both": [False, True]}
    if idr not in modes:
        raise UsageError(f"--idr: unknown {idr!r}; allowed: on, off, both")
    if not carries_plugin(framework):
        return modes[idr]
    if idr == "on":
        raise UsageError(f"--idr: {framework} carries its own context module and takes no IDR; allowed: off, both")
    return [False]


def _validate(args: argparse.Namespace):
    """The checked plan: (frameworks flags, sizes, ModelConfig, device); raises UsageError."""
    from pydantic import ValidationError

    from harness.config import ModelConfig
    from models.registry import all_framework_names, check_backbone

    if args.framework not in all_framework_names():
        raise UsageError(f"--framework: unknown {args.framework!r}; allowed: {', '.join(all_framework_names())}")
    idr_flags = _idr_flags(args.framework, args.idr)
    sizes = []
    for text in args.size or ["512x512"]:
        try:
            sizes.append(parse_size(text))
        except ValueError:
            raise UsageError(f"--size: {text!r} is not HxW; allowed: two positive integers, e.g. 512x512") from None
    if args.num_classes is not None and args.num_classes <= 0:
        raise UsageError(f"--num-classes: {args.num_classes}; allowed: a positive integer")
    if args.warmup < 0:
        raise UsageError(f"--warmup: {args.warmup}; allowed: an integer >= 0")
    if args.iters < MIN_CLI_ITERS:
        raise UsageError(f"--iters: {args.iters}; allowed: an integer >= {MIN_CLI_ITERS}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise UsageError(f"--device: unknown {device!r}; allowed: auto, cpu, cuda, cuda:N")
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device: {device!r} but no CUDA device is present; allowed here: auto, cpu")
    if args.dataset != "none" and args.dataset not in OFFICIAL_NUM_CLASSES:
        raise UsageError(f"--dataset: unknown {args.dataset!r}; allowed: none, {', '.join(OFFICIAL_NUM_CLASSES)}")
    explicit = {
        "backbone": args.backbone,
        "output_stride": args.output_stride,
        "feats_channels": args.feats_channels,
        "head_channels": args.head_channels,
        "aux_channels": args.aux_channels,
        "refine_channels": args.refine_channels,
    }
    explicit = {k: v for k, v in explicit.items() if v is not None}
    cfgs = {}
    for idr in idr_flags:
        fields = {**official_fields(args.framework, args.dataset, idr, args.backbone), **explicit}
        try:
            cfgs[idr] = ModelConfig(**fields)
        except ValidationError as err:
            first = err.errors()[0]
            flag = "--" + str(first["loc"][0]).replace("_", "-")
            msg = first["msg"].removeprefix("Value error, ")
            got = fields.get(str(first["loc"][0]))
            raise UsageError(f"{flag}: {msg}" + ("" if repr(got) in msg else f" (got {got!r})")) from None
    try:
        check_backbone(args.framework, args.backbone)
    except ValueError as err:
        raise UsageError(f"--backbone: {err}") from None
    if args.num_classes is None:
        args.num_classes = OFFICIAL_NUM_CLASSES.get(args.dataset, DEFAULT_NUM_CLASSES)
    return idr_flags, sizes, cfgs, device


def official_fields(framework: str, dataset: str, idr: bool, backbone: str) -> dict:
    """`ModelConfig` keys of the official config of (framework, dataset, backbone); {} if none."""
    from harness.official import OUR_BACKBONES, check_pair, official_model_settings

    official_backbone = next((k for k, v in OUR_BACKBONES.items() if v == backbone or k == backbone), None)
    if dataset == "none" or official_backbone is None:
        return {}
    try:
        check_pair(framework, dataset, official_backbone, idr)
    except ValueError:
        return {}
    return official_model_settings(framework, dataset, idr, official_backbone)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        idr_flags, sizes, cfgs, device = _validate(args)
    except UsageError as err:
        print(f"python -m harness.measure: {err}", file=sys.stderr)
        return 2
    results = []
    for idr in idr_flags:
        for size in sizes:
            results.append(
                measure(args.framework, idr, size, cfgs[idr], args.num_classes, args.latency, args.warmup, args.iters,
                        device)
            )
    print(format_table(results))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
