"""Tables from hand-written result records: missing cells, seeds, settings, paper figures, formats."""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
from scipy.stats import ttest_rel

from harness import reference as ref
from harness.tables import build_tables, main, protocol_of, write_tables, write_tables_brief
from harness.records import find_records

# ------------------------------------------------------------------- record factory

PAPER_MODEL = {
    "backbone": "resnet50c",
    "pretrained": "weights/resnet50c_in1k.pth",
    "output_stride": 8,
    "feats_channels": 512,
    "head_channels": 512,
    "aux_channels": 512,
    "refine_channels": 256,
    "upernet_context": "ppm",
    "dropout": 0.1,
    "relation_momentum": 0.1,
    "dataset_reps_momentum": 0.1,
    "loss_weights": {"aux": 0.4, "stage1": 0.4, "stage2": 1.0, "decode": 1.0},
    "sync_bn": True,
}
PAPER_TRAIN = {  # ADE20K, R-50-D8: 130 epochs of 20,210 images at batch 16
    "iterations": 164206,
    "batch_size": 16,
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "poly_power": 0.9,
    "min_lr": 0.0001,
    "log_interval": 50,
    "loader_workers": 4,
    "torch_threads": 0,
    "checkpoint_interval": 0,
    "max_failures": 0,
}
PAPER_EVAL = {"batch_size": 1, "split": "val", "mode": "whole", "crop_size": None, "stride": None, "flip": False,
              "scales": [1.0]}


def _label_protocol(dataset: str) -> str:
    from harness.data import dataset_card

    try:
        return dataset_card(dataset).label_protocol
    except KeyError:  # a dataset the registry does not know
        return "official"


def make_record(
    results: Path,
    framework: str = "fcn",
    dataset: str = "ade20k",
    idr: bool = False,
    seed: int = 0,
    miou: float = 40.0,
    *,
    model: dict | None = None,
    train: dict | None = None,
    eval: dict | None = None,
    old_eval: bool = False,
    per_class: dict[str, float] | None = None,
    focus: list[str] | None = None,
    params: int | dict = 50_000_000,
    complexity: dict | None = None,
    suffix: str = "",
    extra: dict | None = None,
    log: str | None = None,
) -> dict:
    """Write `results/cells/<id>/record.json` like `build_record` (+ `train.log` if given); return it.

    Defaults are the paper's setting of FCN on ADE20K (R-50-D8, 512x512, batch 16, 130 epochs).
    """
    defaults = dict(PAPER_MODEL)
    if framework == "fcn" and dataset == "ade20k":
        defaults["feats_channels"] = 1024  # settings.md: C = 1024 for FCN on ADE20K
    model = {**defaults, **(model or {})}
    eval_cfg = {"batch_size": 1, "split": "val"} if old_eval else {**PAPER_EVAL, **(eval or {})}
    cid = f"{framework}{'+idr' if idr else ''}_{dataset}_{model['backbone']}_s{seed}{suffix}"
    per_class = per_class or {"wall": miou + 10, "floor": miou + 5, "tree": miou - 15}
    config = {
        "experiment": results.name,
        "framework": framework,
        "dataset": dataset,
        "idr": idr,
        "seed": seed,
        "model": model,
        "train": {**PAPER_TRAIN, **(train or {})},
        "eval": eval_cfg,
        "scaling": {"num_workers": 8, "use_gpu": True, "cpus_per_worker": 4.0, "max_concurrent_cells": 1},
        "data_root": f"/data/{results.name}/datasets",
        "data_options": {},
        "sweep": {},
    }
    record = {
        "schema": 1,
        "cell_id": cid,
        "experiment": results.name,
        "framework": framework,
        "dataset": dataset,
        "idr": idr,
        "seed": seed,
        "backbone": model["backbone"],
        "config": config,
        "metrics": {"mIoU": miou, "mAcc": miou + 8, "aAcc": miou + 35},
        "per_class_iou": per_class,
        "per_class_acc": {k: min(100.0, v + 5) for k, v in per_class.items()},
        "num_eval_images": 2000,
        "label_protocol": _label_protocol(dataset),
        "focus_classes": focus or [],
        "params": params,
        "complexity": complexity if complexity is not None else {"input_size": [512, 512], "gflops": 200.0},
        "wall_time_s": 100.0,
        "train_time_s": 90.0,
        "eval_time_s": 10.0,
        "iterations_per_s": 5.0,
        "resumed_from_iteration": 0,
        "world_size": 8,
        "device": "cuda:0",
        "versions": {"python": "3.11.7", "torch": "2.4.0", "timm": "1.0.9"},
        "git_commit": "0123456789abcdef",
        "host": "node1",
        "finished_at": "2026-01-01T00:00:00+00:00",
        **(extra or {}),
    }
    folder = results / "cells" / cid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps(record, indent=2))
    if log is not None:
        (folder / "train.log").write_text(log)
    return record


