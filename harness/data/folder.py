"""Folder datasets: image and label files matched by name, the one way a dataset's files are listed.

The built-in benchmarks list their splits with :func:`split_files` (a folder of images, a folder
of labels, file-name suffixes, optionally a list of ids) and check them with
:meth:`SplitFiles.check`; a user's own dataset is described in an experiment under
``data.custom.<name>`` (:class:`harness.config.FolderDatasetConfig`) and served by
:func:`folder_spec` with no code: its description travels in the cell's dataset options under
``"folder"``, so every process (Ray workers, tables, plots) rebuilds the same card and listing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np

from harness.data.base import DataError, Sample
from harness.data.cards import DatasetCard, bit_palette
from harness.data.preparation import (
    SHOW,
    Preparer,
    SplitCheck,
    apply_lut,
    check_split_name,
    files_by_stem,
    prepare_command,
    require,
)
from harness.data.registry import DatasetSpec, register

FOLDER_OPTION = "folder"  # the dataset option holding a custom dataset's description


Key = Hashable  # a sample id: a file stem, or (sub-folder, stem)


@dataclass(frozen=True)
class SplitFiles:
    """The image and label files of one split, keyed by sample id, and where each file is expected."""

    images: dict[Key, Path]
    labels: dict[Key, Path]
    image_dir: Path
    label_dir: Path
    image_suffix: str
    label_suffix: str
    ids: tuple[Key, ...] | None = None  # a split list's ids, in order; None: every image
    listed_in: str = ""  # the split list's file name

    @property
    def keys(self) -> list[Key]:
        return list(self.ids) if self.ids is not None else sorted(self.images)

    @property
    def pairs(self) -> list[Key]:
        return [k for k in self.keys if k in self.images and k in self.labels]

    @property
    def without_label(self) -> list[Key]:
        return [k for k in self.keys if k in self.images and k not in self.labels]

    @property
    def without_image(self) -> list[Key]:
        """Ids listed, or labels found, that have no image."""
        wanted = self.keys if self.ids is not None else sorted(self.labels)
        return [k for k in wanted if k not in self.images]

    def expected(self, key: Key, label: bool) -> Path:
        folder, suffix = (self.label_dir, self.label_suffix) if label else (self.image_dir, self.image_suffix)
        parts = key if isinstance(key, tuple) else (key,)
        return folder.joinpath(*parts[:-1], f"{parts[-1]}{suffix}")

    def missing_files(self) -> list[Path]:
        """Files the loader needs but cannot find, in sample order (a listed id's image, then its label)."""
        out = []
        for key in self.keys:
            if key not in self.images:
                out.append(self.expected(key, label=False))
            if key not in self.labels:
                out.append(self.expected(key, label=True))
        return out

    def samples(self) -> list[Sample]:
        return [Sample(self.images[k], self.labels[k]) for k in self.pairs]

    def check(self, name: str, split: str, official: int, base: Path) -> SplitCheck:
        """What `python -m harness.prepare` reports for this split (paths relative to `base`)."""
        missing = [_relative(path, base) for path in self.missing_files()]
        if self.ids is None:
            extra = [f"{_relative(self.labels[k], base)} (no image)" for k in self.without_image]
        else:
            listed = set(self.ids)
            extra = sorted(
                f"{_relative(path, base)} (not in the id list)"
                for found in (self.images, self.labels)
                for key, path in found.items()
                if key not in listed
            )
        return SplitCheck(name, split, official, pairs=len(self.pairs), missing=missing, extra=extra)

    def mismatch_lines(self, name: str, split: str) -> list[str]:
        """One line per kind of mismatch: images without a label, labels (or listed ids) without an image."""
        lines = []
        if self.without_label:
            lines.append(
                f"{name} {split}: {len(self.without_label):,} of {len(self.images):,} image(s) in {self.image_dir} "
                f"have no label among the {len(self.labels):,} in {self.label_dir} (first: {_first(self.without_label)})"
            )
        if self.without_image:
            what = "id(s) of the split list" if self.ids is not None else f"label(s) in {self.label_dir}"
            lines.append(
                f"{name} {split}: {len(self.without_image):,} of {len(self.labels):,} {what} have no image among "
                f"the {len(self.images):,} in {self.image_dir} (first: {_first(self.without_image)})"
            )
        return lines


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def _first(keys: list[Key]) -> str:
    shown = ", ".join("/".join(k) if isinstance(k, tuple) else str(k) for k in keys[:SHOW])
    return shown + (", ..." if len(keys) > SHOW else "")


def split_files(
    image_dir: Path, label_dir: Path, image_suffix: str, label_suffix: str, id_list: Path | None = None
) -> SplitFiles:
    """The files of a split whose images and labels sit in one folder each, matched by name (and
    chosen by the ids of `id_list`, the first word of each line, if given)."""
    images, labels = files_by_stem(image_dir, image_suffix), files_by_stem(label_dir, label_suffix)
    ids = tuple(_read_ids(id_list)) if id_list is not None else None
    listed_in = id_list.name if id_list is not None else ""
    return SplitFiles(images, labels, image_dir, label_dir, image_suffix, label_suffix, ids, listed_in)


def nested_split_files(image_root: Path, label_root: Path, image_suffix: str, label_suffix: str) -> SplitFiles:
    """The files of a split kept in one sub-folder per group (e.g. Cityscapes' cities), keyed (folder, stem)."""
    groups: set[str] = set()
    for folder in (image_root, label_root):
        if folder.is_dir():
            groups.update(entry.name for entry in folder.iterdir() if entry.is_dir())
    images, labels = {}, {}
    for group in sorted(groups):
        images.update({(group, stem): p for stem, p in files_by_stem(image_root / group, image_suffix).items()})
        labels.update({(group, stem): p for stem, p in files_by_stem(label_root / group, label_suffix).items()})
    return SplitFiles(images, labels, image_root, label_root, image_suffix, label_suffix)


def complete_samples(files: SplitFiles, name: str, root: Path) -> list[Sample]:
    """The split's samples; a one-line DataError (with the prepare command) if any lacks its image or label."""
    absent = [k for k in files.keys if k not in files.images or k not in files.labels]
    if absent:
        what = f"id(s) of {files.listed_in}" if files.ids is not None else f"image(s) in {files.image_dir}"
        raise DataError(
            f"{name}: {len(absent):,} {what} lack an image or a label (first: {files.missing_files()[0]}); "
            f"run `{prepare_command(name, root)} --check-only`"
        )
    return files.samples()


@dataclass(frozen=True)
class Layout:
    """Where a benchmark keeps its files: its folder, each split's image and label folders, and how
    a split's files are matched. Gives the benchmark's `list_samples` and `check_split`."""

    name: str
    official: dict[str, int]  # image/label pairs of each official split
    dataset_dir: Callable[[Path], Path]
    folders: Callable[[Path, str], tuple[Path, Path]]  # (root, split) -> (image folder, label folder)
    files: Callable[[Path, str], SplitFiles]

    def list_samples(self, root: Path, split: str, options: dict[str, Any]) -> list[Sample]:
        check_split_name(self.name, split, self.official)
        require(self.dataset_dir(root), self.name, root, "dataset folder")
        image_dir, label_dir = self.folders(root, split)
        require(image_dir, self.name, root, "image folder")
        require(label_dir, self.name, root, "annotation folder")
        return complete_samples(self.files(root, split), self.name, root)

    def check_split(self, root: Path, split: str) -> SplitCheck:
        base = require(self.dataset_dir(root), self.name, root, "dataset folder")
        return self.files(root, split).check(self.name, split, self.official[split], base)


def register_builtin(
    layout: Layout,
    class_names: tuple[str, ...],
    palette: tuple[tuple[int, int, int], ...],
    release: str,
    decode_label: Callable[[np.ndarray], np.ndarray] | None = None,
    **card: Any,
) -> DatasetSpec:
    """Register a built-in benchmark read through its layout: its card (class names, palette, official
    split sizes and the `card` settings), its split check for `harness.prepare`, and the hint naming
    the official `release` files to unpack."""
    fixed = DatasetCard(name=layout.name, class_names=class_names, palette=palette, splits=dict(layout.official), **card)
    hint = (f"Unpack {release} into <data root>/{layout.name}/ (see datasets/README.md) and check it with "
            f"`python -m harness.prepare {layout.name} --root <data root>`.")
    preparer = Preparer(layout.name, tuple(layout.official), layout.check_split)
    return register(DatasetSpec(layout.name, lambda options: fixed, layout.list_samples, decode_label, {}, hint,
                                preparer=preparer))


# ---- a user's dataset described in an experiment (data.custom.<name>) ----


def _dataset_dir(root: Path, description: dict[str, Any]) -> Path:
    return Path(root) / description["path"]  # an absolute path stays as it is


def _split_paths(root: Path, description: dict[str, Any], split: str) -> tuple[Path, Path, Path | None]:
    base = _dataset_dir(root, description)
    entry = description["splits"][split]
    id_list = base / entry["list"] if entry.get("list") else None
    return base / entry["images"], base / entry["labels"], id_list


def _read_ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.split()]


