"""Building a split's dataset from its registered spec: options, card, samples and pipeline."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness.data.base import DataError, SegmentationDataset, read_label_png
from harness.data.cards import DatasetCard
from harness.data.folder import FOLDER_OPTION, folder_spec
from harness.data.registry import DatasetSpec, get_spec
from harness.data.transforms import TestPipeline, TrainPipeline

# Options every dataset accepts: they change its card's training crop / resize scale
# (e.g. the 640x640 crops of the Swin-L runs). Values are [height, width] / [long, short].
CARD_OPTIONS = ("crop_size", "base_scale")


def spec_for(name: str, options: dict[str, Any] | None = None) -> DatasetSpec:
    """The registered dataset `name`, or the folder dataset its options describe (``options["folder"]``:
    a custom dataset of an experiment's ``data.custom``, carried by each of its cells)."""
    if options and options.get(FOLDER_OPTION) is not None:
        return folder_spec(name, options[FOLDER_OPTION])
    return get_spec(name)


def validate_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError naming the first option the dataset does not know or whose type is wrong."""
    defaults = spec_for(name, options).default_options
    allowed = [*defaults, *CARD_OPTIONS]
    for key, value in options.items():
        if key in CARD_OPTIONS:
            if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
                raise ValueError(f"{name}.{key}: expected two positive integers, got {value!r}")
            continue
        if key not in defaults:
            raise ValueError(f"{name}: unknown option {key!r}; allowed: {', '.join(allowed)}")
        expected = type(defaults[key])
        if defaults[key] is not None and not isinstance(value, expected):
            raise ValueError(f"{name}.{key}: expected {expected.__name__}, got {value!r}")
    check = spec_for(name, options).check_options
    if check is not None:
        check(options)


def resolve_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    return {**spec_for(name, options).default_options, **options}


def dataset_card(name: str, options: dict[str, Any] | None = None) -> DatasetCard:
    options = resolve_options(name, options or {})
    card = spec_for(name, options).make_card({k: v for k, v in options.items() if k not in CARD_OPTIONS})
    changes = {key: tuple(options[key]) for key in CARD_OPTIONS if key in options}
    return dataclasses.replace(card, **changes) if changes else card


def build_dataset(
    name: str, root: str | Path, split: str, options: dict[str, Any], train: bool, seed: int = 0
) -> SegmentationDataset:
    spec = spec_for(name, options)
    opts = resolve_options(name, options)
    card = dataset_card(name, options)
    samples = spec.list_samples(Path(root), split, {k: v for k, v in opts.items() if k not in CARD_OPTIONS})
    if not samples:
        raise DataError(f"{name}: split {split!r} under {root} has no samples. {spec.prepare_hint}")
    pipeline = TrainPipeline(card, seed) if train else TestPipeline(card)
    if spec.label_reader_for is not None:
        reader = spec.label_reader_for({k: v for k, v in opts.items() if k not in CARD_OPTIONS})
        return SegmentationDataset(samples, card, pipeline, None, reader)
    return SegmentationDataset(samples, card, pipeline, spec.decode_label, spec.read_label or read_label_png)
