"""Grouping records into cells by setting, and giving each cell its row next to the paper's rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from harness import reference as ref
from harness.records import is_released
from harness.tables.settings import diff_keys, record_values, setting_key


@dataclass
class CellGroup:
    """The records of one table cell: one setting, baseline and/or +IDR, any number of seeds."""

    row_id: tuple
    column: str
    setting: str
    row_setting: str
    values: dict[str, Any]
    runs: dict[bool, list[dict]] = field(default_factory=lambda: {False: [], True: []})
    diffs: list[str] = field(default_factory=list)
    matches_paper: bool = False

    def count(self) -> int:
        return len(self.runs[False]) + len(self.runs[True])


@dataclass
class RowSlot:
    row_id: tuple
    kind: str  # "paper" or the row's setting
    cells: dict[str, CellGroup] = field(default_factory=dict)
    marker: str = ""
    footnote: str = ""


def group_cells(
    records: list[dict],
    row_id: Callable[[dict], tuple],
    column: Callable[[dict], str],
    keep: Callable[[str], bool],
    row_keep: Callable[[str], bool],
    checks: Callable[[CellGroup, bool], tuple[list[ref.Check], bool]],
) -> list[CellGroup]:
    """Records -> cells keyed by (row, column, setting); `checks(cell, idr)` gives the paper's
    setting of the cell and whether the paper's table has the cell at all."""
    cells: dict[tuple, CellGroup] = {}
    for rec in records:
        values = record_values(rec)
        rid, col = row_id(rec), column(rec)
        setting = setting_key(values, keep)
        key = (rid, col, setting)
        if key not in cells:
            cells[key] = CellGroup(rid, col, setting, setting_key(values, row_keep), values)
        cells[key].runs[bool(rec.get("idr"))].append(rec)
    for cell in cells.values():
        per_variant: dict[str, list[str]] = {}
        no_paper = False
        for idr in (False, True):
            if not cell.runs[idr]:
                continue
            found, in_paper = checks(cell, idr)
            no_paper = no_paper or not in_paper
            per_variant["+IDR" if idr else "baseline"] = [c.describe(cell.values) for c in found if not c.accept(cell.values)]
        variants = list(per_variant)
        diffs: list[str] = []
        for variant in variants:
            for text in per_variant[variant]:
                shared = all(text in per_variant[v] for v in variants)
                entry = text if shared else f"{text} [{variant} only]"
                if entry not in diffs:
                    diffs.append(entry)
        if no_paper:
            diffs.insert(0, "not in the paper's table (no paper setting)")
        cell.diffs = diffs
        cell.matches_paper = not diffs
    order = sorted(cells.values(), key=lambda c: (str(c.row_id), c.column, -c.count(), c.setting))
    return order


def assign_rows(cells: list[CellGroup], paper_rows: list[tuple]) -> list[RowSlot]:
    """Cells -> rows: paper-setting cells share the row's paper slot; any other setting gets its own."""
    slots = [RowSlot(rid, "paper") for rid in paper_rows]
    for cell in cells:
        kind = "paper" if cell.matches_paper else cell.row_setting
        if _all_released(cell):
            kind = RELEASED_ROW
        slot = next((s for s in slots if s.row_id == cell.row_id and s.kind == kind and cell.column not in s.cells), None)
        if slot is None:
            slot = RowSlot(cell.row_id, kind)
            slots.append(slot)
        slot.cells[cell.column] = cell
    return slots


RELEASED_ROW = "released"  # the kind of a row of released checkpoints (harness.released), labelled so


def _all_released(cell: CellGroup) -> bool:
    records = cell.runs[False] + cell.runs[True]
    return bool(records) and all(is_released(r) for r in records)


def mark(slots: list[RowSlot], describe_row: Callable[[RowSlot], str], describe_column: Callable[[str], str],
          start: int = 1) -> list[str]:
    """Give every slot with a non-paper cell a marker †k and a footnote listing the differences."""
    footnotes = []
    k = start
    for slot in slots:
        flagged = [c for c in slot.cells.values() if not c.matches_paper]
        if not flagged:
            continue
        slot.marker = f"†{k}"
        parts = []
        for cell in flagged:
            text = "; ".join(cell.diffs)
            siblings = [
                other.cells[cell.column]
                for other in slots
                if other is not slot and other.row_id == slot.row_id and cell.column in other.cells
            ]
            distinct = sorted({key for other in siblings for key in diff_keys(cell.values, other.values)})
            if distinct:
                text += "; setting of this row: " + ", ".join(f"{key}={ref.show(cell.values.get(key))}" for key in distinct)
            where = describe_column(cell.column)
            parts.append(f"{where}: {text}" if where else text)
        slot.footnote = f"{slot.marker} {describe_row(slot)}, setting differs from the paper's: " + " | ".join(parts)
        footnotes.append(slot.footnote)
        k += 1
    return footnotes
