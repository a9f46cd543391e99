"""The state-of-the-art table: UPerNet + IDR with Swin-L per test protocol, next to the paper's figures."""
from __future__ import annotations

from harness import reference as ref
from harness.tables.frameworks import (
    dataset_title,
    fmt_paper,
    is_sota_record,
    paper_figure,
    sort_slots,
)
from harness.tables.grouping import (
    RELEASED_ROW,
    CellGroup,
    RowSlot,
    assign_rows,
    group_cells,
    mark,
)
from harness.tables.layout import MISSING, Block, Table
from harness.tables.settings import EVAL_PROTOCOL_KEYS, protocol_of
from harness.tables.stats import (
    difference,
    fmt_delta,
    fmt_stats,
    mean_or_none,
    metric_values,
)


def sota_table(records: list[dict], index: dict) -> Table:
    chosen = [r for r in records if is_sota_record(r)]

    def checks(cell: CellGroup, idr: bool) -> tuple[list[ref.Check], bool]:
        found = ref.sota_setting(cell.row_id[0], idr, cell.column)
        return (found, True) if found is not None else ([], False)

    cells = group_cells(
        chosen,
        row_id=lambda r: (r["dataset"], bool(r["idr"]), ref.canonical_backbone(r["backbone"])),
        column=lambda r: protocol_of((r.get("config") or {}).get("eval")),
        keep=lambda key: True,
        row_keep=lambda key: key not in EVAL_PROTOCOL_KEYS,
        checks=checks,
    )
    paper_rows = [(ds, True, ref.SWIN_L) for ds in ref.SWIN_SCHEDULES]
    slots = assign_rows(cells, paper_rows)
    datasets = list(ref.SWIN_SCHEDULES)
    slots = sort_slots(slots, lambda s: ((datasets.index(s.row_id[0]) if s.row_id[0] in datasets else len(datasets),
                                           s.row_id[0]), not s.row_id[1], s.row_id[2]))
    footnotes = mark(
        slots,
        lambda s: f"{dataset_title(s.row_id[0])} {'UPerNet + IDR' if s.row_id[1] else 'UPerNet'} {s.row_id[2]}",
        lambda protocol: protocol,
    )
    protocols = ["ss", "flip", "ms+flip"]
    if any(c.column == "ms" for c in cells):
        protocols.insert(2, "ms")
    columns = ["dataset", "model", "crop", "epochs"]
    for protocol in protocols:
        columns += [f"{protocol} ours", f"{protocol} paper", f"{protocol} ours − paper"]
    block = Block(None)
    for slot in slots:
        dataset, idr, backbone = slot.row_id
        model = f"UPerNet{' + IDR' if idr else ''}, {ref.label('backbone', backbone)}"
        model += " (released)" if slot.kind == RELEASED_ROW else ""
        crop, epochs = _crop_epochs(slot, ref.SWIN_SCHEDULES.get(dataset))
        row = [dataset_title(dataset) + (f" {slot.marker}" if slot.marker else ""), model, crop, epochs]
        for protocol in protocols:
            cell = slot.cells.get(protocol)
            values = metric_values(cell.runs[idr]) if cell else []
            paper = paper_figure(index, "upernet", backbone, dataset, "idr" if idr else "baseline", protocol)
            row += [fmt_stats(values), fmt_paper(paper), fmt_delta(difference(mean_or_none(values), paper))]
        block.rows.append(row)
        block.notes.append(slot.footnote)
    legend = [
        "mIoU (%) of UPerNet + IDR with Swin-L (ImageNet-22k 384) per test protocol: ss single scale, flip, "
        "ms+flip multi-scale with flip (from each record's config.eval; missing keys: ss). ours: mean ± std "
        "(n=seeds); paper: official model zoo; — : not run or not in the paper.",
    ]
    return Table("sota", "Comparison with the state of the art: UPerNet + IDR, Swin-L (mIoU %)", columns, [block],
                 footnotes=footnotes, legend=legend, label_columns=2)


def _crop_epochs(slot: RowSlot, schedule: ref.Schedule | None) -> tuple[str, str]:
    cell = next(iter(slot.cells.values()), None)
    if cell is None:
        if schedule is None:
            return MISSING, MISSING
        return f"{schedule.crop[0]}x{schedule.crop[1]}", str(schedule.epochs)
    crop = cell.values.get("crop_size")
    crop_text = "x".join(map(str, crop)) if crop else MISSING
    iters, batch = cell.values.get("train.iterations"), cell.values.get("train.batch_size")
    if schedule is None or not iters or not batch:
        return crop_text, MISSING
    return crop_text, f"{iters * batch / schedule.train_images:.4g}"
