"""Verification of a dataset folder: every image and label of every split decoded once.

Each sample goes through `SegmentationDataset.load` (the loaders' own decoding and checks:
image/label size agreement, label values within the classes or the ignore index), in a pool
of threads (PIL and zlib release the GIL while decoding), with a progress bar. A clean pass
writes a stamp, `<root>/.idrbench-verified/<dataset>.json`, holding a fingerprint of every
file's path, size and modification time; `harness.run` refuses a dataset whose stamp is
missing or whose files changed since (`check_stamp`), unless told `--no-verify`.

The stamp keeps one entry per set of listing options (the synthetic benchmark has one folder
per seed and size); card options such as `crop_size` do not change the files and are left out.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.base import DataError, Sample
from harness.data.building import CARD_OPTIONS, build_dataset, dataset_card, resolve_options, spec_for
from harness.fileio import write_text_atomic

STAMP_DIR = ".idrbench-verified"
SHOW = 5  # bad files listed before "... and N more"


@dataclass
class Verification:
    """The outcome of decoding every sample of a dataset."""

    dataset: str
    counts: dict[str, int] = field(default_factory=dict)  # samples per split
    problems: list[str] = field(default_factory=list)  # one line per bad sample

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        total = sum(self.counts.values())
        splits = ", ".join(f"{split} {count:,}" for split, count in self.counts.items())
        if self.ok:
            return [f"{self.dataset}: verified {total:,} image/label pairs ({splits})"]
        out = [f"{self.dataset}: {len(self.problems):,} of {total:,} samples failed verification ({splits}):"]
        out += [f"  {line}" for line in self.problems[:SHOW]]
        if len(self.problems) > SHOW:
            out.append(f"  ... and {len(self.problems) - SHOW:,} more")
        return out


def stamp_path(root: Path | str, name: str) -> Path:
    return Path(root) / STAMP_DIR / f"{name}.json"


def options_key(name: str, options: dict[str, Any]) -> str:
    """The listing options that choose the files (defaults filled in, card options left out)."""
    listing = {k: v for k, v in resolve_options(name, options).items() if k not in CARD_OPTIONS}
    return json.dumps(listing, sort_keys=True)


def list_splits(name: str, root: Path | str, options: dict[str, Any]) -> dict[str, list[Sample]]:
    """Every split's (image, label) pairs, in the card's split order."""
    spec = spec_for(name, options)
    listing = {k: v for k, v in resolve_options(name, options).items() if k not in CARD_OPTIONS}
    return {split: spec.list_samples(Path(root), split, listing) for split in dataset_card(name, options).splits}


def fingerprint(splits: dict[str, list[Sample]], root: Path | str) -> str:
    """SHA-256 over every file's path (relative to `root`), size and modification time."""
    digest = hashlib.sha256()
    root = Path(root).resolve()
    for split, samples in splits.items():
        for sample in samples:
            for path in (sample.image, sample.label):
                info = os.stat(path)
                rel = os.path.relpath(Path(path).resolve(), root)
                digest.update(f"{split}\t{rel}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _check_sample(dataset, index: int) -> str | None:
    try:
        dataset.load(index)
    except DataError as err:
        return str(err)
    return None


def _decode_all(name: str, root: Path | str, options: dict[str, Any], splits: dict[str, list[Sample]],
                workers: int, console) -> list[str]:
    """Load every sample of every split in a thread pool; the problems, in file order."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    problems: list[str] = []
    with Progress(*columns, console=console, transient=False, disable=console is None) as progress, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        for split, samples in splits.items():
            task = progress.add_task(f"{name} {split}: verifying", total=len(samples))
            dataset = build_dataset(name, root, split, options, train=False)
            for problem in pool.map(lambda i, ds=dataset: _check_sample(ds, i), range(len(samples)), chunksize=8):
                progress.advance(task)
                if problem is not None:
                    problems.append(f"{split}: {problem}")
    return problems


def verify_dataset(name: str, root: Path | str, options: dict[str, Any] | None = None,
                   workers: int | None = None, console=None) -> Verification:
    """Decode and check every sample; write the stamp only when all pass."""
    options = options or {}
    splits = list_splits(name, root, options)
    before = fingerprint(splits, root)
    result = Verification(name, {split: len(samples) for split, samples in splits.items()})
    result.problems = _decode_all(name, root, options, splits, workers or min(8, os.cpu_count() or 1), console)
    if result.ok and fingerprint(splits, root) == before:  # nothing changed while we read
        write_stamp(name, root, options, before, result.counts)
    return result


def _read_stamp(path: Path) -> dict:
    try:
        stamp = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return stamp if isinstance(stamp, dict) and isinstance(stamp.get("entries"), dict) else {}


def write_stamp(name: str, root: Path | str, options: dict[str, Any], digest: str, counts: dict[str, int]) -> Path:
    path = stamp_path(root, name)
    stamp = _read_stamp(path) or {"dataset": name, "entries": {}}
    stamp["entries"][options_key(name, options)] = {
        "fingerprint": digest,
        "samples": counts,
        "verified_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomic(path, json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    return path


def check_stamp(name: str, root: Path | str, options: dict[str, Any] | None = None) -> str | None:
    """None when the dataset's stamp matches its files; else what is wrong, in a few words."""
    options = options or {}
    path = stamp_path(root, name)
    try:
        current = fingerprint(list_splits(name, root, options), root)  # lists first: synthetic data generates here
    except OSError as err:
        return f"a listed file cannot be read ({err.filename}: {err.strerror})"
    entry = _read_stamp(path).get("entries", {}).get(options_key(name, options))
    if entry is None:
        return f"not verified (no entry in {path})"
    if current != entry.get("fingerprint"):
        return f"files changed since verification on {entry.get('verified_at', '?')} (stamp {path} is stale)"
    return None


def run_verify(name: str, root: Path | str, console=None, options: dict[str, Any] | None = None) -> int:
    """`python -m harness.prepare <dataset> --verify`: print the outcome; 0 verified, 1 bad files."""
    result = verify_dataset(name, root, options, console=console)
    for line in result.lines():
        print(line)
    if result.ok:
        print(f"{name}: stamp written to {stamp_path(root, name)}")
    return 0 if result.ok else 1
