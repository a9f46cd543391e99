"""The paper's figures and settings, as data.

`results/reference/paper.csv` (tracked in git) holds every figure of the paper we have
(`/work/shared/paper/results.md`), one row each:

    table, framework, backbone, dataset, split, protocol, metric, variant, value, source

`table` is the IDRBench table the figure appears in (`frameworks`: the four frameworks with
R-50-D8 / R-101-D8, `sota`: UPerNet + Swin-L), `protocol` is `ss`, `flip` or `ms+flip`,
`variant` is `baseline` or `idr`, `source` is `model zoo` or `paper`. A figure that is not in
the file was not retrievable: tables show "—" for it, never a guess.

The settings below are those of the official configurations (`settings.md`); tables compare
each record's resolved configuration with them and flag every key that differs. Only what
the settings state is checked (e.g. no momentum check where the settings do not give one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
REFERENCE_CSV = REPO / "results" / "reference" / "paper.csv"
COLUMNS = ["table", "framework", "backbone", "dataset", "split", "protocol", "metric", "variant", "value", "source"]
PROTOCOLS = ("ss", "flip", "ms", "ms+flip")
VARIANTS = ("baseline", "idr")
SOURCES = ("model zoo", "paper")

R50 = "resnet50c"
R101 = "resnet101c"
SWIN_L = "swin_large_patch4_window12_384"
#: spellings of the paper's backbones accepted in records (timm tags such as `.ms_in22k` are dropped)
BACKBONE_ALIASES = {"resnet50_v1c": R50, "resnet101_v1c": R101, "swin_l": SWIN_L}

#: the paper's table order
PAPER_FRAMEWORKS = ("fcn", "pspnet", "deeplabv3", "upernet")
FRAMEWORK_LABELS = {
    "fcn": "FCN",
    "pspnet": "PSPNet",
    "deeplabv3": "DeepLabV3",
    "upernet": "UPerNet",
    "mask2former": "Mask2Former",
}
DATASET_LABELS = {
    "ade20k": "ADE20K",
    "coco_stuff10k": "COCO-Stuff-10k",
    "coco_stuff164k": "COCO-Stuff-164k",
    "cityscapes": "Cityscapes",
    "lip": "LIP",
    "pascal_context59": "PASCAL-Context-59",
}
BACKBONE_LABELS = {R50: "R-50-D8", R101: "R-101-D8", SWIN_L: "Swin-L"}


class ReferenceError(ValueError):
    """paper.csv is malformed; the message names the row and column."""


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's figures, one row each, with `value` as float; validated."""
    path = Path(path) if path is not None else REFERENCE_CSV
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns) != COLUMNS:
        raise ReferenceError(f"{path}: columns {list(frame.columns)}; expected {COLUMNS}")
    for column, allowed in (("protocol", PROTOCOLS), ("variant", VARIANTS), ("source", SOURCES)):
        bad = frame.index[~frame[column].isin(allowed)]
        if len(bad):
            raise ReferenceError(
                f"{path}: row {bad[0] + 2}: {column} {frame.at[bad[0], column]!r}; allowed: {', '.join(allowed)}"
            )
    values = pd.to_numeric(frame["value"], errors="coerce")
    if values.isna().any():
        row = int(values.index[values.isna()][0])
        raise ReferenceError(f"{path}: row {row + 2}: value {frame.at[row, 'value']!r} is not a number")
    frame["value"] = values.astype(float)
    key = ["table", "framework", "backbone", "dataset", "protocol", "metric", "variant"]
    dup = frame.duplicated(key)
    if dup.any():
        raise ReferenceError(f"{path}: row {int(frame.index[dup][0]) + 2}: duplicate figure for {key}")
    return frame


def reference_index(frame: pd.DataFrame | None = None) -> dict[tuple[str, str, str, str, str, str], float]:
    """(framework, backbone, dataset, protocol, metric, variant) -> value, over all tables."""
    frame = load_reference() if frame is None else frame
    return {
        (r.framework, r.backbone, r.dataset, r.protocol, r.metric, r.variant): float(r.value)
        for r in frame.itertuples(index=False)
    }


