"""`python -m harness.tables results/<experiment>`: the paper's tables, regenerated from the records.

Writes into the results folder

* `table.md`, `table.csv`: baseline vs +IDR per framework x dataset x backbone (the quickstart
  table) and, in `table.md`, the per-class IoU of each dataset's focus classes;
* `tables/<name>.{md,tex,csv}` for `quickstart`, `focus_classes`, `frameworks` (the four
  frameworks with and without IDR, one block of rows per dataset), `frameworks_overview` (the
  same in the paper's layout: frameworks x datasets), `sota` (UPerNet + Swin-L, per test
  protocol) and `complexity` (params, GFLOPs, latency);

and prints the Markdown. LaTeX uses booktabs rules.

Rules
    * A cell that has no record shows "—"; so does every paper figure that is not in
      `results/reference/paper.csv` (see :mod:`harness.reference`).
    * Records are grouped by (framework, dataset, backbone, IDR on/off, *setting*), the setting
      being the resolved configuration without the seed and without keys that do not change
      the result (experiment name, data root, Ray scaling, logging, loader processes, threads,
      checkpoint interval, retries, eval batch size). Records of different settings are never
      averaged together. Missing keys of older records take the schema's defaults.
    * Several seeds: mean ± std (n=seeds). +IDR vs baseline is paired by seed: mean difference
      ± its std and a paired t-test p-value (scipy.stats.ttest_rel), "—" with fewer than two pairs.
    * Each cell's setting is compared with the paper's setting for that cell (backbone, output
      stride, pretrained weights, widths, crop, batch size, schedule, optimiser, test protocol;
      `harness.reference`). A cell that differs is shown in its own row marked "†k"; footnote
      †k lists the differing keys, ours and the paper's value. Such a row is never merged with
      the paper-setting row.
    * The test protocol comes from the record's `config.eval`: `scales` (several: ms), `flip`;
      missing keys mean single scale, no flip (ss).
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

from harness import reference as ref
from harness.cli import Parser, parse_or_exit
from harness.fileio import write_text_atomic
from harness.records import find_records

MISSING = "—"
TABLES_DIR = "tables"

# keys of the resolved configuration that do not change a result (not part of the setting)
IGNORED_KEYS = (
    "experiment",
    "framework",
    "dataset",
    "idr",
    "seed",
    "data_root",
    "sweep",
    "train.log_interval",
    "train.loader_workers",
    "train.torch_threads",
    "train.checkpoint_interval",
    "train.max_failures",
    "eval.batch_size",
)
IGNORED_PREFIXES = ("scaling.",)
# keys that only depend on the dataset (a row of the frameworks table spans datasets)
DATASET_KEYS_PREFIXES = ("data_options.", "crop_size")
DATASET_KEYS = ("eval.split",)
EVAL_PROTOCOL_KEYS = ("eval.mode", "eval.flip", "eval.scales", "eval.crop_size", "eval.stride", "eval.probs_before_resize")


# ----------------------------------------------------------------------------- settings


@lru_cache(maxsize=1)
def _section_defaults() -> dict[str, dict[str, Any]]:
    from harness.config import EvalConfig, ModelConfig, TrainConfig

    out = {}
    for name, cls in (("model", ModelConfig), ("train", TrainConfig), ("eval", EvalConfig)):
        out[name] = {
            key: info.get_default(call_default_factory=True)
            for key, info in cls.model_fields.items()
            if not info.is_required()
        }
    return out


def _dataset_defaults(dataset: str) -> dict[str, Any]:
    try:
        from harness.data import get_spec

        return dict(get_spec(dataset).default_options)
    except (KeyError, ImportError):
        return {}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = tuple(value)
    else:
        out[prefix] = value


def _crop_size(record: dict) -> tuple[int, int] | None:
    size = (record.get("complexity") or {}).get("input_size")
    if size:
        return tuple(int(s) for s in size)
    try:
        from harness.data import dataset_card

        card = dataset_card(record["dataset"], (record.get("config") or {}).get("data_options") or {})
        return tuple(card.crop_size)
    except Exception:  # an unregistered dataset: crop unknown, not checked
        return None


def record_values(record: dict) -> dict[str, Any]:
    """The record's resolved configuration, flattened to dotted keys, schema defaults filled in.

    `crop_size` (the training crop, from the record's complexity input size or the dataset
    card) is added; keys that do not change a result are left out.
    """
    config = record.get("config") or {}
    defaults = _section_defaults()
    merged: dict[str, Any] = {}
    for key, value in config.items():
        if key in defaults and isinstance(value, dict):
            merged[key] = {**defaults[key], **value}
        else:
            merged[key] = value
    for key, section in defaults.items():
        merged.setdefault(key, dict(section))
    merged["model"]["backbone"] = config.get("model", {}).get("backbone", record.get("backbone"))
    merged["data_options"] = {**_dataset_defaults(record["dataset"]), **(config.get("data_options") or {})}
    flat: dict[str, Any] = {}
    _flatten(merged, "", flat)
    flat = {k: v for k, v in flat.items() if k not in IGNORED_KEYS and not k.startswith(IGNORED_PREFIXES)}
    flat["crop_size"] = _crop_size(record)
    return flat


def setting_key(values: dict[str, Any], keep: Callable[[str], bool] = lambda key: True) -> str:
    """A canonical string of the kept keys: equal strings, equal settings."""
    return json.dumps({k: values[k] for k in sorted(values) if keep(k)}, sort_keys=True, default=str)


def protocol_of(eval_cfg: dict | None) -> str:
    """ss / flip / ms / ms+flip from a record's `config.eval` (missing keys: single scale, no flip)."""
    eval_cfg = eval_cfg or {}
    scales = eval_cfg.get("scales") or [1.0]
    multi = len({float(s) for s in scales}) > 1
    flip = bool(eval_cfg.get("flip", False))
    if multi:
        return "ms+flip" if flip else "ms"
    return "flip" if flip else "ss"


