"""Atomic writes that keep the user's umask (results are shared on team filesystems).

`tempfile.mkstemp` and `tempfile.mkdtemp` create 0600 files and 0700 folders whatever the
umask; renamed into place, results would be readable by their writer only. Here temporary
names are opened the ordinary way (mode 0666 / 0777 less the umask: 0644 / 0755 under 022),
written completely, then renamed over the final name, so a reader never sees half a file.
Also the sha256 of a file, which records of converted and released checkpoints carry.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_TAG = ".partial-"  # in every temporary name: a killed writer's leftovers can be found


def partial_name(path: Path) -> Path:
    """A fresh hidden temporary name beside `path`."""
    return path.with_name(f".{path.name}{PARTIAL_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_target(path: Path | str) -> Iterator[Path]:
    """A temporary path to write `path`'s content to (with any writer); renamed into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path | str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


@contextmanager
def temporary_directory(prefix: str, parent: Path | str | None = None) -> Iterator[Path]:
    """Like `tempfile.TemporaryDirectory`, but created with the umask's mode (copies keep it)."""
    import tempfile

    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    directory = base / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    directory.mkdir(mode=0o777)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def remove_partials(root: Path | str) -> list[Path]:
    """Delete the temporary files and folders that killed writers left under `root`; return them."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.rglob(f"*{PARTIAL_TAG}*") if p.name.startswith(".")]
    found += [p for p in root.rglob("*.partial") if p.is_dir()]  # checkpoint copies (harness.train)
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def sha256_of_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
