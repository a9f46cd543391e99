"""Results as a pandas DataFrame: the one reader of result records (the tables use it too).

    from harness.results import load
    frame = load("results/quickstart")                  # one row per finished cell
    frame.groupby(["framework", "dataset", "idr"])["mIoU"].mean()

Columns: the cell's axes (``experiment``, ``cell_id``, ``framework``, ``dataset``, ``backbone``,
``idr``, ``seed``, one ``sweep.<key path>`` column per swept key), its test ``protocol`` (ss /
flip / ms / ms+flip) and ``label_protocol``, ``source`` (``trained`` here, ``released`` for a
scored released checkpoint, ``paper`` for the paper's figures with ``paper=True``), the metrics
(``mIoU``, ``mAcc``, ``aAcc``, in %), one ``iou.<class>`` column per class (%), and ``record``,
the record itself as a dict (the tables read it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.records import find_records, is_released, label_protocol_of

AXES = ["experiment", "cell_id", "framework", "dataset", "backbone", "idr", "seed"]
METRICS = ["mIoU", "mAcc", "aAcc"]
COLUMNS = [*AXES, "protocol", "label_protocol", "source", *METRICS, "record"]


def read_records(path: str | Path) -> list[dict]:
    """The records under `path`: one experiment's folder (holding ``cells/``), or a results root
    holding several experiments' folders."""
    path = Path(path)
    if (path / "cells").is_dir() or not path.is_dir():
        return find_records(path)
    return [record for folder in sorted(path.iterdir()) if folder.is_dir() for record in find_records(folder)]


def record_row(record: dict) -> dict[str, Any]:
    """One row of the frame: a record's axes, protocol, source, metrics and per-class IoU."""
    from harness.tables.settings import protocol_of

    config = record.get("config") or {}
    row: dict[str, Any] = {key: record.get(key) for key in AXES}
    row.update({f"sweep.{key}": value for key, value in (config.get("sweep") or {}).items()})
    row["protocol"] = protocol_of(config.get("eval"))
    row["label_protocol"] = label_protocol_of(record)
    row["source"] = "released" if is_released(record) else "trained"
    row.update({key: (record.get("metrics") or {}).get(key) for key in METRICS})
    row.update({f"iou.{name}": value for name, value in (record.get("per_class_iou") or {}).items()})
    row["record"] = record
    return row


def paper_rows() -> list[dict[str, Any]]:
    """The paper's figures (results/reference/paper.csv), one row per (cell, metric) figure."""
    from harness import reference as ref

    return [
        {
            "experiment": "paper", "framework": r.framework, "dataset": r.dataset, "backbone": r.backbone,
            "idr": r.variant == "idr", "protocol": r.protocol, "label_protocol": "official", "source": "paper",
            r.metric: float(r.value),
        }
        for r in ref.load_reference().itertuples(index=False)
    ]


def frame_of(records: list[dict]) -> pd.DataFrame:
    """The DataFrame of `records` (columns as the module says, also when there are none)."""
    rows = [record_row(record) for record in records]
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    fixed = [c for c in COLUMNS if c != "record"]
    rest = [c for c in frame.columns if c not in COLUMNS]
    return frame[fixed + sorted(c for c in rest if c.startswith("sweep.")) +
                 [c for c in rest if not c.startswith("sweep.")] + ["record"]]


def load(path: str | Path, paper: bool = False) -> pd.DataFrame:
    """Every record under `path` (``results/<experiment>`` or ``results``) as a DataFrame, one row per
    record; with `paper`, the paper's figures appended as rows of source ``paper``."""
    frame = frame_of(read_records(path))
    if paper:
        extra = pd.DataFrame(paper_rows())
        frame = pd.concat([frame, extra], ignore_index=True)[list(frame.columns) + [
            c for c in extra.columns if c not in frame.columns]]
    return frame


def records_of(frame: pd.DataFrame) -> list[dict]:
    """The records behind a frame's rows (rows of the paper's figures have none)."""
    return [record for record in frame["record"] if isinstance(record, dict)]