def canonical_backbone(name: str) -> str:
    """The backbone name used by paper.csv: aliases resolved, timm pretrained tags dropped."""
    base = name.split(".", 1)[0]
    return BACKBONE_ALIASES.get(base, base)


def label(kind: str, name: str) -> str:
    table = {"framework": FRAMEWORK_LABELS, "dataset": DATASET_LABELS, "backbone": BACKBONE_LABELS}[kind]
    return table.get(name, name)


# ------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Schedule:
    """One dataset's training and test setting in the official configurations (settings.md)."""

    split: str
    crop: tuple[int, int]  # (height, width)
    batch_size: int
    epochs: int
    train_images: int
    lr: float
    weight_decay: float
    momentum: float | None = None  # None: not stated
    poly_power: float | None = None
    optimizer: str = "sgd"
    min_lr: float | None = None

    @property
    def iterations(self) -> int:
        return round(self.epochs * self.train_images / self.batch_size)


#: R-50-D8 / R-101-D8 runs of the four frameworks (settings.md, "Per dataset")
CNN_SCHEDULES: dict[str, Schedule] = {
    "ade20k": Schedule("val", (512, 512), 16, 130, 20210, 0.01, 5e-4, momentum=0.9, poly_power=0.9),
    "coco_stuff10k": Schedule("test", (512, 512), 16, 110, 9000, 0.001, 1e-4, poly_power=0.9),
    "cityscapes": Schedule("val", (512, 1024), 8, 220, 2975, 0.01, 5e-4),
    "lip": Schedule("val", (473, 473), 32, 150, 30462, 0.01, 5e-4),
}

#: UPerNet + Swin-L (settings.md, "SOTA rows"): AdamW, poly power 1.0 to 0, 1,500 warm-up iterations
_SWIN = dict(lr=6e-5, weight_decay=0.01, poly_power=1.0, optimizer="adamw", min_lr=0.0)
SWIN_SCHEDULES: dict[str, Schedule] = {
    "ade20k": Schedule("val", (640, 640), 16, 130, 20210, **_SWIN),
    "coco_stuff10k": Schedule("test", (640, 640), 16, 110, 9000, **_SWIN),
    "pascal_context59": Schedule("val", (640, 640), 16, 260, 4998, **_SWIN),
    "lip": Schedule("val", (473, 473), 16, 110, 30462, **_SWIN),
}
SWIN_MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
LIP_MS_SCALES = (0.75, 1.0, 1.25)


@dataclass(frozen=True)
class Check:
    """One key of the paper's setting: `accept(values)` says whether a record matches it."""

    key: str
    paper: str
    accept: Callable[[dict[str, Any]], bool]
    ours: Callable[[dict[str, Any]], str] | None = None

    def describe(self, values: dict[str, Any]) -> str:
        ours = self.ours(values) if self.ours else show(values.get(self.key))
        return f"{self.key} {ours} (paper {self.paper})"


def show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def _close(a: Any, b: float) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isclose(float(a), b, rel_tol=1e-6, abs_tol=1e-12)


def _equal(key: str, expected: Any) -> Check:
    if isinstance(expected, float):
        return Check(key, show(expected), lambda v: _close(v.get(key), expected))
    return Check(key, show(expected), lambda v: v.get(key) == expected)


def _scales(key: str, expected: tuple[float, ...]) -> Check:
    def accept(values: dict[str, Any]) -> bool:
        got = values.get(key) or [1.0]
        return len(got) == len(expected) and all(_close(a, b) for a, b in zip(sorted(got), expected))

    return Check(key, show(list(expected)), accept)


def _pair(key: str, expected: tuple[int, int]) -> Check:
    return Check(key, f"{expected[0]}x{expected[1]}", lambda v: v.get(key) is None or tuple(v[key]) == expected,
                 lambda v: "x".join(map(str, v[key])) if v.get(key) else "none")


