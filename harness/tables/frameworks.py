"""The four-frameworks table (the paper's comparison with and without IDR), per dataset and as an overview."""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

from harness import reference as ref
from harness.tables.grouping import (
    RELEASED_ROW,
    CellGroup,
    RowSlot,
    assign_rows,
    group_cells,
    mark,
)
from harness.tables.layout import MISSING, Block, Table
from harness.tables.settings import is_dataset_key
from harness.tables.stats import (
    difference,
    fmt_delta,
    fmt_paired,
    fmt_stats,
    mean_or_none,
    metric_values,
    paired,
)


def backbone_order(name: str) -> tuple:
    return ({ref.R50: 0, ref.R101: 1}.get(name, 2), name)


def framework_order(name: str) -> tuple:
    order = list(ref.PAPER_FRAMEWORKS) + ["mask2former"]
    return (order.index(name) if name in order else len(order), name)


def dataset_title(dataset: str) -> str:
    schedule = ref.CNN_SCHEDULES.get(dataset) or ref.SWIN_SCHEDULES.get(dataset)
    split = f" {schedule.split}" if schedule else ""
    return f"{ref.label('dataset', dataset)}{split}"


def sort_slots(slots: list[RowSlot], key: Callable[[RowSlot], tuple]) -> list[RowSlot]:
    indexed = list(enumerate(slots))
    indexed.sort(key=lambda item: (key(item[1]), item[1].kind != "paper", item[0]))
    return [slot for _, slot in indexed]


def _frameworks_cells(records: list[dict]) -> tuple[list[RowSlot], list[str], list[str]]:
    """Rows (framework, backbone, setting) and dataset columns of the frameworks table."""
    chosen = [r for r in records if not is_sota_record(r)]

    def checks(cell: CellGroup, idr: bool) -> tuple[list[ref.Check], bool]:
        framework, backbone = cell.row_id
        found = ref.frameworks_setting(framework, cell.column, backbone, idr)
        if found is None:  # a dataset the paper's table lacks: only the model keys can be compared
            return ref.frameworks_model_setting(framework, cell.column, backbone, idr), False
        return found, framework in ref.PAPER_FRAMEWORKS

    cells = group_cells(
        chosen,
        row_id=lambda r: (r["framework"], ref.canonical_backbone(r["backbone"])),
        column=lambda r: r["dataset"],
        keep=lambda key: True,
        row_keep=lambda key: not is_dataset_key(key),
        checks=checks,
    )
    paper_rows = [(fw, ref.R50) for fw in ref.PAPER_FRAMEWORKS]  # other frameworks: rows of their records
    slots = assign_rows(cells, paper_rows)
    slots = sort_slots(slots, lambda s: (framework_order(s.row_id[0]), backbone_order(s.row_id[1])))
    footnotes = mark(
        slots,
        lambda s: f"{ref.label('framework', s.row_id[0])} {s.row_id[1]}",
        dataset_title,
    )
    extra = sorted({c.column for c in cells} - set(ref.CNN_SCHEDULES))
    return slots, list(ref.CNN_SCHEDULES) + extra, footnotes


def is_sota_record(record: dict) -> bool:
    return record.get("framework") == "upernet" and ref.canonical_backbone(str(record.get("backbone"))).startswith("swin")


def paper_figure(index: dict, framework: str, backbone: str, dataset: str, variant: str, protocol: str = "ss",
           metric: str = "mIoU") -> float | None:
    return index.get((framework, backbone, dataset, protocol, metric, variant))


def row_label(slot: RowSlot) -> str:
    name = ref.label("framework", slot.row_id[0]) + (" (released)" if slot.kind == RELEASED_ROW else "")
    return f"{name} {slot.marker}" if slot.marker else name


