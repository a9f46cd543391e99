"""The complexity table: parameters, GFLOPs and latency of each model, next to the paper's figures."""
from __future__ import annotations

from harness import reference as ref
from harness.tables.frameworks import (
    backbone_order,
    fmt_paper,
    framework_order,
    paper_figure,
    row_label,
    sort_slots,
)
from harness.tables.grouping import CellGroup, assign_rows, group_cells, mark
from harness.tables.layout import MISSING, Block, Table
from harness.tables.stats import difference, fmt_delta, mean_or_none, metric_values


def _params_m(record: dict) -> float | None:
    params = record.get("params")
    if isinstance(params, dict):
        if "total_m" in params:
            return float(params["total_m"])
        params = params.get("total")
    return float(params) / 1e6 if isinstance(params, (int, float)) and not isinstance(params, bool) else None


def gflops_of(record: dict) -> float | None:
    value = (record.get("complexity") or {}).get("gflops")
    return float(value) if isinstance(value, (int, float)) else None


def _latency_ms(record: dict) -> float | None:
    for source in (record.get("latency"), (record.get("complexity") or {}).get("latency")):
        if isinstance(source, dict) and isinstance(source.get("median_ms"), (int, float)):
            return float(source["median_ms"])
        if isinstance(source, (int, float)) and not isinstance(source, bool):
            return float(source)
    return None


def _input_size(record: dict) -> str:
    size = (record.get("complexity") or {}).get("input_size")
    return "x".join(map(str, size)) if size else MISSING


def complexity_table(records: list[dict], index: dict) -> Table:
    def checks(cell: CellGroup, idr: bool) -> tuple[list[ref.Check], bool]:
        framework, dataset, backbone, _size = cell.row_id
        found = ref.frameworks_model_setting(framework, dataset, backbone, idr)
        full = ref.frameworks_setting(framework, dataset, backbone, idr)
        if full is None:
            return found, False
        return found + [c for c in full if c.key == "crop_size"], framework in ref.PAPER_FRAMEWORKS

    model_keys = lambda key: key.startswith(("model.", "data_options.")) or key == "crop_size"  # noqa: E731
    cells = group_cells(
        records,
        row_id=lambda r: (r["framework"], r["dataset"], ref.canonical_backbone(r["backbone"]), _input_size(r)),
        column=lambda r: "all",
        keep=model_keys,
        row_keep=model_keys,
        checks=checks,
    )
    paper_rows = [(fw, "ade20k", ref.R50, "512x512") for fw in ref.PAPER_FRAMEWORKS]
    slots = assign_rows(cells, paper_rows)
    slots = sort_slots(slots, lambda s: (framework_order(s.row_id[0]), s.row_id[1], backbone_order(s.row_id[2]),
                                          s.row_id[3]))
    footnotes = mark(slots, lambda s: f"{ref.label('framework', s.row_id[0])} {s.row_id[2]} on {s.row_id[1]}",
                      lambda _c: "")
    columns = ["framework", "backbone", "dataset", "input", "params baseline (M)", "params +IDR (M)", "Δ params (M)",
               "GFLOPs baseline", "GFLOPs +IDR", "Δ GFLOPs", "latency baseline (ms)", "latency +IDR (ms)",
               "paper params baseline / +IDR (M)", "paper GFLOPs baseline / +IDR"]
    block = Block(None)
    for slot in slots:
        framework, dataset, backbone, size = slot.row_id
        cell = slot.cells.get("all")
        runs = cell.runs if cell else {False: [], True: []}
        row = [row_label(slot), backbone, dataset, size]
        pb, pi = mean_or_none(metric_values(runs[False], _params_m)), mean_or_none(metric_values(runs[True], _params_m))
        gb, gi = mean_or_none(metric_values(runs[False], gflops_of)), mean_or_none(metric_values(runs[True], gflops_of))
        lb, li = mean_or_none(metric_values(runs[False], _latency_ms)), mean_or_none(metric_values(runs[True], _latency_ms))
        row += [fmt_paper(pb), fmt_paper(pi), fmt_delta(difference(pi, pb)),
                fmt_paper(gb), fmt_paper(gi), fmt_delta(difference(gi, gb)),
                _fmt_num(lb, 1), _fmt_num(li, 1)]
        for metric in ("params_m", "gflops"):
            values = [paper_figure(index, framework, backbone, dataset, v, "ss", metric) for v in ("baseline", "idr")]
            row.append(" / ".join(fmt_paper(v) for v in values))
        block.rows.append(row)
        block.notes.append(slot.footnote)
    legend = [
        "params: all parameters (auxiliary head included) in millions; GFLOPs: fvcore, one fused multiply-add = "
        "one flop, eval-mode forward at the input size (the training crop), operators without a formula not "
        "counted; latency: median batch-1 inference when a record has it. — : not measured, or not in the paper.",
    ]
    return Table("complexity", "Model complexity with and without IDR", columns, [block], footnotes=footnotes,
                 legend=legend, label_columns=4)


def _fmt_num(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"
