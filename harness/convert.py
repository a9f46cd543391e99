"""Convert an official sssegmentation (IDRNet, baseline, a context scheme) checkpoint into our `model.pt`.

    python -m harness.convert CKPT --framework F [--idr] --dataset D [--backbone resnet50c|swin_large] --out model.pt

The official trainer saves `{'model': segmentor.state_dict(), 'optimizer': ..., 'epoch': ...}`
(ssseg/train.py); only `model` is read, with `torch.load(weights_only=True)`: a file that needs
arbitrary pickled objects is refused, naming what it needs. Our model is the official one of
(framework, dataset[, backbone]) (harness/official.py), so every official tensor has exactly one
place in it: backbone, heads, auxiliary head and the four IDR buffers (`class_relations_mean/var`,
`selected_classes_counter`, `dl_cls_representations`; MCIBI's and MCIBI++'s `memory_module.memory`). Every official key left over, every model
key left unfilled and every shape that differs is reported, one line each (exit 2), and nothing is
written. The output is written atomically as `{'model': state_dict, 'source': provenance}`.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from harness.checkpoint_fit import TINY, TINY_CHANNELS, Finding, describe, names_of
from harness.fileio import sha256_of_file
from harness.official import (
    FRAMEWORKS,
    OFFICIAL_NUM_CLASSES,
    R50,
    SWIN_L,
    check_pair,
    our_model_config,
)
from harness.official_schemes import MCIBIPP_FRAMEWORKS, OWN_HEAD_DATASETS, SIMILARITY_SCHEMES, is_scheme

BACKBONES = (R50, SWIN_L)
_ATTENTION_PARTS = ("key_project", "query_project", "value_project", "out_project")
_IDR_BUFFERS = {
    "class_relations_mean": "head.relations_mean",
    "class_relations_var": "head.relations_var",
    "selected_classes_counter": "head.pick_counts",
    "dl_cls_representations": "head.dataset_reps",
}


# what to pass instead when the checkpoint holds another model (harness/checkpoint_fit.py)
CONVERT_FLAGS = {
    "idr": "add --idr",
    "baseline": "drop --idr",
    "framework": "use --framework {framework}{idr}",
    "classes": "use --dataset {datasets}",
}


class ConversionError(Exception):
    """A checkpoint that cannot be converted; `.problems` lists every reason, one line each."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# ------------------------------------------------------------------------------- loading


def load_official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The `model` state dict of an official checkpoint (or the file itself if it is one)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConversionError([f"{path}: no such file"]) from None
    except pickle.UnpicklingError as exc:
        needs = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), "")
        problem = (
            f"{path}: cannot be loaded with weights_only=True ({needs or str(exc).splitlines()[0]}); "
            "refusing to unpickle arbitrary objects: re-save only its state dict "
            "(torch.save({'model': ckpt['model']}, path)) from a trusted environment"
        )
        raise ConversionError([problem]) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ConversionError([f"{path}: not a readable torch checkpoint ({' '.join(str(exc).split())[:200]})"]) from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError([f"{path}: expected {{'model': state_dict}} as the official trainer saves, or a state dict"])
    return {k.removeprefix("module."): v for k, v in state.items()}


# ------------------------------------------------------------------------------- backbones


def resnet_key(key: str) -> str | None:
    """Our key of an official ResNet-V1c key (`backbone_net.stem.7.weight` -> `backbone.body.bn1.weight`)."""
    if not key.startswith("backbone_net."):
        return None
    rest = key.removeprefix("backbone_net.")
    stem = re.fullmatch(r"stem\.(\d+)\.(.+)", rest)
    if stem:
        index, leaf = int(stem.group(1)), stem.group(2)
        rest = f"bn1.{leaf}" if index == 7 else f"conv1.{index}.{leaf}"
    return f"backbone.body.{rest}"


