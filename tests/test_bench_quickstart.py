"""benchmarks/bench_quickstart.py: how it reads a quickstart's records and judges IDR's lead."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOCUS = ["boat", "car"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_quickstart", ROOT / "benchmarks" / "bench_quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(idr: bool, miou: float, boat: float, car: float) -> dict:
    return {"cell_id": "fcn+idr_cs" if idr else "fcn_cs", "idr": idr, "metrics": {"mIoU": miou},
            "focus_classes": FOCUS, "per_class_iou": {"ground": 90.0, "boat": boat, "car": car},
            "model_file": "model.pt", "train_time_s": 1.0}


def _write(results: Path, record: dict, model: bytes) -> None:
    folder = results / "cells" / record["cell_id"]
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(record))
    (folder / "model.pt").write_bytes(model)


@pytest.mark.parametrize("idr_values, ahead", [
    ((60.0, 40.0, 30.0), True),
    ((60.0, 40.0, 20.0), False),  # behind on one focus class
    ((50.0, 40.0, 30.0), False),  # behind overall
])
def test_the_lead_needs_every_focus_class_and_the_mean(idr_values, ahead):
    lines, is_ahead = _bench().lead_lines(_record(False, 55.0, 10.0, 25.0), _record(True, *idr_values))
    assert is_ahead is ahead
    assert lines[0].startswith("mIoU: FCN 55.00, FCN + IDR")
    assert [line.split()[0] for line in lines[1:]] == FOCUS


def test_records_are_read_and_fingerprinted_from_the_results_folder(tmp_path):
    bench = _bench()
    _write(tmp_path / "a", _record(False, 55.0, 10.0, 25.0), b"base")
    _write(tmp_path / "a", _record(True, 60.0, 40.0, 30.0), b"idr")
    _write(tmp_path / "b", _record(False, 55.0, 10.0, 25.0), b"base")
    _write(tmp_path / "b", _record(True, 60.0, 40.0, 30.0), b"idr, other weights")
    baseline, idr = bench.baseline_and_idr(tmp_path / "a")
    assert (baseline["idr"], idr["idr"]) == (False, True)
    first, second = bench.fingerprint(tmp_path / "a"), bench.fingerprint(tmp_path / "b")
    assert first["fcn_cs"] == second["fcn_cs"]
    assert first["fcn+idr_cs"] != second["fcn+idr_cs"]
    with pytest.raises(SystemExit, match="expected one baseline and one \\+IDR record"):
        bench.baseline_and_idr(tmp_path / "missing")
