"""harness.results.load: the records as a DataFrame, one row each (the tables read through it)."""
from __future__ import annotations

import json

from harness.records import RELEASED
from harness.results import load, records_of
from tests.test_tables import make_record


def test_one_row_per_record_with_axes_metrics_and_classes(tmp_path):
    exp = tmp_path / "results" / "sweep"
    for idr in (False, True):
        for lr in (0.01, 0.02):
            record = make_record(exp, "fcn", "ade20k", idr, 0, 40.0 + idr, suffix=f"_lr{lr}",
                                 per_class={"wall": 70.0, "car": 30.0 + idr})
            record["config"]["sweep"] = {"train.lr": lr}
            (exp / "cells" / record["cell_id"] / "record.json").write_text(json.dumps(record))
    frame = load(exp)
    assert len(frame) == 4 and sorted(frame["idr"].tolist()) == [False, False, True, True]
    assert sorted(frame["sweep.train.lr"]) == [0.01, 0.01, 0.02, 0.02]
    assert set(frame["source"]) == {"trained"} and set(frame["protocol"]) == {"ss"}
    assert list(frame.loc[frame["idr"], "iou.car"]) == [31.0, 31.0]
    assert records_of(frame)[0]["cell_id"] == frame["cell_id"][0]


def test_released_rows_and_a_results_root_of_several_experiments(tmp_path):
    root = tmp_path / "results"
    make_record(root / "a", "fcn", "ade20k", True, 0, 43.0)
    make_record(root / "b", "pspnet", "ade20k", True, 0, 44.0, extra={"provenance": {"kind": RELEASED}})
    frame = load(root)
    assert sorted(frame["framework"]) == ["fcn", "pspnet"]
    assert dict(zip(frame["framework"], frame["source"])) == {"fcn": "trained", "pspnet": "released"}


def test_paper_rows_and_an_empty_folder(tmp_path):
    empty = load(tmp_path)
    assert len(empty) == 0 and {"framework", "mIoU", "source", "record"} <= set(empty.columns)
    with_paper = load(tmp_path, paper=True)
    paper = with_paper[with_paper["source"] == "paper"]
    assert len(paper) > 0 and paper["mIoU"].notna().all() and records_of(with_paper) == []