# ----------------------------------------------------------------------------- helpers


def tables_of(results: Path) -> dict:
    return {t.name: t for t in build_tables(find_records(results))}


def block(table, title_start: str):
    return next(b for b in table.blocks if b.title and b.title.startswith(title_start))


def row(rows: list[list[str]], label: str, backbone: str | None = None) -> list[str]:
    found = [r for r in rows if r[0] == label and (backbone is None or r[1] == backbone)]
    assert len(found) == 1, f"{label}: {found}"
    return found[0]


COLS = ["framework", "backbone", "baseline", "+IDR", "gain", "paired Δ (p)", "paper baseline", "paper +IDR",
        "paper gain", "ours − paper (baseline)", "ours − paper (+IDR)"]


def cells(r: list[str]) -> dict[str, str]:
    return dict(zip(COLS, r))


@pytest.fixture
def results(tmp_path) -> Path:
    path = tmp_path / "exp"
    path.mkdir()
    return path


# ------------------------------------------------------------------------------- tests


def test_reference_holds_every_figure_of_results_md():
    frame = ref.load_reference()
    assert list(frame.columns) == ref.COLUMNS
    assert len(frame) == 16 + 16 + 9  # +IDR (4x4), baselines (4 frameworks x 2 backbones x 2 datasets), Swin-L
    index = ref.reference_index(frame)
    assert index[("fcn", "resnet50c", "ade20k", "ss", "mIoU", "idr")] == 43.61
    assert index[("fcn", "resnet50c", "ade20k", "ss", "mIoU", "baseline")] == 36.96
    assert index[("upernet", "resnet101c", "cityscapes", "ss", "mIoU", "baseline")] == 80.39
    assert index[("upernet", ref.SWIN_L, "lip", "flip", "mIoU", "idr")] == 60.83
    assert ("upernet", ref.SWIN_L, "ade20k", "flip", "mIoU", "idr") not in index  # "—" in results.md
    assert ("fcn", "resnet50c", "lip", "ss", "mIoU", "baseline") not in index  # not published
    assert set(frame["source"]) == {"model zoo"} and set(frame["metric"]) == {"mIoU"}


def test_paper_columns_show_results_md_figures(results):
    tables = tables_of(results)  # no records at all
    ade = block(tables["frameworks"], "ADE20K")
    fcn = cells(row(ade.rows, "FCN"))
    assert (fcn["paper baseline"], fcn["paper +IDR"], fcn["paper gain"]) == ("36.96", "43.61", "+6.65")
    upernet = cells(row(block(tables["frameworks"], "Cityscapes").rows, "UPerNet"))
    assert (upernet["paper baseline"], upernet["paper +IDR"], upernet["paper gain"]) == ("79.08", "80.81", "+1.73")
    coco = cells(row(block(tables["frameworks"], "COCO-Stuff-10k").rows, "PSPNet"))
    assert (coco["paper baseline"], coco["paper +IDR"], coco["paper gain"]) == ("—", "39.13", "—")
    overview = tables["frameworks_overview"].blocks[0].rows
    assert "36.96 → 43.61 (+6.65)" in row(overview, "FCN")
    sota = tables["sota"].blocks[0].rows
    lip = next(r for r in sota if r[0].startswith("LIP"))
    assert ["60.53", "60.83", "61.17"] == [lip[c] for c in (5, 8, 11)]
    ade_sota = next(r for r in sota if r[0].startswith("ADE20K"))
    assert ade_sota[8] == "—"  # no flip figure for ADE20K in the paper