def _detail_row(slot: RowSlot, dataset: str, runs: dict[bool, list[dict]], index: dict) -> list[str]:
    """One row of the per-dataset table: ours (mean ± std, gain, paired Δ), the paper's, and the gaps."""
    base, idr = metric_values(runs[False]), metric_values(runs[True])
    framework, backbone = slot.row_id
    p_base = paper_figure(index, framework, backbone, dataset, "baseline")
    p_idr = paper_figure(index, framework, backbone, dataset, "idr")
    return [
        row_label(slot),
        backbone,
        fmt_stats(base),
        fmt_stats(idr),
        fmt_delta(difference(mean_or_none(idr), mean_or_none(base))),
        fmt_paired(paired(runs[False], runs[True])),
        fmt_paper(p_base),
        fmt_paper(p_idr),
        fmt_delta(difference(p_idr, p_base)),
        fmt_delta(difference(mean_or_none(base), p_base)),
        fmt_delta(difference(mean_or_none(idr), p_idr)),
    ]


def frameworks_tables(records: list[dict], index: dict) -> tuple[Table, Table]:
    """The per-dataset table (`frameworks`) and the paper-layout overview (`frameworks_overview`)."""
    slots, datasets, footnotes = _frameworks_cells(records)
    columns = ["framework", "backbone", "baseline", "+IDR", "gain", "paired Δ (p)", "paper baseline", "paper +IDR",
               "paper gain", "ours − paper (baseline)", "ours − paper (+IDR)"]
    blocks = []
    overview_rows = []
    overview_cells: dict[int, list[str]] = defaultdict(list)
    for dataset in datasets:
        block = Block(dataset_title(dataset))
        for s, slot in enumerate(slots):
            cell = slot.cells.get(dataset)
            if cell is None and not (slot.kind == "paper" and dataset in ref.CNN_SCHEDULES):
                overview_cells[s] += [MISSING, _paper_pair(index, slot, dataset)]
                continue
            runs = cell.runs if cell else {False: [], True: []}
            base, idr = metric_values(runs[False]), metric_values(runs[True])
            block.rows.append(_detail_row(slot, dataset, runs, index))
            block.notes.append(slot.footnote)
            overview_cells[s] += [_arrow(mean_or_none(base), mean_or_none(idr), max(len(base), len(idr))),
                                  _paper_pair(index, slot, dataset)]
        blocks.append(block)
    for s, slot in enumerate(slots):
        overview_rows.append([row_label(slot), slot.row_id[1], *overview_cells[s]])
    legend = [
        "mIoU (%), single scale. baseline / +IDR: mean ± std (n=seeds) of our records; gain: difference of "
        "the means; paired Δ: +IDR − baseline paired by seed, mean ± std, paired t-test p (— below two pairs).",
        "paper: official model zoo figures (results/reference/paper.csv); — where the paper gives none or "
        "nothing was run. Rows marked † were run with a setting other than the paper's (see the footnote).",
        ("Label protocol: the official one of each dataset; COCO-Stuff-10k the official 182 classes unless a "
         "footnote gives label_protocol; (released): a released checkpoint evaluated here (harness.released), "
         "not trained."),
    ]
    detail = Table("frameworks", "Frameworks with and without IDR, per dataset (mIoU %)", columns, blocks,
                   footnotes=footnotes, legend=legend, label_columns=2, block_column="dataset")
    over_columns = ["framework", "backbone"]
    for dataset in datasets:
        name = ref.label("dataset", dataset)
        over_columns += [f"{name} ours", f"{name} paper"]
    overview = Table(
        "frameworks_overview",
        "Frameworks × datasets, baseline → +IDR (gain), mIoU %",
        over_columns,
        [Block(None, overview_rows, [s.footnote for s in slots])],
        footnotes=footnotes,
        legend=["Each cell: baseline → +IDR (gain); ours are means over seeds (n shown when > 1). "
                "— : not run, or no figure in the paper."],
        label_columns=2,
    )
    return detail, overview


def fmt_paper(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def _arrow(base: float | None, idr: float | None, n: int = 1) -> str:
    if base is None and idr is None:
        return MISSING
    text = f"{fmt_paper(base)} → {fmt_paper(idr)} ({fmt_delta(difference(idr, base))})"
    return text + (f", n={n}" if n > 1 else "")


def _paper_pair(index: dict, slot: RowSlot, dataset: str) -> str:
    framework, backbone = slot.row_id
    return _arrow(paper_figure(index, framework, backbone, dataset, "baseline"), paper_figure(index, framework, backbone, dataset, "idr"))