def folder_problems(name: str, root: Path, description: dict[str, Any]) -> list[str]:
    """Every listing problem of every split, one line each: a missing folder or list, images and labels
    that do not match, an empty split."""
    problems = []
    for split in description["splits"]:
        image_dir, label_dir, id_list = _split_paths(root, description, split)
        absent = [f"{what} {path}" for what, path in (("image folder", image_dir), ("label folder", label_dir))
                  if not path.is_dir()]
        if id_list is not None and not id_list.is_file():
            absent.append(f"split list {id_list}")
        if absent:
            problems.append(f"{name} {split}: {' and '.join(absent)} not found")
            continue
        files = _files(root, description, split)
        problems += files.mismatch_lines(name, split)
        if not files.pairs:
            problems.append(f"{name} {split}: the split is empty (no image/label pair in {image_dir} and {label_dir})")
    return problems


def _files(root: Path, description: dict[str, Any], split: str) -> SplitFiles:
    image_dir, label_dir, id_list = _split_paths(root, description, split)
    return split_files(image_dir, label_dir, description["image_suffix"], description["label_suffix"], id_list)


def _lut(num_classes: int) -> np.ndarray:
    """reduce_zero_label: 0 -> ignore 255, k -> k - 1; values past the classes stay as they are, so the
    loader's range check names them (as ADE20K's decoder does)."""
    lut = np.arange(256, dtype=np.uint8)
    lut[0] = 255
    lut[1 : num_classes + 1] = np.arange(num_classes, dtype=np.uint8)
    return lut