def unfold_to_timm_order(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Reorder a Swin patch-merging axis of 4C from nn.Unfold's order to timm's.

    Unfold lays the 2x2 neighbourhood out as c*4 + kh*2 + kw; timm's patch merging (as the
    original Swin) as (kw*2 + kh)*C + c.
    """
    four_c = tensor.shape[dim]
    c = four_c // 4
    t = torch.arange(four_c)
    position, channel = t // c, t % c
    kw, kh = position // 2, position % 2
    return tensor.index_select(dim, channel * 4 + kh * 2 + kw)


_SWIN_RENAMES = (
    (r"patch_embed\.projection\.(.+)", r"body.patch_embed.proj.\1"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.(.+)", r"body.layers_\1.blocks.\2.attn.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.(.+)", r"body.layers_\1.blocks.\2.mlp.fc1.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.(.+)", r"body.layers_\1.blocks.\2.mlp.fc2.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.(norm[12])\.(.+)", r"body.layers_\1.blocks.\2.\3.\4"),
    (r"patch_embed\.norm\.(.+)", r"body.patch_embed.norm.\1"),
    (r"norm(\d)\.(.+)", r"out_norms.\1.\2"),
)


def swin_tensor(key: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """Our (key, tensor) of an official Swin key; None if it has no place (or is not Swin's)."""
    if not key.startswith("backbone_net."):
        return None
    rest = key.removeprefix("backbone_net.")
    merge = re.fullmatch(r"stages\.(\d+)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)", rest)
    if merge:  # mmseg merges at the end of stage i, timm at the start of stage i + 1
        dim = 1 if merge.group(2) == "reduction.weight" else 0
        return f"backbone.body.layers_{int(merge.group(1)) + 1}.downsample.{merge.group(2)}", unfold_to_timm_order(tensor, dim)
    for pattern, replacement in _SWIN_RENAMES:
        if re.fullmatch(pattern, rest):
            return "backbone." + re.sub(pattern, replacement, rest), tensor
    return None


def _is_swin_derived_buffer(key: str) -> bool:
    # a constant of the window size, recomputed by timm (not in its state dict)
    return key.endswith(".attn.w_msa.relative_position_index")


# ------------------------------------------------------------------------------- heads


def _attention(official: str, ours: str) -> list[tuple[str, list[str]]]:
    return [(f"{official}.{part}", [f"{ours}.{part}"]) for part in _ATTENTION_PARTS]


def _baseline_pairs(framework: str) -> list[tuple[str, list[str]]]:
    pairs = {
        "fcn": [("decoder", ["head.convs", "head.classifier"])],
        "pspnet": [("ppm_net", ["head.ppm"]), ("decoder", ["head.classifier"])],
        "deeplabv3": [("aspp_net", ["head.aspp"]), ("decoder", ["head.classifier"])],
        "upernet": [
            ("ppm_net", ["head.ppm"]),
            ("lateral_convs", ["head.fpn.laterals"]),
            ("fpn_convs", ["head.fpn.outputs"]),
            ("decoder", ["head.fuse", "head.classifier"]),
        ],
    }
    if framework in SIMILARITY_SCHEMES:
        return _scheme_pairs(framework)
    return pairs[framework]


def _block_head_pairs(official_infix: str, our_block: str) -> list[tuple[str, list[str]]]:
    """Non-local, DNL, CCNet: conv_before_<x>, <x> block, conv_after_<x>, decoder."""
    block = {"nl": "nl_block", "dnl": "dnl_block", "cca": "cca"}[official_infix]
    return [
        (f"conv_before_{official_infix}", ["head.conv_before"]),
        (block, [our_block]),
        (f"conv_after_{official_infix}", ["head.conv_after"]),
        ("decoder", ["head.fuse", "head.classifier"]),
    ]


def _scheme_pairs(framework: str) -> list[tuple[str, list[str]]]:
    """(official module, our modules) of a similarity scheme's head (its auxiliary head aside)."""
    if framework == "nonlocalnet":
        return _block_head_pairs("nl", "head.block")
    if framework == "dnlnet":
        return _block_head_pairs("dnl", "head.block")
    if framework == "ccnet":
        return _block_head_pairs("cca", "head.block.attention")
    if framework == "ocrnet":
        return [
            ("bottleneck", ["head.bottleneck"]),
            *_attention("object_context_block", "head.object_context.attention"),
            ("object_context_block.bottleneck", ["head.object_context.fuse"]),
            ("decoder", ["head.classifier"]),
        ]
    branches = [
        pair
        for b in ("pam", "cam")
        for pair in ((f"{b}_in_conv", [f"head.{b}_in"]), (f"{b}_net", [f"head.{b}"]),
                     (f"{b}_out_conv", [f"head.{b}_out"]), (f"decoder_{b}", [f"head.{b}_classifier"]))
    ]
    return branches + [("decoder_pamcam", ["head.classifier"])]


def _idr_pairs(model: nn.Module) -> list[tuple[str, list[str]]]:
    wiring = model.head.wiring
    pairs = [("bottleneck", ["head.bottleneck"])]
    if hasattr(wiring, "context"):
        pairs.append(("coarse_context_module", ["head.wiring.context"]))
    if getattr(wiring, "refiner", None) is not None:
        pairs += _attention(f"coarsecontext_refiner_{wiring.refine_at}", "head.wiring.refiner")
    if hasattr(wiring, "fpn"):
        pairs += [("lateral_convs", ["head.wiring.fpn.laterals"]), ("fpn_convs", ["head.wiring.fpn.outputs"])]
    pairs += [("decoder_stage1", ["head.stage1"]), ("decoder_stage2", ["head.stage2"])]
    pairs += _attention("idcontext_refiner", "head.refiner")
    pairs += [(name, [ours]) for name, ours in _IDR_BUFFERS.items()]
    return pairs


def _mcibipp_pairs(model: nn.Module) -> list[tuple[str, list[str]]]:
    head = model.head
    pairs = [("bottleneck", ["head.bottleneck"])]
    if head.context_classifier is not None:
        pairs.append(("context_within_image_module", ["head.wiring.context"]))
    if head.context_attention is not None:
        pairs += _attention("self_attention", "head.context_attention")
    pairs += [("memory_module.memory", ["head.memory.memory"])]
    pairs += _attention("memory_module.self_attention", "head.memory.attention")
    pairs += [("memory_module.bottleneck", ["head.memory.fuse"])]
    if hasattr(head.wiring, "fpn"):
        pairs += [("lateral_convs", ["head.wiring.fpn.laterals"]), ("fpn_convs", ["head.wiring.fpn.outputs"])]
    pairs += [("decoder_pr", ["head.stage1"]), ("decoder_cls", ["head.decoder"])]
    if head.context_classifier is not None:
        pairs.append(("decoder_cwi", ["head.context_classifier"]))
    return pairs


_ISNET_PAIRS = [
    ("bottleneck", ["head.bottleneck"]),
    *_attention("ilc_net.correlate_net", "head.image_context.attention"),
    ("ilc_net.bottleneck", ["head.image_context.fuse"]),
    *_attention("slc_net.correlate_net", "head.semantic_context.attention"),
    ("slc_net.bottleneck", ["head.semantic_context.fuse"]),
    ("decoder_stage1", ["head.stage1"]),
    ("decoder_stage2", ["head.stage2"]),
]


_MCIBI_PAIRS = [
    ("context_within_image_module", ["head.context"]),
    ("bottleneck", ["head.bottleneck"]),
    ("memory_module.memory", ["head.memory.memory"]),
    *_attention("memory_module.self_attention", "head.memory.attention"),
    ("memory_module.bottleneck", ["head.memory.fuse"]),
    *_attention("memory_module.self_attention_ms", "head.memory.context_attention"),
    ("memory_module.bottleneck_ms", ["head.memory.context_fuse"]),
    ("decoder_stage1", ["head.stage1"]),
    ("decoder_stage2", ["head.stage2"]),
]


def _head_pairs(model: nn.Module, framework: str, idr: bool) -> list[tuple[str, list[str]]]:
    """(official module, our modules) of everything but backbone and auxiliary head."""
    if framework == "isnet":
        if getattr(model.head, "shortcut", None) is not None:  # the LIP decoder: its shortcut before stage 2
            return _ISNET_PAIRS[:-1] + [("shortcut", ["head.shortcut"]), _ISNET_PAIRS[-1]]
        return _ISNET_PAIRS
    if framework == "mcibi":
        return _MCIBI_PAIRS
    if is_scheme(framework):
        return _mcibipp_pairs(model)
    return _idr_pairs(model) if idr else _baseline_pairs(framework)


def _under(keys: Iterable[str], prefix: str) -> list[str]:
    return [k for k in keys if k == prefix or k.startswith(prefix + ".")]


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _zip_module(
    official: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], source: str, targets: list[str]
) -> tuple[dict[str, torch.Tensor], list[str], set[str]]:
    """Pair the tensors under `source` with those under `targets`, in registration order."""
    src = _under(official, source)
    dst = [(k, prefix) for prefix in targets for k in _under(ours, prefix)]
    out, problems = {}, []
    for s, (d, prefix) in zip(src, dst):
        leaves_differ = s[len(source):].rsplit(".", 1)[-1] != d[len(prefix):].rsplit(".", 1)[-1]
        if leaves_differ or official[s].shape != ours[d].shape:
            problems.append(f"{s} ({_shape(official[s])}) does not fit {d} ({_shape(ours[d])})")
        else:
            out[d] = official[s]
    problems += [f"{s} ({_shape(official[s])}): no counterpart under {', '.join(targets)}" for s in src[len(dst):]]
    problems += [f"{d} ({_shape(ours[d])}): nothing under official {source} for it" for d, _ in dst[len(src):]]
    return out, problems, set(src)


