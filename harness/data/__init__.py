"""Datasets: the registry, building a split's dataset with its pipeline, per-dataset options.

Each benchmark lives in its own module and registers itself (:mod:`harness.data.registry`);
importing this package imports them all.
"""
from __future__ import annotations

from harness.data.base import DataError, Sample, SegmentationDataset
from harness.data.building import (
    CARD_OPTIONS,
    build_dataset,
    dataset_card,
    resolve_options,
    validate_options,
)
from harness.data.cards import DatasetCard
from harness.data.registry import (
    DatasetSpec,
    dataset_names,
    get_spec,
    preparers,
    register,
)

# each dataset module registers itself on import
from harness.data import ade20k as _ade20k  # noqa: E402,F401
from harness.data import cityscapes as _cityscapes  # noqa: E402,F401
from harness.data import coco_stuff as _coco_stuff  # noqa: E402,F401  (coco_stuff10k and coco_stuff164k)
from harness.data import context_scenes as _context_scenes  # noqa: E402,F401  (registers itself)
from harness.data import lip as _lip  # noqa: E402,F401
from harness.data import pascal_context as _pascal_context  # noqa: E402,F401

__all__ = [
    "CARD_OPTIONS",
    "DataError",
    "DatasetCard",
    "DatasetSpec",
    "Sample",
    "SegmentationDataset",
    "build_dataset",
    "dataset_card",
    "dataset_names",
    "get_spec",
    "preparers",
    "register",
    "resolve_options",
    "validate_options",
]
