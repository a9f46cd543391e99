"""Parameter table: the official sssegmentation models against ours, R50-D8 (V1c), aux head, BN.

    python benchmarks/official_params.py [--num-classes K] [--datasets ade20k,lip,...]

Rows: the four baselines and the four IDRNet heads on each dataset's official config (its
switches and C), at `--num-classes` (default 150, the figures of issue 11; 0 = each dataset's
official class count). Millions of trainable parameters; "diff" is ours - official.
Requires sssegmentation==1.7.0 (`pip install '.[parity]'`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ssseg.modules.models.segmentors.builder import BuildSegmentor
from torch import nn

from harness.convert import build_official_model
from harness.official import (
    FRAMEWORKS,
    OFFICIAL_NUM_CLASSES,
    R50,
    R50_DATASETS,
    official_segmentor_cfg,
)


def trainable_millions(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


def row(framework: str, dataset: str, idr: bool, num_classes: int) -> tuple[str, float, float]:
    official = BuildSegmentor(official_segmentor_cfg(framework, dataset, idr, num_classes=num_classes), mode="TRAIN")
    ours, _ = build_official_model(framework, idr, dataset, R50, num_classes)
    name = f"{framework}{'+idr' if idr else ''} {dataset} K={num_classes}"
    return name, trainable_millions(official), trainable_millions(ours)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-classes", type=int, default=150, help="K for every row; 0 = official per dataset")
    parser.add_argument("--datasets", default=",".join(R50_DATASETS), help="datasets of the IDR rows")
    args = parser.parse_args(argv)
    rows = [(f, "ade20k", False) for f in FRAMEWORKS]
    rows += [(f, d, True) for d in args.datasets.split(",") for f in FRAMEWORKS]
    print(f"{'model':<34} {'official':>9} {'ours':>9} {'diff':>7}")
    for framework, dataset, idr in rows:
        k = args.num_classes or OFFICIAL_NUM_CLASSES[dataset]
        name, theirs, mine = row(framework, dataset, idr, k)
        print(f"{name:<34} {theirs:>9.2f} {mine:>9.2f} {mine - theirs:>+7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
