"""Parameter table of the similarity schemes: the official sssegmentation models against ours.

    python benchmarks/scheme_params.py [--num-classes K] [--dataset ade20k|cityscapes]

Rows: Non-local, DNL, OCRNet, DANet, CCNet on their official R50-D8 (V1c) configs, aux head,
BatchNorm; millions of trainable parameters of the whole model and of its context module (the
official `nl_block`, `dnl_block`, `spatial_gather_module` + `object_context_block`, `pam_net` +
`cam_net`, `cca`; ours: the head's `context_modules`). The official CCNet is built with the
per-pixel reference (benchmarks/criss_cross_reference.py) in place of mmcv's op, whose
parameters it has. Requires sssegmentation==1.7.0 (`pip install '.[parity]'`).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ssseg.modules.models.segmentors.ccnet.ccnet as official_ccnet
from ssseg.modules.models.segmentors.builder import BuildSegmentor
from torch import nn

from harness.convert import build_official_model
from harness.measure import context_module_names
from harness.official import R50, official_segmentor_cfg
from harness.official_schemes import SIMILARITY_SCHEMES

OFFICIAL_CONTEXT = {
    "nonlocalnet": ("nl_block",), "dnlnet": ("dnl_block",),
    "ocrnet": ("spatial_gather_module", "object_context_block"), "danet": ("pam_net", "cam_net"), "ccnet": ("cca",),
}


def _use_reference_criss_cross() -> None:
    spec = importlib.util.spec_from_file_location("criss_cross_reference", ROOT / "benchmarks" / "criss_cross_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    official_ccnet.CrissCrossAttention = module.ReferenceCrissCrossAttention


def millions(modules: list[nn.Module]) -> float:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--dataset", default="ade20k", choices=["ade20k", "cityscapes"])
    args = parser.parse_args(argv)
    _use_reference_criss_cross()
    print(f"{'scheme':<12} {'official':>9} {'ours':>9} {'ctx official':>13} {'ctx ours':>9}")
    for scheme in SIMILARITY_SCHEMES:
        cfg = official_segmentor_cfg(scheme, args.dataset, False, num_classes=args.num_classes)
        official = BuildSegmentor(cfg, mode="TRAIN")
        ours, _ = build_official_model(scheme, False, args.dataset, R50, args.num_classes)
        their_ctx = millions([getattr(official, name) for name in OFFICIAL_CONTEXT[scheme]])
        our_ctx = millions([ours.get_submodule(name) for name in context_module_names(ours)])
        print(f"{scheme:<12} {millions([official]):>9.2f} {millions([ours]):>9.2f} {their_ctx:>13.4f} {our_ctx:>9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