def _convert_backbone(
    official: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], backbone: str
) -> tuple[dict[str, torch.Tensor], set[str]]:
    out, used = {}, set()
    for key, tensor in official.items():
        if backbone == SWIN_L and _is_swin_derived_buffer(key):
            used.add(key)
            continue
        if backbone == SWIN_L:
            mapped = swin_tensor(key, tensor)
        else:
            mapped = (resnet_key(key), tensor) if resnet_key(key) else None
        if mapped is not None and mapped[0] in ours:
            out[mapped[0]] = mapped[1]
            used.add(key)
    return out, used


def convert_state_dict(
    official: dict[str, torch.Tensor], model: nn.Module, framework: str, idr: bool, backbone: str = R50
) -> dict[str, torch.Tensor]:
    """Our state dict for `model` from an official one; ConversionError listing every problem."""
    ours = model.state_dict()
    out, used = _convert_backbone(official, ours, backbone)
    problems = [f"{d} ({_shape(t)}) does not fit backbone tensor {_shape(ours[d])}"
                for d, t in out.items() if t.shape != ours[d].shape]
    aux = "aux_head" if model.aux_head is not None else "head.aux"  # OCRNet's head owns it
    pairs = _head_pairs(model, framework, idr) + [("auxiliary_decoder", [aux])]
    for source, targets in pairs:
        mapped, wrong, consumed = _zip_module(official, ours, source, targets)
        out.update(mapped)
        problems += wrong
        used |= consumed
    problems += [f"{k} ({_shape(official[k])}): unmatched official key" for k in official if k not in used]
    problems += [f"{k} ({_shape(ours[k])}): not filled by the checkpoint" for k in ours
                 if k not in out and not any(k in p for p in problems)]
    if problems:
        raise ConversionError(problems)
    return {k: out[k].to(ours[k].dtype).clone() for k in ours}


