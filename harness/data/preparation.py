"""Shared pieces of dataset preparation: split checks, atomic label writes, list reading, error wording.

The dataset modules (``ade20k``, ``cityscapes``, ``coco_stuff``, ``lip``, ``pascal_context``) build
their :class:`Preparer` from these; the ``python -m harness.prepare`` command only parses its
arguments and runs a preparer.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from harness.data.base import DataError

REAL_DATASETS = ("ade20k", "cityscapes", "coco_stuff10k", "coco_stuff164k", "lip", "pascal_context59")
SHOW = 5  # file names listed per problem before "... and N more"


def prepare_command(name: str, root: Path | str) -> str:
    return f"python -m harness.prepare {name} --root {root}"


def data_error(message: str) -> DataError:
    return DataError(message)


def require(path: Path, name: str, root: Path | str, what: str, is_file: bool = False) -> Path:
    """`path` if it exists (as a file or folder); else a one-line DataError with the prepare command."""
    if (path.is_file() if is_file else path.is_dir()):
        return path
    raise data_error(
        f"{name}: {what} {path} not found; unpack the official release as datasets/README.md describes, "
        f"then run `{prepare_command(name, root)}`"
    )


def check_split_name(name: str, split: str, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if split not in allowed:
        raise data_error(f"{name}: unknown split {split!r}; allowed: {', '.join(allowed)}")


def read_id_list(path: Path, name: str, root: Path | str) -> list[str]:
    """First word of every non-empty line of a split list (ids, no extension)."""
    require(path, name, root, "split list", is_file=True)
    ids = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        words = line.split()
        if words:
            ids.append(words[0])
    return ids


def files_by_stem(directory: Path, suffix: str) -> dict[str, Path]:
    """{name without suffix: path} of the files in `directory` whose name ends with `suffix`."""
    if not directory.is_dir():
        return {}
    out = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(suffix) and not entry.name.startswith(".") and entry.is_file():
                out[entry.name[: -len(suffix)]] = Path(entry.path)
    return out


def apply_lut(raw: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """lut[raw]; raw values past the end of the table are kept as they are (so range checks see them)."""
    if raw.dtype == np.uint8 and len(lut) >= 256:
        return lut[raw]
    raw = raw.astype(np.int64)
    inside = (raw >= 0) & (raw < len(lut))
    return np.where(inside, lut[np.clip(raw, 0, len(lut) - 1)], raw)


def atomic_save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG under a temporary name in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOW])
    return shown + (f" ... and {len(items) - SHOW:,} more" if len(items) > SHOW else "")


@dataclass
class SplitCheck:
    """What one split of a dataset folder holds, next to the official release."""

    dataset: str
    split: str
    official: int  # image/label pairs in the official split
    pairs: int  # complete image/label pairs found (what the loader would read)
    missing: list[str] = field(default_factory=list)  # files the loader needs but cannot find
    extra: list[str] = field(default_factory=list)  # files present that belong to no pair / split list
    pending: list[str] = field(default_factory=list)  # labels only in raw form: prepare converts them

    @property
    def count_ok(self) -> bool:
        return self.pairs == self.official

    def ok(self, allow_partial: bool = False) -> bool:
        if self.missing or self.pending:
            return False
        return allow_partial or (self.count_ok and not self.extra)

    def lines(self) -> list[str]:
        head = f"{self.dataset} {self.split}: {self.pairs:,} image/label pairs, official {self.official:,}"
        if self.count_ok:
            head += " (matches)"
        else:
            diff = self.official - self.pairs
            head += f" ({diff:,} fewer)" if diff > 0 else f" ({-diff:,} more)"
        out = [head]
        if self.missing:
            out.append(f"  missing {len(self.missing):,} file(s): {_listing(self.missing)}")
        if self.pending:
            out.append(f"  {len(self.pending):,} label(s) not converted yet: {_listing(self.pending)}")
        if self.extra:
            out.append(f"  extra {len(self.extra):,} file(s): {_listing(self.extra)}")
        return out


@dataclass
class Job:
    """One label file to write: `make()` returns its train-id array (raises DataError on bad input)."""

    output: Path
    make: Callable[[], np.ndarray]


@dataclass
class Preparer:
    """How `prepare` handles one dataset (filled in by the dataset modules)."""

    name: str
    splits: tuple[str, ...]
    check_split: Callable[[Path, str], SplitCheck]
    jobs: Callable[[Path], list[Job]] | None = None  # None: nothing to convert
    describe: str = ""  # what the conversion does, for the progress bar


def run_jobs(jobs: list[Job], describe: str, console) -> tuple[int, int]:
    """Write the outputs that do not exist yet; (written, skipped)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    todo = [job for job in jobs if not job.output.is_file()]
    skipped = len(jobs) - len(todo)
    if not todo:
        return 0, skipped
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(describe, total=len(todo))
        for job in todo:
            atomic_save_png(job.make(), job.output)
            progress.advance(task)
    return len(todo), skipped