@lru_cache(maxsize=64)
def _spec_from_json(name: str, description_json: str) -> DatasetSpec:
    description = json.loads(description_json)
    classes = tuple(description["classes"])
    palette = tuple(tuple(c) for c in description["palette"]) if description.get("palette") else bit_palette(len(classes))
    splits = tuple(description["splits"])

    def make_card(options: dict[str, Any]) -> DatasetCard:
        card_keys = ("base_scale", "crop_size", "ratio_range", "keep_ratio", "test_scale", "ignore_index")
        extra = {k: tuple(description[k]) if isinstance(description[k], list) else description[k]
                 for k in card_keys if description.get(k) is not None}
        return DatasetCard(
            name=name, class_names=classes, palette=palette, splits={s: 0 for s in splits},
            focus_classes=tuple(description.get("focus_classes") or ()),
            test_protocol=description.get("test_protocol") or "whole image, single scale", **extra,
        )

    def require_clean(root: Path) -> None:
        problems = folder_problems(name, root, description)
        if problems:
            raise DataError("\n".join(problems))

    def list_samples(root: Path, split: str, options: dict[str, Any]) -> list[Sample]:
        check_split_name(name, split, splits)
        require_clean(root)
        return _files(root, description, split).samples()

    def check_split(root: Path, split: str) -> SplitCheck:
        require_clean(root)
        files = _files(root, description, split)
        return files.check(name, split, len(files.pairs), _dataset_dir(root, description))

    lut = _lut(len(classes)) if description.get("reduce_zero_label") else None
    decode = (lambda raw: apply_lut(raw, lut)) if lut is not None else None
    hint = f"Check the folders of data.custom.{name} in the experiment file."
    return DatasetSpec(name, make_card, list_samples, decode, {FOLDER_OPTION: None}, hint,
                       preparer=Preparer(name, splits, check_split))


def folder_spec(name: str, description: dict[str, Any]) -> DatasetSpec:
    """The spec of a custom dataset from its (validated, resolved) description."""
    return _spec_from_json(name, json.dumps(description, sort_keys=True))
