"""`python -m harness.report results/<experiment> [--checkpoint PATH ...]`: one self-contained HTML page.

Regenerates the tables (harness.tables) and plots (harness.plots), then writes
`results/<experiment>/report.html`: every table, every plot embedded as a base64 PNG, the
environment the records were produced in (library versions, git commits, hosts, devices) and,
per cell, its resolved configuration, metrics and `train.log` in collapsible sections. All
text is HTML-escaped; the page loads nothing from outside.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import sys
from collections import defaultdict
from pathlib import Path

from harness.fileio import write_text_atomic
from harness.plots import parse_results_cli, plot_all
from harness.records import find_records
from harness.tables import build_tables, load_index, write_tables
from harness.tables.context_schemes import load_measurements

REPORT_NAME = "report.html"
MAX_LOG_CHARS = 1_000_000  # a longer train.log keeps its head and tail

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 110rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2rem; }
nav a { margin-right: 1rem; }
.scroll { overflow-x: auto; }
table.results, table.env { border-collapse: collapse; margin: .6rem 0; font-size: .85rem; }
table.results th, table.results td, table.env th, table.env td { padding: .2rem .5rem; border-bottom: 1px solid #e3e3e3; }
table.results thead th { border-top: 2px solid #333; border-bottom: 1px solid #333; text-align: center; }
table.results tbody tr:last-child td { border-bottom: 2px solid #333; }
table.results tr.block th { text-align: left; font-style: italic; background: #f4f4f4; }
td.num { text-align: right; white-space: nowrap; } td.label { text-align: left; white-space: nowrap; }
p.note { font-size: .8rem; color: #444; margin: .2rem 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
details { margin: .3rem 0; } summary { cursor: pointer; }
pre { background: #f7f7f7; padding: .5rem; overflow-x: auto; font-size: .78rem; max-height: 40rem; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(path.stem)}">'


def _environment(records: list[dict]) -> str:
    """Each environment field with its distinct values and the cells that had them."""
    fields: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        cell = rec.get("cell_id", "?")
        for name, value in sorted((rec.get("versions") or {}).items()):
            fields[name][str(value)].append(cell)
        for name in ("git_commit", "host", "device", "world_size"):
            fields[name][str(rec.get(name))].append(cell)
    if not fields:
        return "<p>(no finished cells)</p>"
    rows = []
    for name, values in fields.items():
        listed = []
        for value, cells in values.items():
            where = "" if len(values) == 1 else f" ({', '.join(sorted(cells))})"
            listed.append(f"<code>{_e(value)}</code>{_e(where)}")
        rows.append(f"<tr><th>{_e(name)}</th><td>{'<br>'.join(listed)}</td></tr>")
    return '<table class="env">' + "".join(rows) + "</table>"


def _log_text(path: Path) -> str:
    if not path.is_file():
        return "(no train.log)"
    text = path.read_text(errors="replace")
    if len(text) > MAX_LOG_CHARS:
        half = MAX_LOG_CHARS // 2
        text = text[:half] + f"\n... ({len(text) - MAX_LOG_CHARS} characters left out) ...\n" + text[-half:]
    return text


def _cells(results_dir: Path, records: list[dict]) -> str:
    parts = []
    for rec in sorted(records, key=lambda r: r.get("cell_id", "")):
        cell = rec.get("cell_id", "?")
        miou = (rec.get("metrics") or {}).get("mIoU")
        summary = f"{cell}: mIoU {miou:.2f}" if isinstance(miou, (int, float)) else cell
        metrics = {k: rec.get(k) for k in ("metrics", "num_eval_images", "params", "complexity", "wall_time_s",
                                           "train_time_s", "eval_time_s", "iterations_per_s", "finished_at",
                                           "evaluated_from", "eval_device", "context_flip",
                                           "relation_recovery") if k in rec}
        trained_as = rec.get("evaluated_from") or cell  # a re-evaluated cell's log is its training cell's
        log_title = "train.log" if trained_as == cell else f"train.log of {trained_as}"
        parts.append(
            f'<details class="cell" id="cell-{_e(cell)}"><summary>{_e(summary)}</summary>'
            f"<details><summary>resolved config</summary><pre>{_e(json.dumps(rec.get('config'), indent=2))}</pre></details>"
            f"<details><summary>metrics and timings</summary><pre>{_e(json.dumps(metrics, indent=2))}</pre></details>"
            f"<details><summary>per-class IoU</summary><pre>{_e(json.dumps(rec.get('per_class_iou'), indent=2))}</pre></details>"
            f"<details><summary>{_e(log_title)}</summary>"
            f"<pre>{_e(_log_text(results_dir / 'cells' / trained_as / 'train.log'))}</pre></details>"
            "</details>"
        )
    return "\n".join(parts) or "<p>(no finished cells)</p>"


def build_report(results_dir: Path, checkpoints: list[Path] | None = None, dataset: str | None = None,
                 log=print, shown_as: str | None = None) -> Path:
    """Tables, plots and the HTML page for one results folder (named `shown_as` on the page, e.g. the
    URI a staged copy came from); returns the page's path."""
    results_dir = Path(results_dir)
    index = load_index()
    write_tables(results_dir, index)
    plots = [p for p in plot_all(results_dir, checkpoints, dataset, index, log) if p.suffix == ".png"]
    records = find_records(results_dir)
    tables = build_tables(records, index, load_measurements(results_dir))
    name = results_dir.name
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    body = [
        f"<h1>IDRBench report: {_e(name)}</h1>",
        f"<p>{len(records)} finished cell(s) in <code>{_e(shown_as or results_dir)}</code>; generated {_e(generated)}.</p>",
        '<nav><a href="#tables">Tables</a><a href="#plots">Plots</a><a href="#environment">Environment</a>'
        '<a href="#cells">Cells</a></nav>',
        '<h2 id="tables">Tables</h2>',
    ]
    for table in tables:
        body.append(f'<section class="table" id="section-{_e(table.name)}"><h3>{_e(table.title)}</h3>'
                    f'<div class="scroll">{table.html()}</div></section>')
    body.append('<h2 id="plots">Plots</h2>')
    if not plots:
        body.append("<p>(no plots: no finished pair of baseline and +IDR cells)</p>")
    for path in plots:
        body.append(f"<figure>{_img(path)}<figcaption>{_e(path.stem)} "
                    f"(<code>{_e(path.relative_to(results_dir))}</code>, SVG beside it)</figcaption></figure>")
    body += ['<h2 id="environment">Environment</h2>', _environment(records),
             '<h2 id="cells">Cells</h2>', _cells(results_dir, records)]
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>IDRBench report: {_e(name)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = results_dir / REPORT_NAME
    write_text_atomic(path, page)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_results_cli("python -m harness.report", __doc__.splitlines()[0], argv)
    if args is None:
        return 2
    from harness.storage import is_result_file, staged

    with staged(args.results_dir, is_result_file) as folder:
        path = build_report(folder, args.checkpoint, args.dataset, log=lambda m: print(m, file=sys.stderr),
                            shown_as=args.results_dir.display)
    print(f"wrote {args.results_dir / REPORT_NAME if not args.results_dir.is_local else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