def test_missing_cells_show_a_dash(results):
    make_record(results, "fcn", "ade20k", idr=False, miou=37.0)
    tables = tables_of(results)
    fcn = cells(row(block(tables["frameworks"], "ADE20K").rows, "FCN"))
    assert fcn["baseline"] == "37.00"
    assert fcn["+IDR"] == fcn["gain"] == fcn["paired Δ (p)"] == fcn["ours − paper (+IDR)"] == "—"
    assert fcn["ours − paper (baseline)"] == "+0.04"
    for name in ("PSPNet", "DeepLabV3", "UPerNet"):
        other = cells(row(block(tables["frameworks"], "ADE20K").rows, name))
        assert other["baseline"] == other["+IDR"] == other["gain"] == "—"
        assert other["paper +IDR"] != "—"
    for title in ("COCO-Stuff-10k", "Cityscapes", "LIP"):
        assert cells(row(block(tables["frameworks"], title).rows, "FCN"))["baseline"] == "—"
    assert not tables["frameworks"].footnotes  # the record has the paper's setting: no flag


def test_several_seeds_give_mean_std_and_a_paired_comparison(results):
    base, idr = [36.0, 36.5, 37.0], [43.0, 43.8, 43.4]
    for seed in range(3):
        make_record(results, "fcn", "ade20k", idr=False, seed=seed, miou=base[seed])
        make_record(results, "fcn", "ade20k", idr=True, seed=seed, miou=idr[seed])
    fcn = cells(row(block(tables_of(results)["frameworks"], "ADE20K").rows, "FCN"))
    assert fcn["baseline"] == f"36.50 ± {statistics.stdev(base):.2f} (n=3)"
    assert fcn["+IDR"] == f"43.40 ± {statistics.stdev(idr):.2f} (n=3)"
    assert fcn["gain"] == "+6.90"
    diffs = [i - b for i, b in zip(idr, base)]
    p = ttest_rel(idr, base).pvalue
    assert fcn["paired Δ (p)"] == f"+6.90 ± {statistics.stdev(diffs):.2f} (n=3, p={p:.3f})"
    assert fcn["ours − paper (baseline)"] == "-0.46" and fcn["ours − paper (+IDR)"] == "-0.21"

    # pairs are made by seed: a seed with only one variant is not paired
    make_record(results, "fcn", "ade20k", idr=True, seed=7, miou=50.0)
    fcn = cells(row(block(tables_of(results)["frameworks"], "ADE20K").rows, "FCN"))
    assert "(n=3, p=" in fcn["paired Δ (p)"] and "(n=4)" in fcn["+IDR"]

    # the quickstart-style table shows the same statistics
    write_tables(results)
    md = (results / "table.md").read_text()
    assert "| fcn | ade20k | resnet50c | 36.50 ± 0.50 (n=3) |" in md
    assert "(paired ± " in md and "n=3, p=" in md


def test_one_pair_has_no_paired_test(results):
    make_record(results, "fcn", "ade20k", idr=False, seed=0, miou=36.0)
    make_record(results, "fcn", "ade20k", idr=True, seed=0, miou=43.0)
    fcn = cells(row(block(tables_of(results)["frameworks"], "ADE20K").rows, "FCN"))
    assert fcn["gain"] == "+7.00" and fcn["paired Δ (p)"] == "—"