def _is_dataset_key(key: str) -> bool:
    return key in DATASET_KEYS or key.startswith(DATASET_KEYS_PREFIXES)


def _diff_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# -------------------------------------------------------------------------------- stats


def _miou(record: dict) -> float | None:
    value = (record.get("metrics") or {}).get("mIoU")
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _values(records: Iterable[dict], metric: Callable[[dict], float | None] = _miou) -> list[float]:
    return [v for v in (metric(r) for r in records) if v is not None]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def fmt_stats(values: list[float]) -> str:
    """'—', '43.61' or '43.61 ± 0.12 (n=3)'."""
    if not values:
        return MISSING
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def fmt_delta(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.2f}"


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


@dataclass
class Paired:
    """+IDR minus baseline over the seeds both have."""

    n: int
    mean: float | None = None
    std: float | None = None
    p: float | None = None


def paired(base: list[dict], idr: list[dict], metric: Callable[[dict], float | None] = _miou) -> Paired:
    def by_seed(records: list[dict]) -> dict[Any, float]:
        seeds: dict[Any, list[float]] = defaultdict(list)
        for rec in records:
            value = metric(rec)
            if value is not None:
                seeds[rec.get("seed")].append(value)
        return {seed: statistics.fmean(vals) for seed, vals in seeds.items()}

    b, i = by_seed(base), by_seed(idr)
    seeds = sorted(set(b) & set(i), key=str)
    if len(seeds) < 2:
        return Paired(len(seeds))
    xb, xi = [b[s] for s in seeds], [i[s] for s in seeds]
    diffs = [a - c for a, c in zip(xi, xb)]
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical differences: zero variance
        p = float(ttest_rel(xi, xb).pvalue)
    return Paired(len(seeds), statistics.fmean(diffs), statistics.stdev(diffs), p)


def fmt_p(p: float | None) -> str:
    if p is None:
        return MISSING
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_paired(pair: Paired) -> str:
    """'+1.23 ± 0.40 (n=3, p=0.012)', or '—' with fewer than two pairs."""
    if pair.n < 2 or pair.mean is None:
        return MISSING
    return f"{pair.mean:+.2f} ± {pair.std:.2f} (n={pair.n}, p={fmt_p(pair.p)})"


def fmt_gain(base: list[float], idr: list[float], pair: Paired | None = None) -> str:
    """Difference of the means; with two or more seed pairs, the paired comparison after it."""
    gain = _sub(_mean(idr), _mean(base))
    if gain is None:
        return MISSING
    if pair is not None and pair.n >= 2:
        return f"{gain:+.2f} (paired ± {pair.std:.2f}, n={pair.n}, p={fmt_p(pair.p)})"
    return f"{gain:+.2f}"