def _schedule(s: Schedule) -> Check:
    """Same number of training samples seen (iterations x batch) within 2%."""

    def accept(values: dict[str, Any]) -> bool:
        iters, batch = values.get("train.iterations"), values.get("train.batch_size")
        if not iters or not batch:
            return False
        return abs(iters * batch - s.epochs * s.train_images) <= 0.02 * s.epochs * s.train_images

    def ours(values: dict[str, Any]) -> str:
        iters, batch = values.get("train.iterations") or 0, values.get("train.batch_size") or 0
        return f"{iters} it x batch {batch} = {iters * batch / s.train_images:.2f} epochs"

    return Check("train.iterations", f"{s.epochs} epochs = {s.iterations} it at batch {s.batch_size}", accept, ours)


def _train_checks(s: Schedule) -> list[Check]:
    checks = [
        _pair("crop_size", s.crop),
        _equal("train.batch_size", s.batch_size),
        _schedule(s),
        _equal("train.optimizer", s.optimizer),
        _equal("train.lr", s.lr),
        _equal("train.weight_decay", s.weight_decay),
    ]
    for key, value in (("train.momentum", s.momentum), ("train.poly_power", s.poly_power), ("train.min_lr", s.min_lr)):
        if value is not None:
            checks.append(_equal(key, value))
    return checks


def _pretrained(what: str) -> Check:
    return Check("model.pretrained", what, lambda v: bool(v.get("model.pretrained")))


def _eval_checks(split: str, mode: str, flip: bool, scales: tuple[float, ...],
                 crop: tuple[int, int] | None = None, stride: tuple[int, int] | None = None) -> list[Check]:
    checks = [_equal("eval.split", split), _equal("eval.mode", mode), _equal("eval.flip", flip),
              _scales("eval.scales", scales)]
    if crop is not None and stride is not None:
        checks += [_pair("eval.crop_size", crop), _pair("eval.stride", stride)]
    return checks


# The label protocol of the official code where a dataset has several (records' `label_protocol`):
# COCO-Stuff-10k is trained and scored on all 182 ids (harness/data/coco_stuff.py).
PAPER_LABEL_PROTOCOLS = {"coco_stuff10k": "paper (182 classes)"}


def _label_protocol_checks(dataset: str) -> list[Check]:
    expected = PAPER_LABEL_PROTOCOLS.get(dataset)
    return [] if expected is None else [_equal("label_protocol", expected)]


def frameworks_setting(framework: str, dataset: str, backbone: str, idr: bool) -> list[Check] | None:
    """The paper's setting of one cell of the frameworks table, or None for a dataset it lacks.

    Dataset-independent checks (backbone, output stride, widths) are returned for any dataset
    as `frameworks_model_setting`; this adds the schedule and the test protocol (single scale,
    whole image).
    """
    schedule = CNN_SCHEDULES.get(dataset)
    if schedule is None:
        return None
    checks = frameworks_model_setting(framework, dataset, backbone, idr)
    checks += _train_checks(schedule)
    checks += _eval_checks(schedule.split, "whole", False, (1.0,))
    return checks + _label_protocol_checks(dataset)


def frameworks_model_setting(framework: str, dataset: str, backbone: str, idr: bool) -> list[Check]:
    """Model keys of the frameworks table: R-50-D8 (R-101-D8 rows: the baselines), ImageNet-1k."""
    reference_backbone = R101 if canonical_backbone(backbone) == R101 else R50
    checks = [
        Check("model.backbone", reference_backbone, lambda v: canonical_backbone(str(v.get("model.backbone"))) == reference_backbone),
        _equal("model.output_stride", 8),
        _pretrained("ImageNet-1k weights"),
        _equal("model.aux_channels", 512),
    ]
    if idr:
        feats = 512
        if (framework == "fcn" and dataset == "ade20k") or (framework == "pspnet" and dataset == "cityscapes"):
            feats = 1024
        checks.append(_equal("model.feats_channels", feats))
        if framework in ("pspnet", "deeplabv3", "upernet"):
            checks.append(_equal("model.refine_channels", 256))
        if framework == "upernet":
            checks.append(_equal("model.head_channels", 512))
            if dataset in CNN_SCHEDULES:
                checks.append(_equal("model.upernet_context", "aspp" if dataset in ("ade20k", "cityscapes") else "ppm"))
    return checks