def test_a_record_off_the_paper_setting_is_flagged_and_not_merged(results):
    for seed, (b, i) in enumerate([(36.0, 43.0), (37.0, 44.0)]):
        make_record(results, "fcn", "ade20k", idr=False, seed=seed, miou=b)
        make_record(results, "fcn", "ade20k", idr=True, seed=seed, miou=i)
    # same framework / dataset / backbone, shorter schedule and smaller crop: another setting
    short = {"train": {"iterations": 1000}, "complexity": {"input_size": [256, 256], "gflops": 50.0}, "suffix": "_short"}
    make_record(results, "fcn", "ade20k", idr=False, seed=0, miou=20.0, **short)
    make_record(results, "fcn", "ade20k", idr=True, seed=0, miou=22.0, **short)
    # another backbone
    make_record(results, "fcn", "ade20k", idr=True, seed=0, miou=30.0, model={"backbone": "resnet18"})

    tables = tables_of(results)
    detail = tables["frameworks"]
    ade = block(detail, "ADE20K").rows
    paper_row = cells(row(ade, "FCN"))
    assert paper_row["baseline"] == "36.50 ± 0.71 (n=2)" and paper_row["+IDR"] == "43.50 ± 0.71 (n=2)"
    flagged = [cells(r) for r in ade if r[0].startswith("FCN †")]
    assert len(flagged) == 2
    short_row = next(r for r in flagged if r["backbone"] == "resnet50c")
    assert short_row["baseline"] == "20.00" and short_row["+IDR"] == "22.00"  # not averaged with the paper row
    assert short_row["paper +IDR"] == "43.61"  # the paper's figure beside it, flagged
    r18 = next(r for r in flagged if r["backbone"] == "resnet18")
    assert r18["+IDR"] == "30.00" and r18["paper +IDR"] == "—" and r18["baseline"] == "—"

    marker = short_row["framework"].split()[-1]
    note = next(n for n in detail.footnotes if n.startswith(marker))
    assert "train.iterations 1000" in note and "crop_size 256x256 (paper 512x512)" in note
    assert "model.backbone" not in note
    r18_note = next(n for n in detail.footnotes if n.startswith(r18["framework"].split()[-1]))
    assert "model.backbone resnet18 (paper resnet50c)" in r18_note
    md = detail.markdown()
    assert note in md and marker in md
    assert any(note in line for line in detail.csv().splitlines())  # the CSV carries the note too

    # the quickstart-style table keeps the settings apart as well (setting column S1 / S2)
    write_tables(results)
    rows = list(csv.DictReader(io.StringIO((results / "table.csv").read_text())))
    mine = [r for r in rows if (r["framework"], r["dataset"], r["backbone"]) == ("fcn", "ade20k", "resnet50c")]
    assert sorted(r["setting"] for r in mine) == ["S1", "S2"]
    assert sorted(r["baseline mIoU"] for r in mine) == ["20.00", "36.50 ± 0.71 (n=2)"]
    assert "train.iterations=" in (results / "table.md").read_text()


def test_old_records_without_protocol_keys_share_the_setting(results):
    make_record(results, "fcn", "ade20k", idr=False, seed=0, miou=36.0, old_eval=True)
    make_record(results, "fcn", "ade20k", idr=False, seed=1, miou=37.0)
    fcn = cells(row(block(tables_of(results)["frameworks"], "ADE20K").rows, "FCN"))
    assert fcn["baseline"] == "36.50 ± 0.71 (n=2)"


def test_protocol_from_eval_config():
    assert protocol_of(None) == protocol_of({}) == protocol_of({"batch_size": 1, "split": "val"}) == "ss"
    assert protocol_of({"flip": True}) == "flip"
    assert protocol_of({"scales": [0.5, 1.0, 1.5], "flip": True, "mode": "slide"}) == "ms+flip"
    assert protocol_of({"scales": [0.75, 1.0]}) == "ms"


