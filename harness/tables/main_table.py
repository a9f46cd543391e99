"""The quickstart table (baseline vs +IDR per framework x dataset x backbone) and the focus-class table."""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict

from harness import reference as ref
from harness.tables.layout import Block, Table, markdown_table
from harness.tables.settings import IDR_ONLY_KEYS, diff_keys, record_values, setting_key
from harness.tables.stats import fmt_gain, fmt_stats, metric_values, paired


def group_runs(records: list[dict]) -> dict[tuple[str, str, str, str], dict[bool, list[dict]]]:
    """(framework, dataset, backbone, setting) -> {idr: records}; settings never mixed.

    A +IDR group's setting is its records' own; the baselines that differ from it only in keys
    no baseline reads (`IDR_ONLY_KEYS`) are its baselines, so a control or a wiring sweep is
    compared with the same baselines as the default. A baseline no +IDR group takes has its own.
    """
    groups: dict[tuple[str, str, str, str], dict[bool, list[dict]]] = defaultdict(lambda: {False: [], True: []})
    baselines: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)

    def shared_key(rec: dict) -> tuple[str, str, str, str]:
        return _row(rec) + (setting_key(record_values(rec), lambda k: k not in IDR_ONLY_KEYS),)

    for rec in records:
        if rec["idr"]:
            groups[_row(rec) + (setting_key(record_values(rec)),)][True].append(rec)
        else:
            baselines[shared_key(rec)].append(rec)
    taken = set()
    for key, runs in list(groups.items()):
        shared = shared_key(runs[True][0])
        runs[False] = _one_per_seed(baselines.get(shared, []))
        taken.add(shared)
    for shared, recs in baselines.items():
        if shared not in taken:
            groups[_row(recs[0]) + (setting_key(record_values(recs[0])),)][False].extend(recs)
    return dict(sorted(groups.items()))


def _one_per_seed(records: list[dict]) -> list[dict]:
    """Baselines equal but for keys they do not read are the same model: each seed once."""
    return list({rec.get("seed"): rec for rec in reversed(records)}.values())[::-1]


def _row(rec: dict) -> tuple[str, str, str]:
    return rec["framework"], rec["dataset"], rec["backbone"]


def setting_labels(groups: dict[tuple, dict[bool, list[dict]]]) -> tuple[dict[tuple, str], list[str]]:
    """Labels S1, S2, ... where one (framework, dataset, backbone) has several settings."""
    by_cell: dict[tuple, list[tuple]] = defaultdict(list)
    for key in groups:
        by_cell[key[:3]].append(key)
    labels: dict[tuple, str] = {}
    notes: list[str] = []
    for cell, keys in by_cell.items():
        if len(keys) < 2:
            continue
        values = {key: json.loads(key[3]) for key in keys}
        varying = sorted({k for a in keys for b in keys for k in diff_keys(values[a], values[b])})
        for i, key in enumerate(keys, 1):
            labels[key] = f"S{i}"
            listed = ", ".join(f"{k}={ref.show(values[key].get(k))}" for k in varying)
            notes.append(f"S{i} of {' '.join(cell)}: {listed}")
    return labels, notes


def flip_rate(record: dict) -> float | None:
    """The record's context flip rate (%), where it was measured (context scenes)."""
    value = (record.get("context_flip") or {}).get("flip_rate")
    return None if value is None else float(value)


def relation_mrr(record: dict) -> float | None:
    """Mean reciprocal rank of the true context classes in the learned relations (IDR, context scenes)."""
    value = (record.get("relation_recovery") or {}).get("mean_reciprocal_rank")
    return None if value is None else float(value)


def main_rows(records: list[dict]) -> list[dict[str, str]]:
    groups = group_runs(records)
    labels, _ = setting_labels(groups)
    with_flip = any(flip_rate(rec) is not None for rec in records)
    rows = []
    for key, runs in groups.items():
        framework, dataset, backbone, _setting = key
        base, idr = metric_values(runs[False]), metric_values(runs[True])
        row = {
            "framework": framework,
            "dataset": dataset,
            "backbone": backbone,
            "baseline mIoU": fmt_stats(base),
            "+IDR mIoU": fmt_stats(idr),
            "delta": fmt_gain(base, idr, paired(runs[False], runs[True])),
        }
        if with_flip:
            row["baseline flip %"] = fmt_stats(metric_values(runs[False], flip_rate))
            row["+IDR flip %"] = fmt_stats(metric_values(runs[True], flip_rate))
            row["+IDR relation MRR"] = fmt_stats(metric_values(runs[True], relation_mrr))
        if labels:
            row["setting"] = labels.get(key, "")
        rows.append(row)
    return rows


def focus_rows(records: list[dict]) -> list[dict[str, str]]:
    """Per-class IoU of each dataset's focus classes (e.g. the context-ambiguous ones)."""
    groups = group_runs(records)
    labels, _ = setting_labels(groups)
    rows = []
    for key, runs in groups.items():
        framework, dataset, backbone, _setting = key
        any_run = (runs[False] or runs[True])[0]
        for name in any_run.get("focus_classes", []):
            def iou(rec: dict, name: str = name) -> float | None:
                value = (rec.get("per_class_iou") or {}).get(name)
                return None if value is None or not math.isfinite(float(value)) else float(value)

            base, idr = metric_values(runs[False], iou), metric_values(runs[True], iou)
            row = {
                "framework": framework,
                "dataset": dataset,
                "class": name,
                "baseline IoU": fmt_stats(base),
                "+IDR IoU": fmt_stats(idr),
                "delta": fmt_gain(base, idr, paired(runs[False], runs[True], iou)),
            }
            if labels:
                row["setting"] = labels.get(key, "")
            rows.append(row)
    return rows


def dict_table(name: str, title: str, rows: list[dict[str, str]], label_columns: int, notes: list[str]) -> Table:
    columns = list(rows[0]) if rows else ["framework", "dataset", "backbone"]
    return Table(name, title, columns, [Block(None, [[r[c] for c in columns] for r in rows])], footnotes=notes,
                 label_columns=label_columns)


def markdown_rows(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no finished cells)\n"
    return markdown_table(list(rows[0]), [list(r.values()) for r in rows])


def csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()
