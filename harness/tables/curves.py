"""Learning curves as a table: mIoU at each curve point (`train.eval_interval`), mean over seeds, one
row per framework and setting, baseline and +IDR; the figure is harness.plots' `curves_*`."""
from __future__ import annotations

from harness.tables.layout import MISSING
from harness.tables.main_table import group_runs, setting_labels
from harness.tables.stats import mean_or_none


def curve_points(record: dict) -> dict[int, float]:
    """{iteration: mIoU} of a record's learning curve ({} without one)."""
    points = (record.get("learning_curve") or {}).get("points") or []
    return {int(p["iteration"]): float(p["mIoU"]) for p in points if p.get("mIoU") is not None}


def curve_rows(records: list[dict]) -> list[dict[str, str]]:
    """Rows of mean curve mIoU per iteration; [] when no record has a curve. A setting's label (S1,
    S2, ...) is the one of the main table; baselines shared by several +IDR settings appear once."""
    groups = group_runs(records)
    labels, _ = setting_labels(groups)
    iterations = sorted({i for rec in records for i in curve_points(rec)})
    if not iterations:
        return []
    rows, shown = [], set()
    for key, runs in groups.items():
        framework, dataset, backbone, _setting = key
        for idr in (False, True):
            curves = [curve_points(rec) for rec in runs[idr] if curve_points(rec)]
            ids = tuple(sorted(rec["cell_id"] for rec in runs[idr]))
            if not curves or (not idr and ids in shown):
                continue
            shown.add(ids)
            row = {"framework": framework, "dataset": dataset, "backbone": backbone,
                   "model": "+IDR" if idr else "baseline", "setting": labels.get(key, "") if idr else "",
                   "seeds": str(len(curves))}
            for iteration in iterations:
                mean = mean_or_none([c[iteration] for c in curves if iteration in c])
                row[str(iteration)] = MISSING if mean is None else f"{mean:.1f}"
            rows.append(row)
    return rows
