"""Building every table from the records and writing them to the results folder."""
from __future__ import annotations

import sys
from pathlib import Path

from harness import reference as ref
from harness.fileio import write_text_atomic
from harness.results import load, records_of
from harness.tables.complexity import complexity_table
from harness.tables.curves import curve_rows
from harness.tables.context_schemes import context_schemes_table, load_measurements, wants_table
from harness.tables.frameworks import frameworks_tables
from harness.tables.layout import MISSING, Table
from harness.tables.main_table import (
    csv_text,
    dict_table,
    focus_rows,
    group_runs,
    main_rows,
    markdown_rows,
    setting_labels,
)
from harness.tables.sota import sota_table

TABLES_DIR = "tables"


def load_index() -> dict:
    try:
        return ref.reference_index()
    except FileNotFoundError:
        print(f"warning: {ref.REFERENCE_CSV} is missing; paper columns show {MISSING}", file=sys.stderr)
        return {}


def build_tables(records: list[dict], index: dict | None = None, measured: list[dict] | None = None) -> list[Table]:
    """Every table, in the order they are printed; `context_schemes` only when the records (or the
    harness.measure results `measured`) hold a context scheme."""
    index = load_index() if index is None else index
    groups = group_runs(records)
    _, setting_notes = setting_labels(groups)
    quick = dict_table("quickstart", "mIoU (%), baseline vs +IDR", main_rows(records), 3, setting_notes)
    focus = dict_table("focus_classes", "Per-class IoU (%) of the focus classes", focus_rows(records), 3, setting_notes)
    detail, overview = frameworks_tables(records, index)
    tables = [quick, focus, overview, detail, sota_table(records, index), complexity_table(records, index)]
    if wants_table(records, measured or []):
        tables.append(context_schemes_table(records, index, measured))
    curves = curve_rows(records)
    if curves:
        title = "Learning curves: mIoU (%) on the curve images at each iteration, mean over seeds"
        tables.append(dict_table("learning_curves", title, curves, 6, setting_notes))
    return tables


def render(results_dir: Path) -> tuple[str, str]:
    """(markdown, csv) of `table.md` / `table.csv`: the quickstart table and the focus classes."""
    records = records_of(load(results_dir))
    rows = main_rows(records)
    _, notes = setting_labels(group_runs(records))
    markdown = f"## {results_dir.name}: mIoU (%), baseline vs +IDR\n\n" + markdown_rows(rows)
    if notes:
        markdown += "\n" + "\n".join(f"{n}  " for n in notes) + "\n"
    focus = focus_rows(records)
    if focus:
        markdown += "\n### Per-class IoU (%) of the focus classes\n\n" + markdown_rows(focus)
    return markdown, csv_text(rows)


def write_tables(results_dir: Path, index: dict | None = None) -> str:
    """Write table.md / table.csv and tables/<name>.{md,tex,csv}; return all the Markdown."""
    results_dir = Path(results_dir)
    markdown, csv_content = render(results_dir)
    write_text_atomic(results_dir / "table.md", markdown)
    write_text_atomic(results_dir / "table.csv", csv_content)
    out_dir = results_dir / TABLES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = build_tables(records_of(load(results_dir)), index, load_measurements(results_dir))
    parts = [markdown]
    for table in tables:
        write_text_atomic(out_dir / f"{table.name}.md", table.markdown())
        write_text_atomic(out_dir / f"{table.name}.tex", table.latex())
        write_text_atomic(out_dir / f"{table.name}.csv", table.csv())
        if table.name not in ("quickstart", "focus_classes"):
            parts.append(table.markdown())
    return "\n".join(parts)


def write_tables_brief(results_dir: Path, index: dict | None = None) -> str:
    """Write every table (as :func:`write_tables`); return the experiment's main table
    (`table.md`: baseline vs +IDR and the focus classes) and where all tables were written."""
    results_dir = Path(results_dir)
    write_tables(results_dir, index)
    out_dir = results_dir / TABLES_DIR
    names = ", ".join(sorted(path.stem for path in out_dir.glob("*.md")))
    return (
        (results_dir / "table.md").read_text().rstrip()
        + f"\n\nmain table: {results_dir / 'table.md'} (and table.csv)"
        + f"\npaper-layout tables ({names}): {out_dir}/<name>.md, .tex, .csv"
    )