# ------------------------------------------------------------------------------- a checkpoint of another model


def _official_sources(official: dict[str, torch.Tensor], framework: str, idr: bool, dataset: str,
                      backbone: str) -> list[str] | None:
    """The official module names the (framework, idr) model reads, if the checkpoint has exactly that
    head structure (same tensors under each, by count and leaf name); None if it has another."""
    from models.registry import head_of

    try:
        check_pair(framework, dataset, backbone, idr)
    except ValueError:
        return None
    tiny = our_model_config(framework, dataset, idr, backbone).model_copy(update=TINY)
    head = head_of(framework, idr, TINY_CHANNELS, 2, tiny)
    ours = [f"head.{key}" for key in head.state_dict()]  # in registration order, as the converter pairs them
    pairs = _head_pairs(SimpleNamespace(head=head), framework, idr)
    for source, targets in pairs:
        theirs = _under(official, source)
        mine = [(key, prefix) for prefix in targets for key in _under(ours, prefix)]
        if len(theirs) != len(mine) or any(
            t[len(source):].rsplit(".", 1)[-1] != m[len(p):].rsplit(".", 1)[-1] for t, (m, p) in zip(theirs, mine)
        ):
            return None
    sources = [source for source, _ in pairs]
    head_keys = [k for k in official if not k.startswith(("backbone_net.", "auxiliary_decoder."))]
    if not all(any(_under([key], source) for source in sources) for key in head_keys):
        return None
    return sources