def test_sota_rows_per_protocol(results):
    swin = {"backbone": "swin_large_patch4_window12_384.ms_in22k", "head_channels": 1024, "upernet_context": "aspp"}
    train = {"iterations": 164206, "lr": 6e-5, "weight_decay": 0.01, "poly_power": 1.0, "min_lr": 0.0}
    slide = {"mode": "slide", "crop_size": [640, 640], "stride": [426, 426]}
    common = dict(model=swin, train=train, complexity={"input_size": [640, 640], "gflops": 400.0})
    make_record(results, "upernet", "ade20k", idr=True, miou=53.5, eval=slide, suffix="_ss", **common)
    make_record(results, "upernet", "ade20k", idr=True, miou=54.5, suffix="_ms",
                eval={**slide, "flip": True, "scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]}, **common)
    sota = tables_of(results)["sota"]
    columns = sota.columns
    ade = [dict(zip(columns, r)) for r in sota.blocks[0].rows if r[0].startswith("ADE20K")]
    assert len(ade) == 2  # the paper row (nothing run with its setting) and ours, flagged: optimiser SGD
    ours = next(r for r in ade if "†" in r["dataset"])
    assert ours["ss ours"] == "53.50" and ours["ss paper"] == "53.97" and ours["ss ours − paper"] == "-0.47"
    assert ours["ms+flip ours"] == "54.50" and ours["ms+flip paper"] == "54.68"
    assert ours["flip ours"] == "—"
    assert "train.optimizer sgd (paper adamw)" in sota.footnotes[0]
    assert "eval.probs_before_resize false (paper true)" in sota.footnotes[0]
    paper = next(r for r in ade if "†" not in r["dataset"])
    assert paper["ss ours"] == "—" and paper["ss paper"] == "53.97"

    # with the paper's setting (AdamW, 1,500 warm-up iterations, 110 epochs at 640x640) no flag
    faithful = {**train, "optimizer": "adamw", "warmup_iterations": 1500, "iterations": round(110 * 9000 / 16)}
    make_record(results, "upernet", "coco_stuff10k", idr=True, miou=49.5, model=swin, train=faithful,
                eval={**slide, "split": "test", "probs_before_resize": True},
                complexity={"input_size": [640, 640], "gflops": 400.0})
    sota = tables_of(results)["sota"]
    coco = [dict(zip(columns, r)) for r in sota.blocks[0].rows if r[0].startswith("COCO")]
    assert len(coco) == 1 and coco[0]["dataset"] == "COCO-Stuff-10k test"
    assert (coco[0]["ss ours"], coco[0]["ss paper"], coco[0]["ss ours − paper"]) == ("49.50", "49.94", "-0.44")
    assert (coco[0]["crop"], coco[0]["epochs"]) == ("640x640", "110")
    # the same run scored on the 171 annotated classes is not the paper's protocol: its own row, flagged
    make_record(results, "upernet", "coco_stuff10k", idr=True, miou=50.5, model=swin, train=faithful,
                eval={**slide, "split": "test", "probs_before_resize": True}, suffix="_annotated",
                complexity={"input_size": [640, 640], "gflops": 400.0}, extra={"label_protocol": "annotated (171 classes)"})
    sota = tables_of(results)["sota"]
    coco = [dict(zip(columns, r)) for r in sota.blocks[0].rows if r[0].startswith("COCO")]
    assert [r["ss ours"] for r in coco] == ["49.50", "50.50"] and "†" in coco[1]["dataset"]
    assert any("label_protocol annotated (171 classes) (paper paper (182 classes))" in f for f in sota.footnotes)
    # Swin-L UPerNet records stay out of the frameworks table
    assert all(r[1] != ref.SWIN_L for b in tables_of(results)["frameworks"].blocks for r in b.rows)


def test_complexity_table(results):
    make_record(results, "fcn", "ade20k", idr=False, params=49_480_000,
                complexity={"input_size": [512, 512], "gflops": 197.5})
    make_record(results, "fcn", "ade20k", idr=True, params={"total": 52_000_000, "total_m": 52.0},
                complexity={"input_size": [512, 512], "gflops": 210.25, "latency": {"median_ms": 41.5}})
    table = tables_of(results)["complexity"]
    r = dict(zip(table.columns, row(table.blocks[0].rows, "FCN")))
    assert (r["params baseline (M)"], r["params +IDR (M)"], r["Δ params (M)"]) == ("49.48", "52.00", "+2.52")
    assert (r["GFLOPs baseline"], r["GFLOPs +IDR"], r["Δ GFLOPs"]) == ("197.50", "210.25", "+12.75")
    assert r["latency baseline (ms)"] == "—" and r["latency +IDR (ms)"] == "41.5"
    assert r["paper params baseline / +IDR (M)"] == "— / —"  # not retrievable
    pspnet = dict(zip(table.columns, row(table.blocks[0].rows, "PSPNet")))
    assert pspnet["params baseline (M)"] == "—"


def test_latex_has_booktabs_rules_and_escapes(results):
    make_record(results, "fcn", "context_scenes", idr=False, seed=0, miou=50.0)
    make_record(results, "fcn", "context_scenes", idr=False, seed=1, miou=51.0)
    for table in build_tables(find_records(results)):
        tex = table.latex()
        assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
        assert tex.count("\\begin{tabular}") == 1 and "\\end{table}" in tex
        for raw in ("±", "—", "−", "†", "Δ", "→"):
            assert raw not in tex
    tex = next(t for t in build_tables(find_records(results)) if t.name == "frameworks").latex()
    assert "context\\_scenes" in tex and "50.50 $\\pm$ 0.71 (n=2)" in tex


def test_cli_writes_every_table(results, capsys):
    make_record(results, "fcn", "ade20k", idr=False, miou=36.0, focus=["tree"])
    make_record(results, "fcn", "ade20k", idr=True, miou=43.0, focus=["tree"])
    assert main([str(results)]) == 0
    out = capsys.readouterr().out
    assert "| fcn | ade20k | resnet50c | 36.00 | 43.00 | +7.00 |" in out and "36.96" in out
    assert (results / "table.csv").read_text().startswith("framework,dataset,backbone")
    assert "| fcn | ade20k | tree |" in (results / "table.md").read_text()
    for name in ("quickstart", "focus_classes", "frameworks", "frameworks_overview", "sota", "complexity"):
        for ext in ("md", "tex", "csv"):
            assert (results / "tables" / f"{name}.{ext}").stat().st_size > 0
    frameworks_csv = list(csv.reader(io.StringIO((results / "tables" / "frameworks.csv").read_text())))
    assert frameworks_csv[0][:3] == ["dataset", "framework", "backbone"]
    assert ["ADE20K val", "FCN", "resnet50c", "36.00", "43.00", "+7.00"] == frameworks_csv[1][:6]
    assert main([str(results / "missing")]) == 2


def test_a_framework_outside_the_paper_gets_its_own_flagged_row(results):
    make_record(results, "mask2former", "ade20k", idr=False, miou=45.0)
    make_record(results, "mask2former", "ade20k", idr=True, miou=46.0)
    detail = tables_of(results)["frameworks"]
    ade = block(detail, "ADE20K").rows
    assert [r[0].split()[0] for r in ade] == ["FCN", "PSPNet", "DeepLabV3", "UPerNet", "Mask2Former"]
    m2f = cells(ade[-1])
    assert m2f["framework"].startswith("Mask2Former †") and m2f["gain"] == "+1.00" and m2f["paper +IDR"] == "—"
    assert "not in the paper's table" in detail.footnotes[0]


def test_brief_output_is_the_main_table_and_where_the_rest_went(results):
    make_record(results, "fcn", "ade20k", idr=False, seed=0, miou=36.0)
    make_record(results, "fcn", "ade20k", idr=True, seed=0, miou=43.0)
    brief = write_tables_brief(results)
    assert brief.startswith((results / "table.md").read_text().rstrip())
    assert "| fcn | ade20k | resnet50c | 36.00 |" in brief
    names = sorted(path.stem for path in (results / "tables").glob("*.tex"))
    assert names == ["complexity", "focus_classes", "frameworks", "frameworks_overview", "quickstart", "sota"]
    assert f"paper-layout tables ({', '.join(names)}): {results / 'tables'}/<name>.md, .tex, .csv" in brief
    assert "Swin" not in brief and "GFLOPs" not in brief  # the sota and complexity tables stay in their files


def test_controls_pair_with_the_same_baselines_and_flip_rates_get_columns(results):
    from harness.tables import group_runs, main_rows, setting_labels

    for seed in (0, 1):
        flip = {"context_flip": {"flip_rate": 10.0 + seed}}
        make_record(results, "fcn", "ade20k", idr=False, seed=seed, miou=40.0 + seed, extra=flip)
        make_record(results, "fcn", "ade20k", idr=True, seed=seed, miou=45.0 + seed,
                    extra={"context_flip": {"flip_rate": 80.0 + seed}, "relation_recovery": {"mean_reciprocal_rank": 1.0}})
        make_record(results, "fcn", "ade20k", idr=True, seed=seed, miou=41.0 + seed, suffix="_uniform",
                    model={"idr_relations": "uniform"})
        # a baseline swept over a key it does not read is the same model: counted once per seed
        make_record(results, "fcn", "ade20k", idr=False, seed=seed, miou=40.0 + seed, suffix="_before",
                    model={"coarse_refine": "before"}, extra=flip)
    rows = main_rows(find_records(results))
    assert len(rows) == 2
    by_setting = {r["+IDR mIoU"]: r for r in rows}
    deletion, uniform = by_setting["45.50 ± 0.71 (n=2)"], by_setting["41.50 ± 0.71 (n=2)"]
    for r in (deletion, uniform):
        assert r["baseline mIoU"] == "40.50 ± 0.71 (n=2)"
    assert deletion["+IDR flip %"] == "80.50 ± 0.71 (n=2)" and deletion["baseline flip %"] == "10.50 ± 0.71 (n=2)"
    assert deletion["+IDR relation MRR"] == "1.00 ± 0.00 (n=2)"
    assert uniform["+IDR flip %"] == "—"
    assert {deletion["setting"], uniform["setting"]} == {"S1", "S2"}
    md_notes = " ".join(setting_labels(group_runs(find_records(results)))[1])
    assert "model.idr_relations=uniform" in md_notes


def _curve(*values: float) -> dict:
    return {"learning_curve": {"eval_interval": 100, "images": "first 8 of val",
                               "points": [{"iteration": 100 * (i + 1), "mIoU": v} for i, v in enumerate(values)]}}


def test_learning_curves_table_averages_seeds_per_setting_and_shows_shared_baselines_once(results):
    for seed in (0, 1):
        make_record(results, "fcn", "ade20k", idr=False, seed=seed, extra=_curve(10.0 + seed, 20.0 + seed))
        make_record(results, "fcn", "ade20k", idr=True, seed=seed, extra=_curve(30.0 + seed, 40.0 + seed))
        make_record(results, "fcn", "ade20k", idr=True, seed=seed, suffix="_uniform", model={"idr_relations": "uniform"},
                    extra=_curve(50.0, 60.0) if seed == 0 else None)
    make_record(results, "pspnet", "ade20k", idr=False)  # no curve: no row
    table = tables_of(results)["learning_curves"]
    rows = [r for b in table.blocks for r in b.rows]
    assert table.columns[-2:] == ["100", "200"]
    assert [r[3:] for r in rows] == [["baseline", "", "2", "10.5", "20.5"],
                                     ["+IDR", "S1", "2", "30.5", "40.5"],
                                     ["+IDR", "S2", "1", "50.0", "60.0"]]


def test_no_learning_curve_no_table(results):
    make_record(results, "fcn", "ade20k", idr=False)
    assert "learning_curves" not in tables_of(results)


def test_a_variant_records_its_sweep_and_still_pairs_with_the_baselines(results):
    from harness.tables import main_rows

    for seed in (0, 1):
        make_record(results, "fcn", "ade20k", idr=False, seed=seed, miou=40.0 + seed)
        make_record(results, "fcn", "ade20k", idr=True, seed=seed, miou=45.0 + seed)
        control = make_record(results, "fcn", "ade20k", idr=True, seed=seed, miou=41.0 + seed, suffix="_none",
                              model={"idr_relations": "none"})
        control["config"]["sweep"] = {"model.idr_relations": "none"}  # as grid.variants records it
        (results / "cells" / control["cell_id"] / "record.json").write_text(json.dumps(control))
    rows = main_rows(find_records(results))
    assert sorted(r["+IDR mIoU"] for r in rows) == ["41.50 ± 0.71 (n=2)", "45.50 ± 0.71 (n=2)"]
    assert {r["baseline mIoU"] for r in rows} == {"40.50 ± 0.71 (n=2)"}
