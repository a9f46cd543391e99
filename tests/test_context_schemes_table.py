"""The context_schemes table from hand-made records: every figure from its source, "—" where missing,
MCIBI++ vs IDR side by side with their difference."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import reference as ref
from harness.records import RELEASED
from harness.tables import build_tables, write_tables
from harness.tables.context_schemes import context_schemes_table, load_measurements
from harness.tables.layout import MISSING

ZOO = {("ocrnet", ref.R50, "ade20k", "ss", "mIoU"): (42.47, "sssegmentation docs/modelzoo/ocrnet/README.md"),
       ("fcn_mcibipp", ref.R50, "ade20k", "ss", "mIoU"): (43.39, "sssegmentation docs/modelzoo/mcibiplusplus/README.md")}
PAPER = {("fcn", ref.R50, "ade20k", "ss", "mIoU", "idr"): 43.61, ("fcn", ref.R50, "ade20k", "ss", "mIoU", "baseline"): 36.96}


def record(framework: str, miou: float, *, idr: bool = False, seed: int = 0, dataset: str = "ade20k",
           released: bool = False, lr: float = 0.01) -> dict:
    rec = {"framework": framework, "dataset": dataset, "idr": idr, "seed": seed, "backbone": "resnet50c",
           "cell_id": f"{framework}{'+idr' if idr else ''}_{dataset}_s{seed}{'_rel' if released else ''}_{lr}",
           "config": {"model": {"backbone": "resnet50c"}, "train": {"iterations": 100, "lr": lr},
                      "eval": {"split": "val"}},
           "metrics": {"mIoU": miou}, "params": {"total": 50_000_000},
           "complexity": {"input_size": [512, 512], "gflops": 200.0}}
    if released:
        rec["provenance"] = {"kind": RELEASED}
    return rec


def measured(framework: str, idr: bool, total_m: float, gflops: float, ctx: tuple[int, int] | None,
             latency_ms: float | None = None) -> dict:
    out = {"framework": framework, "idr": idr, "backbone": "resnet50c", "input_size": [512, 512],
           "params": {"total_m": total_m}, "flops": {"gflops": gflops},
           "context_module": {"modules": ["head.x"], "params": ctx[0], "flops": ctx[1]} if ctx else None}
    if latency_ms is not None:
        out["latency"] = {"median_ms": latency_ms, "device": "cpu"}
    return out


def rows_by_label(table) -> dict[tuple[str, str], list[str]]:
    """(block title, first column) -> row, with the columns named."""
    return {(block.title, row[0]): dict(zip(table.columns, row)) for block in table.blocks for row in block.rows}


@pytest.fixture()
def table():
    records = [record("ocrnet", 40.0, seed=0), record("ocrnet", 42.0, seed=1),
               record("ocrnet", 41.5, released=True),
               record("fcn_mcibipp", 43.0), record("fcn", 44.5, idr=True), record("fcn", 37.0)]
    measures = [measured("fcn_mcibipp", False, 43.82, 170.0, (5_000_000, 10_000_000_000), 900.0),
                measured("fcn", True, 55.77, 215.8, (12_000_000, 60_000_000_000))]
    return context_schemes_table(records, PAPER, measures, ZOO)


def test_rows_are_grouped_by_paradigm(table):
    titles = [b.title for b in table.blocks]
    assert titles == ["none", "multi-scale", "similarity", "authors' earlier modules", "intervention",
                      "MCIBI++ vs IDR, same framework"]
    similarity = [row[0] for row in table.blocks[2].rows]
    assert similarity == ["Non-local", "DNL", "OCRNet", "DANet", "CCNet"]
    assert [row[0] for row in table.blocks[3].rows][:2] == ["ISNet", "MCIBI (DeepLabV3)"]


def test_each_figure_from_its_source_and_missing_as_dash(table):
    rows = rows_by_label(table)
    ocr = rows[("similarity", "OCRNet")]
    assert ocr["ADE20K trained"] == "41.00 ± 1.41 (n=2)"  # the released record is not averaged in
    assert ocr["ADE20K released"] == "41.50"
    assert ocr["ADE20K zoo"] == "42.47"
    assert ocr["Cityscapes trained"] == ocr["Cityscapes released"] == ocr["Cityscapes zoo"] == MISSING
    # no measurement: whole-model figures from the 512x512 records, no context-module figures
    assert (ocr["params (M)"], ocr["GFLOPs"]) == ("50.00", "200.00")
    assert ocr["context params (M)"] == ocr["context GFLOPs"] == ocr["latency (ms)"] == MISSING
    fcn = rows[("none", "FCN")]
    assert (fcn["ADE20K trained"], fcn["ADE20K zoo"]) == ("37.00", "36.96")  # paper.csv's model-zoo figure
    dnl = rows[("similarity", "DNL")]
    assert all(dnl[c] == MISSING for c in table.columns[2:])  # nothing run, measured or in the zoo index


def test_measurements_fill_complexity_and_context_module(table):
    rows = rows_by_label(table)
    plug = rows[("authors' earlier modules", "MCIBI++ on FCN")]
    assert [plug[c] for c in ("params (M)", "GFLOPs", "context params (M)", "context GFLOPs", "latency (ms)")] == \
        ["43.82", "170.00", "5.00", "10.00", "900.0 (cpu)"]


def test_mcibipp_and_idr_side_by_side_with_difference(table):
    rows = rows_by_label(table)
    block = "MCIBI++ vs IDR, same framework"
    labels = [row[0] for row in next(b for b in table.blocks if b.title == block).rows[:3]]
    assert labels == ["MCIBI++ on FCN", "IDR on FCN", "IDR − MCIBI++ (FCN)"]
    diff = rows[(block, "IDR − MCIBI++ (FCN)")]
    assert diff["ADE20K trained"] == "+1.50"                  # 44.5 - 43.0
    assert diff["ADE20K zoo"] == "+0.22"                      # 43.61 - 43.39
    assert diff["params (M)"] == "+11.95" and diff["context GFLOPs"] == "+50.00"
    assert diff["ADE20K released"] == diff["Cityscapes zoo"] == diff["latency (ms)"] == MISSING
    assert rows[(block, "IDR − MCIBI++ (PSPNet)")]["ADE20K zoo"] == MISSING


def test_small_backbone_cells_and_r50_measurements_get_a_block_each():
    cells = [{**record("danet", 70.0, dataset="context_scenes"), "backbone": "resnet18",
              "config": {"model": {"backbone": "resnet18"}, "eval": {"split": "val"}},
              "complexity": {"input_size": [64, 64], "gflops": 0.9}}]
    table = context_schemes_table(cells, {}, [measured("danet", False, 52.48, 211.47, (328_000, 13_150_000_000))], {})
    danet = [dict(zip(table.columns, row)) for block in table.blocks for row in block.rows if row[0] == "DANet"]
    assert [(row["backbone"], row["GFLOPs"], row["context_scenes trained"]) for row in danet] == \
        [("R-50-D8", "211.47", MISSING), ("resnet18", MISSING, "70.00")]


def test_idr_minus_mcibipp_is_paired_by_seed_with_two_or_more_seeds():
    records = [record("fcn_mcibipp", 40.0, seed=0), record("fcn_mcibipp", 42.0, seed=1),
               record("fcn", 41.0, idr=True, seed=0), record("fcn", 44.0, idr=True, seed=1)]
    diff = rows_by_label(context_schemes_table(records, {}, [], {}))[("MCIBI++ vs IDR, same framework",
                                                                       "IDR − MCIBI++ (FCN)")]
    # seed 0: +1, seed 1: +2; mean +1.50, std 0.71, ttest_rel p = 0.205
    assert diff["ADE20K trained"] == "+1.50 (paired ± 0.71, n=2, p=0.205)"


def test_settings_are_never_averaged():
    records = [record("danet", 40.0, lr=0.01), record("danet", 30.0, lr=0.02)]
    row = rows_by_label(context_schemes_table(records, {}, [], {}))[("similarity", "DANet")]
    assert sorted(row["ADE20K trained"].split(" / ")) == ["30.00", "40.00"]


def test_table_written_only_for_a_scheme_folder(tmp_path: Path):
    assert "context_schemes" not in [t.name for t in build_tables([record("fcn", 37.0)], {})]
    assert "context_schemes" in [t.name for t in build_tables([record("ccnet", 40.0)], {})]
    folder = tmp_path / "exp"
    cell = folder / "cells" / "ccnet_ade20k_s0"
    cell.mkdir(parents=True)
    full = {**record("ccnet", 40.0), "experiment": "exp", "schema": 1}
    (cell / "record.json").write_text(json.dumps(full))
    (folder / "measure").mkdir()
    (folder / "measure" / "ccnet.json").write_text(json.dumps([measured("ccnet", False, 52.33, 201.1, (1, 2))]))
    write_tables(folder, {})
    for suffix in ("md", "tex", "csv"):
        assert (folder / "tables" / f"context_schemes.{suffix}").is_file()
    assert "52.33" in (folder / "tables" / "context_schemes.md").read_text()


def test_bad_measurement_file_is_one_clear_error(tmp_path: Path):
    (tmp_path / "measure").mkdir()
    (tmp_path / "measure" / "x.json").write_text('{"framework": "fcn"}')
    with pytest.raises(ref.ReferenceError, match=r"x.json: expected harness.measure --json output"):
        load_measurements(tmp_path)


def test_zoo_file_parses_and_names_its_pages():
    zoo = ref.load_zoo()
    assert zoo[("ocrnet", ref.R50, "ade20k", "ss", "mIoU")] == (42.47, "sssegmentation docs/modelzoo/ocrnet/README.md")
    assert zoo[("upernet_mcibipp", ref.SWIN_L, "ade20k", "ms+flip", "mIoU")][0] == 54.50
    assert all(source.startswith("sssegmentation docs/modelzoo/") for _, source in zoo.values())


def test_zoo_file_malformed_value_names_row(tmp_path: Path):
    text = ref.ZOO_CSV.read_text().splitlines()
    text[3] = text[3].replace("43.50", "n/a")
    bad = tmp_path / "zoo.csv"
    bad.write_text("\n".join(text) + "\n")
    with pytest.raises(ref.ReferenceError, match=r"row 4: value 'n/a' is not a number"):
        ref.load_zoo(bad)