def diagnose_official(official: dict[str, torch.Tensor], framework: str, idr: bool, dataset: str,
                      num_classes: int, backbone: str = R50) -> Finding | None:
    """What an official checkpoint holds when it is not (framework, idr) with `num_classes` classes."""
    asked = _official_sources(official, framework, idr, dataset, backbone)
    if asked is None:
        for candidate in dict.fromkeys([framework, *FRAMEWORKS]):
            for candidate_idr in (idr, not idr):
                found = _official_sources(official, candidate, candidate_idr, dataset, backbone)
                if found is None:
                    continue
                tops = {source.split(".")[0] for source in found} - set(_plain_sources(framework, idr))
                telling = sorted((k for k in official if k.split(".")[0] in tops),
                                 key=lambda k: (not k.startswith(("decoder_stage", "class_relations")), k))
                evidence = names_of(telling, 1)
                kind = "framework" if candidate != framework else ("idr" if candidate_idr else "baseline")
                return Finding(kind, evidence or "its head's tensors", candidate, candidate_idr)
        return None
    aux = [k for k in official if k.startswith("auxiliary_decoder.") and official[k].ndim == 4]
    if aux and official[aux[-1]].shape[0] != num_classes:
        shape = "x".join(map(str, official[aux[-1]].shape))
        return Finding("classes", f"{aux[-1]} is {shape}", num_classes=int(official[aux[-1]].shape[0]))
    return None


def _plain_sources(framework: str, idr: bool) -> list[str]:
    """The official module names of (framework, idr) as the converter pairs them (no model needed for
    the baseline; IDR's are the same for every framework but its context)."""
    if not idr:
        return [source for source, _ in _baseline_pairs(framework)]
    return ["bottleneck", "decoder_stage1", "decoder_stage2", "idcontext_refiner", *_IDR_BUFFERS]


# ------------------------------------------------------------------------------- files


def build_official_model(
    framework: str, idr: bool, dataset: str, backbone: str = R50, num_classes: int | None = None, **overrides
) -> tuple[nn.Module, object]:
    """Our model (random init) of the official configuration, and its ModelConfig."""
    from models.registry import build_segmentor

    check_pair(framework, dataset, backbone, idr)
    cfg = our_model_config(framework, dataset, idr, backbone, **overrides)
    k = OFFICIAL_NUM_CLASSES[dataset] if num_classes is None else num_classes
    return build_segmentor(framework, idr, k, cfg), cfg


def _write_atomically(obj: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def convert_file(
    source: Path,
    out: Path,
    *,
    framework: str,
    idr: bool,
    dataset: str,
    backbone: str = R50,
    num_classes: int | None = None,
) -> None:
    """Convert `source` (official checkpoint) to our `model.pt` at `out`; nothing written on error.

    `num_classes` defaults to the dataset's official class count (harness.official.OFFICIAL_NUM_CLASSES).
    """
    source, out = Path(source), Path(out)
    try:
        check_pair(framework, dataset, backbone, idr)
    except ValueError as exc:
        raise ConversionError([str(exc)]) from None
    official = load_official_state_dict(source)
    num_classes = OFFICIAL_NUM_CLASSES[dataset] if num_classes is None else num_classes
    finding = diagnose_official(official, framework, idr, dataset, num_classes, backbone)
    if finding is not None:
        raise ConversionError([f"{source}: {describe(finding, CONVERT_FLAGS)}"])
    model, cfg = build_official_model(framework, idr, dataset, backbone, num_classes)
    state = convert_state_dict(official, model, framework, idr, backbone)
    provenance = {
        "file": source.name, "sha256": sha256_of_file(source), "kind": "released model (converted, no training)",
        "framework": framework, "idr": idr, "dataset": dataset, "backbone": backbone,
        "num_classes": num_classes, "model_config": cfg.model_dump(mode="json"),
    }
    _write_atomically({"model": state, "source": provenance}, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.convert", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="official sssegmentation checkpoint (.pth)")
    parser.add_argument(
        "--framework", required=True, choices=[*FRAMEWORKS, *MCIBIPP_FRAMEWORKS, *OWN_HEAD_DATASETS, *SIMILARITY_SCHEMES]
    )
    parser.add_argument("--idr", action="store_true", help="an IDRNet checkpoint (else the baseline)")
    parser.add_argument("--dataset", required=True, choices=sorted(OFFICIAL_NUM_CLASSES))
    parser.add_argument("--backbone", default=R50, choices=BACKBONES)
    parser.add_argument("--out", required=True, type=Path, help="our model.pt to write")
    args = parser.parse_args(argv)
    try:
        convert_file(args.checkpoint, args.out, framework=args.framework, idr=args.idr,
                     dataset=args.dataset, backbone=args.backbone)
    except ConversionError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
