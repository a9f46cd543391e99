"""`python -m harness.prepare <dataset> --root PATH [--check-only] [--allow-partial]`

Turns an unpacked official release under ``PATH/<dataset>/`` into the layout the loaders read
(see ``datasets/README.md``), then checks every split against the official split sizes.

* Conversion where the release does not ship train-id PNGs: PASCAL-Context-59 (``trainval/*.mat``
  -> ``SegmentationClassContext/*.png``) and COCO-Stuff-164k (``stuffthingmaps`` PNGs, or the
  stuff/instances JSON, -> ``*_labelTrainIds.png``). The other datasets need nothing.
* Idempotent: an output that exists is skipped. Each output is written to a temporary file in
  the same folder and renamed into place, so an interrupted run leaves no half-written PNG and a
  second run picks up where the first stopped.
* ``--check-only`` converts nothing and reports what is missing or still to convert.
* Split check: image/label pairs per split against the official size, files the loaders would
  miss (an image without its label, a listed id without files) and extra files. A count that
  differs from the official one, or extra files, exit 1 unless ``--allow-partial``; missing files
  and unconverted labels always exit 1, since training would fail on them.

Exit status: 0 ok, 1 split check failed, 2 bad input (unknown dataset, missing root, unreadable
or invalid file), reported in one line.

The helpers at the top (split reports, atomic PNG writes, list reading, error wording) are shared
by the dataset modules in ``harness.data``; this module imports ``harness.data`` only inside
functions, so either may be imported first.
"""
from __future__ import annotations

import argparse
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

REAL_DATASETS = ("ade20k", "cityscapes", "coco_stuff10k", "coco_stuff164k", "lip", "pascal_context59")
SHOW = 5  # file names listed per problem before "... and N more"


# ----------------------------------------------------------------------------- shared helpers


def prepare_command(name: str, root: Path | str) -> str:
    return f"python -m harness.prepare {name} --root {root}"


def data_error(message: str) -> Exception:
    from harness.data.base import DataError  # lazy: harness.data imports this module

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


def _preparers() -> dict[str, Preparer]:
    from harness.data import ade20k, cityscapes, coco_stuff, lip, pascal_context

    found = [ade20k.PREPARER, cityscapes.PREPARER, *coco_stuff.PREPARERS, lip.PREPARER, pascal_context.PREPARER]
    return {p.name: p for p in found}


# ----------------------------------------------------------------------------- conversion and CLI


def run_jobs(jobs: list[Job], describe: str, console) -> tuple[int, int]:
    """Write the outputs that do not exist yet; (written, skipped)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from harness.cli import Parser, parse_or_exit

    parser = Parser(
        prog="python -m harness.prepare",
        description="Convert an unpacked official release into the training layout and check its split sizes.",
    )
    parser.add_argument("dataset", help=f"one of: {', '.join(REAL_DATASETS)}")
    parser.add_argument("--root", default="datasets", help="data root holding <dataset>/ (default: datasets)")
    parser.add_argument("--check-only", action="store_true", help="convert nothing; only report")
    parser.add_argument(
        "--allow-partial", action="store_true", help="accept split sizes that differ from the official release"
    )
    parser.add_argument("--verify", action="store_true",
                        help="then decode every image and label once and stamp the dataset as verified")
    return parse_or_exit(parser, argv)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from harness.data.base import DataError

    args = parse_args(argv)
    preparers = _preparers()
    if args.dataset not in preparers:
        print(f"error: unknown dataset {args.dataset!r}; allowed: {', '.join(sorted(preparers))}", file=sys.stderr)
        return 2
    prep = preparers[args.dataset]
    root = Path(args.root).expanduser()
    console = Console(stderr=True)
    try:
        if prep.jobs is None:
            prep.check_split(root, prep.splits[0])  # a missing folder is reported before anything else
            print(f"{prep.name}: nothing to convert (the loader reads the release's label files directly)")
        else:
            jobs = prep.jobs(root)
            if args.check_only:
                todo = sum(not job.output.is_file() for job in jobs)
                print(f"{prep.name}: {todo:,} of {len(jobs):,} label file(s) still to convert (--check-only)")
            else:
                written, skipped = run_jobs(jobs, prep.describe or f"{prep.name}: converting", console)
                print(f"{prep.name}: converted {written:,} label file(s), {skipped:,} already done")
        checks = [prep.check_split(root, split) for split in prep.splits]
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for check in checks:
        for line in check.lines():
            print(line)
    if all(check.ok(args.allow_partial) for check in checks):
        partial = not all(check.ok() for check in checks)
        print(f"{prep.name}: ready" + (" (partial: accepted with --allow-partial)" if partial else ""))
        if args.verify:
            from harness.data.verify import run_verify

            return run_verify(prep.name, root, console)
        return 0
    if any(check.pending for check in checks):
        hint = "run without --check-only to convert the labels"
    elif any(check.missing for check in checks):
        hint = "the loaders need the missing files listed above"
    else:
        hint = "pass --allow-partial to accept a partial or modified release"
    print(f"{prep.name}: split check failed ({hint})")
    return 1


if __name__ == "__main__":
    # Run the imported module's main, so the dataset modules and this entry point share one copy.
    from harness.prepare import main as _main

    sys.exit(_main())
