"""The dataset registry: each benchmark module registers a :class:`DatasetSpec` under its name.

A dataset that is a folder of images and a folder of label PNGs needs no code: an experiment
describes it under ``data.custom.<name>`` (:mod:`harness.data.folder`,
:func:`harness.data.building.spec_for`). To add a benchmark, write a module with a card, a function listing (image, label) file pairs for
a split, (if needed) a label decoder and a :class:`Preparer`, call :func:`register` at import
time, and import the module in ``harness/data/__init__.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.data.base import Sample
from harness.data.cards import DatasetCard
from harness.data.preparation import Preparer


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    make_card: Callable[[dict[str, Any]], DatasetCard]
    list_samples: Callable[[Path, str, dict[str, Any]], list[Sample]]
    decode_label: Callable[[np.ndarray], np.ndarray] | None = None
    default_options: dict[str, Any] = field(default_factory=dict)
    prepare_hint: str = ""
    read_label: Callable[[Path], np.ndarray] | None = None  # default: single-channel PNG
    preparer: Preparer | None = None  # how `python -m harness.prepare` converts and checks it
    # options -> a reader returning train ids (read, checked, decoded); replaces read_label and
    # decode_label when the label mapping depends on an option (e.g. coco_stuff10k's protocol)
    label_reader_for: Callable[[dict[str, Any]], Callable[[Path], np.ndarray]] | None = None
    check_options: Callable[[dict[str, Any]], None] | None = None  # ValueError naming a bad option value


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    _REGISTRY[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def preparers() -> dict[str, Preparer]:
    """{dataset name: its preparer} of the registered datasets that `harness.prepare` handles."""
    return {name: spec.preparer for name, spec in sorted(_REGISTRY.items()) if spec.preparer is not None}


def get_spec(name: str) -> DatasetSpec:
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; allowed: {', '.join(dataset_names())}")
    return _REGISTRY[name]