# ------------------------------------------------------------------------- table objects


@dataclass
class Block:
    title: str | None
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # per row: CSV "note" column (footnote text)


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    blocks: list[Block]
    footnotes: list[str] = field(default_factory=list)
    legend: list[str] = field(default_factory=list)
    label_columns: int = 1  # left-aligned leading columns
    block_column: str | None = None  # CSV column carrying each block's title

    # --- Markdown
    def markdown(self, heading: str = "##") -> str:
        out = [f"{heading} {self.title}", ""]
        for block in self.blocks:
            if block.title:
                out += [f"{heading}# {block.title}", ""]
            out.append(markdown_table(self.columns, block.rows) if block.rows else "(no rows)\n")
        out += self._notes_lines()
        out = [line for i, line in enumerate(out) if not (line == "" and i and out[i - 1].endswith("\n"))]
        return "\n".join(out).rstrip() + "\n"

    def _notes_lines(self) -> list[str]:
        lines = []
        if self.footnotes:
            lines += [""] + [f"{note}  " for note in self.footnotes]
        if self.legend:
            lines += [""] + [f"{note}  " for note in self.legend]
        return lines

    # --- CSV
    def csv(self) -> str:
        columns = ([self.block_column] if self.block_column else []) + self.columns
        with_notes = any(n for block in self.blocks for n in block.notes)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns + (["note"] if with_notes else []))
        for block in self.blocks:
            notes = block.notes or [""] * len(block.rows)
            for row, note in zip(block.rows, notes):
                writer.writerow(([block.title or ""] if self.block_column else []) + row + ([note] if with_notes else []))
        return out.getvalue()

    # --- LaTeX (booktabs)
    def latex(self) -> str:
        n = len(self.columns)
        spec = "l" * self.label_columns + "r" * (n - self.label_columns)
        lines = [
            "% generated by python -m harness.tables; needs \\usepackage{booktabs}",
            "\\begin{table}[t]",
            "\\centering",
            "\\scriptsize",
            f"\\caption{{{latex_escape(self.title)}}}",
            f"\\label{{tab:idrbench-{self.name.replace('_', '-')}}}",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            " & ".join(latex_escape(c) for c in self.columns) + " \\\\",
            "\\midrule",
        ]
        for b, block in enumerate(self.blocks):
            if b:
                lines.append("\\midrule")
            if block.title:
                lines.append(f"\\multicolumn{{{n}}}{{l}}{{\\textit{{{latex_escape(block.title)}}}}} \\\\")
                lines.append(f"\\cmidrule(lr){{1-{n}}}")
            lines += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in block.rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        notes = self.footnotes + self.legend
        if notes:
            lines.append("\\par\\smallskip")
            lines += [f"\\parbox{{\\linewidth}}{{\\raggedright {latex_escape(note)}}}\\par" for note in notes]
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"

    # --- HTML (for the report; every text escaped)
    def html(self) -> str:
        n = len(self.columns)
        out = [f'<table class="results" id="table-{html.escape(self.name)}">', "<thead><tr>"]
        out += [f"<th>{html.escape(c)}</th>" for c in self.columns]
        out.append("</tr></thead><tbody>")
        for block in self.blocks:
            if block.title:
                out.append(f'<tr class="block"><th colspan="{n}">{html.escape(block.title)}</th></tr>')
            for row in block.rows:
                cells = "".join(
                    f'<td class="{"label" if i < self.label_columns else "num"}">{html.escape(c)}</td>'
                    for i, c in enumerate(row)
                )
                out.append(f"<tr>{cells}</tr>")
        if not any(block.rows for block in self.blocks):
            out.append(f'<tr><td colspan="{n}">(no rows)</td></tr>')
        out.append("</tbody></table>")
        for note in self.footnotes + self.legend:
            out.append(f'<p class="note">{html.escape(note)}</p>')
        return "\n".join(out)


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "—": "---", "−": "$-$", "†": r"$^\dagger$", "Δ": r"$\Delta$", "→": r"$\rightarrow$",
    "≈": r"$\approx$", "×": r"$\times$", "<": r"$<$", ">": r"$>$", "≥": r"$\geq$", "·": r"$\cdot$",
}


