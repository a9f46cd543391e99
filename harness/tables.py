"""`python -m harness.tables results/<experiment>`: baseline vs +IDR tables from the records.

Writes `table.md` and `table.csv` into the results folder and prints the Markdown.
One row per (framework, dataset, backbone); with several seeds a cell shows mean ± std (n).
A combination that has no record shows "—".
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from harness.records import find_records

MISSING = "—"


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(values: list[float]) -> str:
    if not values:
        return MISSING
    mean, std = _mean_std(values)
    if std is None:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f} (n={len(values)})"


def _fmt_delta(base: list[float], idr: list[float]) -> str:
    if not base or not idr:
        return MISSING
    delta = statistics.fmean(idr) - statistics.fmean(base)
    return f"{delta:+.2f}"


def group_runs(records: list[dict]) -> dict[tuple[str, str, str], dict[bool, list[dict]]]:
    groups: dict[tuple[str, str, str], dict[bool, list[dict]]] = defaultdict(lambda: {False: [], True: []})
    for rec in records:
        groups[(rec["framework"], rec["dataset"], rec["backbone"])][bool(rec["idr"])].append(rec)
    return dict(sorted(groups.items()))


def main_rows(records: list[dict]) -> list[dict[str, str]]:
    rows = []
    for (framework, dataset, backbone), runs in group_runs(records).items():
        base = [r["metrics"]["mIoU"] for r in runs[False]]
        idr = [r["metrics"]["mIoU"] for r in runs[True]]
        rows.append(
            {
                "framework": framework,
                "dataset": dataset,
                "backbone": backbone,
                "baseline mIoU": _fmt(base),
                "+IDR mIoU": _fmt(idr),
                "delta": _fmt_delta(base, idr),
            }
        )
    return rows


def focus_rows(records: list[dict]) -> list[dict[str, str]]:
    """Per-class IoU of each dataset's focus classes (e.g. the context-ambiguous ones)."""
    rows = []
    for (framework, dataset, backbone), runs in group_runs(records).items():
        any_run = (runs[False] or runs[True])[0]
        for name in any_run.get("focus_classes", []):
            base = [r["per_class_iou"][name] for r in runs[False] if not math.isnan(r["per_class_iou"][name])]
            idr = [r["per_class_iou"][name] for r in runs[True] if not math.isnan(r["per_class_iou"][name])]
            rows.append(
                {
                    "framework": framework,
                    "dataset": dataset,
                    "class": name,
                    "baseline IoU": _fmt(base),
                    "+IDR IoU": _fmt(idr),
                    "delta": _fmt_delta(base, idr),
                }
            )
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no finished cells)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def render(results_dir: Path) -> tuple[str, str]:
    """(markdown, csv) of the main table, plus the focus-class table in the Markdown."""
    records = find_records(results_dir)
    rows = main_rows(records)
    markdown = f"## {results_dir.name}: mIoU (%), baseline vs +IDR\n\n" + markdown_table(rows)
    focus = focus_rows(records)
    if focus:
        markdown += "\n### Per-class IoU (%) of the focus classes\n\n" + markdown_table(focus)
    return markdown, csv_text(rows)


def write_tables(results_dir: Path) -> str:
    markdown, csv_content = render(results_dir)
    (results_dir / "table.md").write_text(markdown)
    (results_dir / "table.csv").write_text(csv_content)
    return markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.tables", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="results/<experiment>")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        print(f"error: {args.results_dir}: no such results folder", file=sys.stderr)
        return 2
    print(write_tables(args.results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
