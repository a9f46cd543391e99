"""JSON caches outside results/: answers that are slow to compute and change only with the
installed libraries or our model code (FLOP counts of a plan, which backbone names timm knows).

They live in `~/.cache/idrbench/` (or the folder in $IDRBENCH_CACHE_DIR). Each entry's key holds
everything its answer depends on, so a stale entry is never read; a cache that cannot be read
or written is only a slower next call.
"""
from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

CACHE_ENV = "IDRBENCH_CACHE_DIR"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "idrbench").expanduser()


def read_json(name: str) -> dict:
    """The cache file `name` as a dict; {} when it is missing or unreadable."""
    try:
        data = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(name: str, data: dict) -> None:
    """Replace the cache file `name` atomically; give up silently when the folder is not writable."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass


def library_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


BACKBONE_NAMES_FILE = "backbone_names.json"


def is_known_backbone(name: str) -> bool:
    """`models.backbones.is_known_backbone(name)`, remembered per timm version, so that validating
    a config imports neither timm nor torchvision once a name has been checked."""
    key = f"timm={library_version('timm')}|{name}"
    known = read_json(BACKBONE_NAMES_FILE)
    if key not in known:
        from models.backbones import is_known_backbone as ask_timm

        known[key] = ask_timm(name)
        write_json(BACKBONE_NAMES_FILE, known)
    return bool(known[key])