def latex_escape(text: str) -> str:
    text = str(text)
    sign = ""
    if len(text) > 1 and text[0] == "-" and text[1].isdigit():  # a negative number: a real minus sign
        sign, text = "$-$", text[1:]
    return sign + "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


# ------------------------------------------------------------------- grouping by setting


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


def _group_cells(
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


def _assign_rows(cells: list[CellGroup], paper_rows: list[tuple]) -> list[RowSlot]:
    """Cells -> rows: paper-setting cells share the row's paper slot; any other setting gets its own."""
    slots = [RowSlot(rid, "paper") for rid in paper_rows]
    for cell in cells:
        kind = "paper" if cell.matches_paper else cell.row_setting
        slot = next((s for s in slots if s.row_id == cell.row_id and s.kind == kind and cell.column not in s.cells), None)
        if slot is None:
            slot = RowSlot(cell.row_id, kind)
            slots.append(slot)
        slot.cells[cell.column] = cell
    return slots


def _mark(slots: list[RowSlot], describe_row: Callable[[RowSlot], str], describe_column: Callable[[str], str],
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
            distinct = sorted({key for other in siblings for key in _diff_keys(cell.values, other.values)})
            if distinct:
                text += "; setting of this row: " + ", ".join(f"{key}={ref.show(cell.values.get(key))}" for key in distinct)
            where = describe_column(cell.column)
            parts.append(f"{where}: {text}" if where else text)
        slot.footnote = f"{slot.marker} {describe_row(slot)}, setting differs from the paper's: " + " | ".join(parts)
        footnotes.append(slot.footnote)
        k += 1
    return footnotes


# ------------------------------------------------------------------- quickstart-style table


def group_runs(records: list[dict]) -> dict[tuple[str, str, str, str], dict[bool, list[dict]]]:
    """(framework, dataset, backbone, setting) -> {idr: records}; settings never mixed."""
    groups: dict[tuple[str, str, str, str], dict[bool, list[dict]]] = defaultdict(lambda: {False: [], True: []})
    for rec in records:
        key = (rec["framework"], rec["dataset"], rec["backbone"], setting_key(record_values(rec)))
        groups[key][bool(rec["idr"])].append(rec)
    return dict(sorted(groups.items()))


def _setting_labels(groups: dict[tuple, dict[bool, list[dict]]]) -> tuple[dict[tuple, str], list[str]]:
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
        varying = sorted({k for a in keys for b in keys for k in _diff_keys(values[a], values[b])})
        for i, key in enumerate(keys, 1):
            labels[key] = f"S{i}"
            listed = ", ".join(f"{k}={ref.show(values[key].get(k))}" for k in varying)
            notes.append(f"S{i} of {' '.join(cell)}: {listed}")
    return labels, notes


def main_rows(records: list[dict]) -> list[dict[str, str]]:
    groups = group_runs(records)
    labels, _ = _setting_labels(groups)
    rows = []
    for key, runs in groups.items():
        framework, dataset, backbone, _setting = key
        base, idr = _values(runs[False]), _values(runs[True])
        row = {
            "framework": framework,
            "dataset": dataset,
            "backbone": backbone,
            "baseline mIoU": fmt_stats(base),
            "+IDR mIoU": fmt_stats(idr),
            "delta": fmt_gain(base, idr, paired(runs[False], runs[True])),
        }
        if labels:
            row["setting"] = labels.get(key, "")
        rows.append(row)
    return rows


def focus_rows(records: list[dict]) -> list[dict[str, str]]:
    """Per-class IoU of each dataset's focus classes (e.g. the context-ambiguous ones)."""
    groups = group_runs(records)
    labels, _ = _setting_labels(groups)
    rows = []
    for key, runs in groups.items():
        framework, dataset, backbone, _setting = key
        any_run = (runs[False] or runs[True])[0]
        for name in any_run.get("focus_classes", []):
            def iou(rec: dict, name: str = name) -> float | None:
                value = (rec.get("per_class_iou") or {}).get(name)
                return None if value is None or not math.isfinite(float(value)) else float(value)

            base, idr = _values(runs[False], iou), _values(runs[True], iou)
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


def _dict_table(name: str, title: str, rows: list[dict[str, str]], label_columns: int, notes: list[str]) -> Table:
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


# ------------------------------------------------------------------------ frameworks table


def _backbone_order(name: str) -> tuple:
    return ({ref.R50: 0, ref.R101: 1}.get(name, 2), name)


def _framework_order(name: str) -> tuple:
    order = list(ref.PAPER_FRAMEWORKS) + ["mask2former"]
    return (order.index(name) if name in order else len(order), name)


def _dataset_title(dataset: str) -> str:
    schedule = ref.CNN_SCHEDULES.get(dataset) or ref.SWIN_SCHEDULES.get(dataset)
    split = f" {schedule.split}" if schedule else ""
    return f"{ref.label('dataset', dataset)}{split}"


def _sort_slots(slots: list[RowSlot], key: Callable[[RowSlot], tuple]) -> list[RowSlot]:
    indexed = list(enumerate(slots))
    indexed.sort(key=lambda item: (key(item[1]), item[1].kind != "paper", item[0]))
    return [slot for _, slot in indexed]


def _frameworks_cells(records: list[dict]) -> tuple[list[RowSlot], list[str], list[str]]:
    """Rows (framework, backbone, setting) and dataset columns of the frameworks table."""
    chosen = [r for r in records if not _is_sota_record(r)]

    def checks(cell: CellGroup, idr: bool) -> tuple[list[ref.Check], bool]:
        framework, backbone = cell.row_id
        found = ref.frameworks_setting(framework, cell.column, backbone, idr)
        if found is None:  # a dataset the paper's table lacks: only the model keys can be compared
            return ref.frameworks_model_setting(framework, cell.column, backbone, idr), False
        return found, framework in ref.PAPER_FRAMEWORKS

    cells = _group_cells(
        chosen,
        row_id=lambda r: (r["framework"], ref.canonical_backbone(r["backbone"])),
        column=lambda r: r["dataset"],
        keep=lambda key: True,
        row_keep=lambda key: not _is_dataset_key(key),
        checks=checks,
    )
    paper_rows = [(fw, ref.R50) for fw in ref.PAPER_FRAMEWORKS]  # other frameworks: rows of their records
    slots = _assign_rows(cells, paper_rows)
    slots = _sort_slots(slots, lambda s: (_framework_order(s.row_id[0]), _backbone_order(s.row_id[1])))
    footnotes = _mark(
        slots,
        lambda s: f"{ref.label('framework', s.row_id[0])} {s.row_id[1]}",
        _dataset_title,
    )
    extra = sorted({c.column for c in cells} - set(ref.CNN_SCHEDULES))
    return slots, list(ref.CNN_SCHEDULES) + extra, footnotes


def _is_sota_record(record: dict) -> bool:
    return record.get("framework") == "upernet" and ref.canonical_backbone(str(record.get("backbone"))).startswith("swin")


def _paper(index: dict, framework: str, backbone: str, dataset: str, variant: str, protocol: str = "ss",
           metric: str = "mIoU") -> float | None:
    return index.get((framework, backbone, dataset, protocol, metric, variant))


def _row_label(slot: RowSlot) -> str:
    name = ref.label("framework", slot.row_id[0])
    return f"{name} {slot.marker}" if slot.marker else name


def frameworks_tables(records: list[dict], index: dict) -> tuple[Table, Table]:
    slots, datasets, footnotes = _frameworks_cells(records)
    columns = ["framework", "backbone", "baseline", "+IDR", "gain", "paired Δ (p)", "paper baseline", "paper +IDR",
               "paper gain", "ours − paper (baseline)", "ours − paper (+IDR)"]
    blocks = []
    overview_rows = []
    overview_cells: dict[int, list[str]] = defaultdict(list)
    for dataset in datasets:
        block = Block(_dataset_title(dataset))
        for s, slot in enumerate(slots):
            cell = slot.cells.get(dataset)
            if cell is None and not (slot.kind == "paper" and dataset in ref.CNN_SCHEDULES):
                overview_cells[s] += [MISSING, _paper_pair(index, slot, dataset)]
                continue
            runs = cell.runs if cell else {False: [], True: []}
            base, idr = _values(runs[False]), _values(runs[True])
            framework, backbone = slot.row_id
            p_base = _paper(index, framework, backbone, dataset, "baseline")
            p_idr = _paper(index, framework, backbone, dataset, "idr")
            pair = paired(runs[False], runs[True])
            block.rows.append([
                _row_label(slot),
                backbone,
                fmt_stats(base),
                fmt_stats(idr),
                fmt_delta(_sub(_mean(idr), _mean(base))),
                fmt_paired(pair),
                _fmt_paper(p_base),
                _fmt_paper(p_idr),
                fmt_delta(_sub(p_idr, p_base)),
                fmt_delta(_sub(_mean(base), p_base)),
                fmt_delta(_sub(_mean(idr), p_idr)),
            ])
            block.notes.append(slot.footnote)
            overview_cells[s] += [_arrow(_mean(base), _mean(idr), max(len(base), len(idr))),
                                  _paper_pair(index, slot, dataset)]
        blocks.append(block)
    for s, slot in enumerate(slots):
        overview_rows.append([_row_label(slot), slot.row_id[1], *overview_cells[s]])
    legend = [
        "mIoU (%), single scale. baseline / +IDR: mean ± std (n=seeds) of our records; gain: difference of "
        "the means; paired Δ: +IDR − baseline paired by seed, mean ± std, paired t-test p (— below two pairs).",
        "paper: official model zoo figures (results/reference/paper.csv); — where the paper gives none or "
        "nothing was run. Rows marked † were run with a setting other than the paper's (see the footnote).",
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


def _fmt_paper(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def _arrow(base: float | None, idr: float | None, n: int = 1) -> str:
    if base is None and idr is None:
        return MISSING
    text = f"{_fmt_paper(base)} → {_fmt_paper(idr)} ({fmt_delta(_sub(idr, base))})"
    return text + (f", n={n}" if n > 1 else "")


def _paper_pair(index: dict, slot: RowSlot, dataset: str) -> str:
    framework, backbone = slot.row_id
    return _arrow(_paper(index, framework, backbone, dataset, "baseline"), _paper(index, framework, backbone, dataset, "idr"))


# ------------------------------------------------------------------------------ SOTA table


def sota_table(records: list[dict], index: dict) -> Table:
    chosen = [r for r in records if _is_sota_record(r)]

    def checks(cell: CellGroup, idr: bool) -> tuple[list[ref.Check], bool]:
        found = ref.sota_setting(cell.row_id[0], idr, cell.column)
        return (found, True) if found is not None else ([], False)

    cells = _group_cells(
        chosen,
        row_id=lambda r: (r["dataset"], bool(r["idr"]), ref.canonical_backbone(r["backbone"])),
        column=lambda r: protocol_of((r.get("config") or {}).get("eval")),
        keep=lambda key: True,
        row_keep=lambda key: key not in EVAL_PROTOCOL_KEYS,
        checks=checks,
    )
    paper_rows = [(ds, True, ref.SWIN_L) for ds in ref.SWIN_SCHEDULES]
    slots = _assign_rows(cells, paper_rows)
    datasets = list(ref.SWIN_SCHEDULES)
    slots = _sort_slots(slots, lambda s: ((datasets.index(s.row_id[0]) if s.row_id[0] in datasets else len(datasets),
                                           s.row_id[0]), not s.row_id[1], s.row_id[2]))
    footnotes = _mark(
        slots,
        lambda s: f"{_dataset_title(s.row_id[0])} {'UPerNet + IDR' if s.row_id[1] else 'UPerNet'} {s.row_id[2]}",
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
        crop, epochs = _crop_epochs(slot, ref.SWIN_SCHEDULES.get(dataset))
        row = [_dataset_title(dataset) + (f" {slot.marker}" if slot.marker else ""), model, crop, epochs]
        for protocol in protocols:
            cell = slot.cells.get(protocol)
            values = _values(cell.runs[idr]) if cell else []
            paper = _paper(index, "upernet", backbone, dataset, "idr" if idr else "baseline", protocol)
            row += [fmt_stats(values), _fmt_paper(paper), fmt_delta(_sub(_mean(values), paper))]
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


# ------------------------------------------------------------------------ complexity table


def _params_m(record: dict) -> float | None:
    params = record.get("params")
    if isinstance(params, dict):
        if "total_m" in params:
            return float(params["total_m"])
        params = params.get("total")
    return float(params) / 1e6 if isinstance(params, (int, float)) and not isinstance(params, bool) else None


def _gflops(record: dict) -> float | None:
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
    cells = _group_cells(
        records,
        row_id=lambda r: (r["framework"], r["dataset"], ref.canonical_backbone(r["backbone"]), _input_size(r)),
        column=lambda r: "all",
        keep=model_keys,
        row_keep=model_keys,
        checks=checks,
    )
    paper_rows = [(fw, "ade20k", ref.R50, "512x512") for fw in ref.PAPER_FRAMEWORKS]
    slots = _assign_rows(cells, paper_rows)
    slots = _sort_slots(slots, lambda s: (_framework_order(s.row_id[0]), s.row_id[1], _backbone_order(s.row_id[2]),
                                          s.row_id[3]))
    footnotes = _mark(slots, lambda s: f"{ref.label('framework', s.row_id[0])} {s.row_id[2]} on {s.row_id[1]}",
                      lambda _c: "")
    columns = ["framework", "backbone", "dataset", "input", "params baseline (M)", "params +IDR (M)", "Δ params (M)",
               "GFLOPs baseline", "GFLOPs +IDR", "Δ GFLOPs", "latency baseline (ms)", "latency +IDR (ms)",
               "paper params baseline / +IDR (M)", "paper GFLOPs baseline / +IDR"]
    block = Block(None)
    for slot in slots:
        framework, dataset, backbone, size = slot.row_id
        cell = slot.cells.get("all")
        runs = cell.runs if cell else {False: [], True: []}
        row = [_row_label(slot), backbone, dataset, size]
        pb, pi = _mean(_values(runs[False], _params_m)), _mean(_values(runs[True], _params_m))
        gb, gi = _mean(_values(runs[False], _gflops)), _mean(_values(runs[True], _gflops))
        lb, li = _mean(_values(runs[False], _latency_ms)), _mean(_values(runs[True], _latency_ms))
        row += [_fmt_paper(pb), _fmt_paper(pi), fmt_delta(_sub(pi, pb)),
                _fmt_paper(gb), _fmt_paper(gi), fmt_delta(_sub(gi, gb)),
                _fmt_num(lb, 1), _fmt_num(li, 1)]
        for metric in ("params_m", "gflops"):
            values = [_paper(index, framework, backbone, dataset, v, "ss", metric) for v in ("baseline", "idr")]
            row.append(" / ".join(_fmt_paper(v) for v in values))
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


# ---------------------------------------------------------------------------- rendering


def load_index() -> dict:
    try:
        return ref.reference_index()
    except FileNotFoundError:
        print(f"warning: {ref.REFERENCE_CSV} is missing; paper columns show {MISSING}", file=sys.stderr)
        return {}


def build_tables(records: list[dict], index: dict | None = None) -> list[Table]:
    """Every table, in the order they are printed."""
    index = load_index() if index is None else index
    groups = group_runs(records)
    _, setting_notes = _setting_labels(groups)
    quick = _dict_table("quickstart", "mIoU (%), baseline vs +IDR", main_rows(records), 3, setting_notes)
    focus = _dict_table("focus_classes", "Per-class IoU (%) of the focus classes", focus_rows(records), 3, setting_notes)
    detail, overview = frameworks_tables(records, index)
    return [quick, focus, overview, detail, sota_table(records, index), complexity_table(records, index)]


def render(results_dir: Path) -> tuple[str, str]:
    """(markdown, csv) of `table.md` / `table.csv`: the quickstart table and the focus classes."""
    records = find_records(results_dir)
    rows = main_rows(records)
    _, notes = _setting_labels(group_runs(records))
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
    tables = build_tables(find_records(results_dir), index)
    parts = [markdown]
    for table in tables:
        write_text_atomic(out_dir / f"{table.name}.md", table.markdown())
        write_text_atomic(out_dir / f"{table.name}.tex", table.latex())
        write_text_atomic(out_dir / f"{table.name}.csv", table.csv())
        if table.name not in ("quickstart", "focus_classes"):
            parts.append(table.markdown())
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m harness.tables", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="results/<experiment>")
    args = parse_or_exit(parser, argv)
    if not args.results_dir.is_dir():
        print(f"error: {args.results_dir}: no such results folder", file=sys.stderr)
        return 2
    try:
        print(write_tables(args.results_dir))
    except ref.ReferenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