def sota_setting(dataset: str, idr: bool, protocol: str) -> list[Check] | None:
    """The paper's setting of UPerNet + Swin-L on `dataset` evaluated with `protocol`."""
    schedule = SWIN_SCHEDULES.get(dataset)
    if schedule is None:
        return None
    checks = [
        Check("model.backbone", SWIN_L, lambda v: canonical_backbone(str(v.get("model.backbone"))) == SWIN_L),
        _pretrained("ImageNet-22k 384 weights"),
        _equal("model.head_channels", 1024),
    ]
    if idr:
        checks += [_equal("model.feats_channels", 512), _equal("model.refine_channels", 256),
                   _equal("model.upernet_context", "ppm" if dataset == "lip" else "aspp")]
    checks += _train_checks(schedule) + [_equal("train.warmup_iterations", 1500)]
    lip = dataset == "lip"
    mode = "whole" if lip else "slide"
    window = (None, None) if lip else ((640, 640), (426, 426))
    checks.append(_equal("eval.probs_before_resize", True))  # settings.md: probabilities averaged before resizing
    if protocol == "ss":
        checks += _eval_checks(schedule.split, mode, False, (1.0,), *window)
    elif protocol == "flip":
        checks += _eval_checks(schedule.split, mode, True, (1.0,), *window)
    else:
        checks += _eval_checks(schedule.split, mode, True, LIP_MS_SCALES if lip else SWIN_MS_SCALES, *window)
    return checks + _label_protocol_checks(dataset)


# ------------------------------------------------------------------------------- model zoo


#: The sssegmentation model-zoo figures of the context schemes (`docs/modelzoo/<method>/README.md`),
#: kept apart from the paper's own figures (paper.csv): one row per figure, `source` naming the page.
ZOO_CSV = REPO / "results" / "reference" / "modelzoo.csv"
ZOO_COLUMNS = ["framework", "backbone", "dataset", "split", "protocol", "metric", "value", "crop", "schedule", "source"]


def load_zoo(path: str | Path | None = None) -> dict[tuple[str, str, str, str, str], tuple[float, str]]:
    """(framework, backbone, dataset, protocol, metric) -> (value, source page); ReferenceError naming
    the row and column of a malformed entry."""
    path = Path(path) if path is not None else ZOO_CSV
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns) != ZOO_COLUMNS:
        raise ReferenceError(f"{path}: columns {list(frame.columns)}; expected {ZOO_COLUMNS}")
    bad = frame.index[~frame["protocol"].isin(PROTOCOLS)]
    if len(bad):
        raise ReferenceError(f"{path}: row {bad[0] + 2}: protocol {frame.at[bad[0], 'protocol']!r}; "
                             f"allowed: {', '.join(PROTOCOLS)}")
    values = pd.to_numeric(frame["value"], errors="coerce")
    if values.isna().any():
        row = int(values.index[values.isna()][0])
        raise ReferenceError(f"{path}: row {row + 2}: value {frame.at[row, 'value']!r} is not a number")
    empty = frame.index[frame["source"].str.strip() == ""]
    if len(empty):
        raise ReferenceError(f"{path}: row {empty[0] + 2}: source is empty; expected the model-zoo page")
    index: dict[tuple[str, str, str, str, str], tuple[float, str]] = {}
    for row, r in zip(frame.index, frame.itertuples(index=False)):
        key = (r.framework, r.backbone, r.dataset, r.protocol, r.metric)
        if key in index:
            raise ReferenceError(f"{path}: row {row + 2}: duplicate figure for {key}")
        index[key] = (float(values[row]), r.source)
    return index
