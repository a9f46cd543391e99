"""Result records: one JSON file per finished cell, written atomically.

Layout: `results/<experiment>/cells/<cell_id>/record.json` (+ `train.log` beside it).
A record exists only for a cell that finished; tables read nothing else.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.config import Cell
from harness.data import dataset_card
from harness.fileio import write_text_atomic
from harness.storage import Location, list_files, parse_location, read_bytes, write_bytes

RECORD_NAME = "record.json"
FINAL_MODEL = "model.pt"
RELEASED = "released model"  # provenance.kind of a record that scores a released checkpoint (no training)
SCHEMA_VERSION = 1
_VERSIONED = ("torch", "torchvision", "timm", "ray", "numpy", "pydantic", "fvcore")


def cell_dir(results_dir: Path | Location, cell: Cell) -> Path | Location:
    return results_dir / "cells" / cell.cell_id


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: Path | None = None) -> str | None:
    """HEAD of the code base (with '-dirty' when tracked files changed), or None outside git."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=True))


def build_record(cell: Cell, payload: dict, wall_time_s: float) -> dict:
    card = dataset_card(cell.dataset, cell.data_options)
    metrics = payload["metrics"]
    return {
        "schema": SCHEMA_VERSION,
        "cell_id": cell.cell_id,
        "experiment": cell.experiment,
        "framework": cell.framework,
        "dataset": cell.dataset,
        "idr": cell.idr,
        "seed": cell.seed,
        "backbone": cell.model.backbone,
        "config": cell.model_dump(mode="json"),
        "metrics": {key: metrics[key] for key in ("mIoU", "mAcc", "aAcc")},
        "per_class_iou": metrics["per_class_iou"],
        "per_class_acc": metrics["per_class_acc"],
        "num_eval_images": metrics["num_images"],
        "label_protocol": card.label_protocol,
        "focus_classes": list(card.focus_classes),
        "params": payload["params"],
        "complexity": payload.get("complexity", {}),
        "wall_time_s": wall_time_s,
        "train_time_s": payload["train_time_s"],
        "eval_time_s": payload["eval_time_s"],
        "iterations_per_s": payload["iterations_per_s"],
        "resumed_from_iteration": payload.get("resumed_from_iteration", 0),
        "model_file": FINAL_MODEL,
        "world_size": payload["world_size"],
        "device": payload["device"],
        **study_measures(metrics, payload),
        **build_environment(),
    }


def study_measures(metrics: dict, payload: dict) -> dict:
    """Context flip rate, learning curve and relation recovery, where the cell measured them."""
    found = {
        "context_flip": metrics.get("context_flip"),
        "learning_curve": payload.get("learning_curve"),
        "relation_recovery": payload.get("relation_recovery"),
    }
    return {key: value for key, value in found.items() if value is not None}


def build_environment() -> dict:
    """Library versions, code version, host and time of a record written now."""
    return {
        "versions": library_versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def save_final_model(path: Path | Location, content: bytes) -> None:
    """The trained weights and IDR buffers beside the record (`harness.train.final_model_bytes`)."""
    write_bytes(parse_location(path), content)


def store_cell(results_dir: Path | Location, cell: Cell, payload: dict, wall_time_s: float) -> dict:
    """Write a finished cell: its final model first, then its record (which marks it complete)."""
    payload = dict(payload)
    model = payload.pop("final_model")
    save_final_model(cell_dir(results_dir, cell) / FINAL_MODEL, model)
    record = {**build_record(cell, payload, wall_time_s), "model_sha256": hashlib.sha256(model).hexdigest()}
    write_record(results_dir, cell, record)
    return record


def write_record(results_dir: Path | Location, cell: Cell, record: dict) -> Path | Location:
    path = cell_dir(results_dir, cell) / RECORD_NAME
    write_bytes(parse_location(path), json.dumps(record, indent=2, sort_keys=False, allow_nan=True).encode("utf-8"))
    return path


def read_record(path: Path | Location) -> dict:
    return json.loads(read_bytes(parse_location(path)))


def find_records(results_dir: Path | Location) -> list[dict]:
    """Every record of an experiment's results (a folder or an object-store location)."""
    if isinstance(results_dir, Location) and not results_dir.is_local:
        cells = results_dir / "cells"
        names = sorted(n for n in list_files(cells) if n.count("/") == 1 and n.endswith("/" + RECORD_NAME))
        return [read_record(cells / name) for name in names]
    folder = results_dir.local_path() if isinstance(results_dir, Location) else Path(results_dir)
    return [read_record(p) for p in sorted(folder.glob(f"cells/*/{RECORD_NAME}"))]


def is_released(record: dict) -> bool:
    """Whether a record scores a released checkpoint (`harness.evaluate --checkpoint`) rather than a model
    trained here."""
    return (record.get("provenance") or {}).get("kind") == RELEASED


def label_protocol_of(record: dict) -> str:
    """The label protocol a record was scored under (its dataset card's `label_protocol`).

    Records written before the key existed: coco_stuff10k was then scored on its 171 annotated
    classes; every other dataset had only its official mapping.
    """
    if record.get("label_protocol"):
        return str(record["label_protocol"])
    return "annotated (171 classes)" if record.get("dataset") == "coco_stuff10k" else "official"


def completed_record(results_dir: Path | Location, cell: Cell) -> dict | None:
    """The record of a finished cell with exactly this configuration and label protocol, if any."""
    path = cell_dir(results_dir, cell) / RECORD_NAME
    try:
        record = read_record(path)
    except (OSError, json.JSONDecodeError):
        return None
    if label_protocol_of(record) != dataset_card(cell.dataset, cell.data_options).label_protocol:
        return None
    return record if same_config(record.get("config"), cell) else None


def same_config(stored: Any, cell: Cell) -> bool:
    """Whether a record's stored configuration is `cell`'s; keys added to the schema since the
    record was written count as their defaults, so a new option does not invalidate old cells."""
    try:
        return Cell.model_validate(stored) == cell
    except (ValueError, TypeError):
        return False
