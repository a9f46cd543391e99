"""benchmarks/gpu_check.py on CPU in tiny mode, and --dry-run taking its rate."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from harness.run import main
from tests.conftest import tiny_experiment

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_cpu_run_writes_one_report_the_dry_run_reads(tmp_path, write_experiment, capsys):
    out = tmp_path / "gpu_check.json"
    code = _gpu_check().main(["--device", "cpu", "--tiny", "--frameworks", "fcn", "--no-ray-cell", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {(r["idr"], r["amp"]) for r in rows} == {(False, "bf16"), (True, "bf16"), (False, "fp16"), (True, "fp16")}
    assert all(r["images_per_s"] > 0 and r["forward_flops"] > 0 for r in rows)
    assert all(r["idr_over_base_step"] == 1.0 for r in rows if not r["idr"])
    if sys.platform == "linux":  # the CPU figure is the resident-set rise, read from /proc
        assert all(r["peak_memory_mib"] > 0 and r["peak_memory_kind"] == "CPU RSS rise" for r in rows)
    assert {(t["framework"], t["amp"]) for t in report["targets"]} == {("fcn", "bf16"), ("fcn", "fp16")}
    assert all(t["target_at_most"] == 1.10 and t["met"] == (t["ratio"] <= 1.10) for t in report["targets"])
    latency = report["measure_latency"]
    assert "error" not in latency, latency
    assert report["gpu_rate_flops_per_s"] > 0
    capsys.readouterr()
    path = write_experiment(tiny_experiment("t"))
    assert main([str(path), "--dry-run", "--gpu-rate-from", str(out)]) == 0
    assert f"{report['gpu_rate_flops_per_s']:.3g} FLOPs/s per GPU, measured by benchmarks/gpu_check.py" in capsys.readouterr().out


def test_gpu_rate_from_a_bad_file_is_one_error_line(tmp_path, write_experiment, capsys):
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps({"rows": []}))
    path = write_experiment(tiny_experiment("t"))
    assert main([str(path), "--dry-run", "--gpu-rate-from", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --gpu-rate-from {bad}: expected a positive number at gpu_rate_flops_per_s, got None"]


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU figure reads /proc/self")
def test_cpu_peak_memory_sees_a_step_s_allocations_and_not_earlier_ones():
    from benchmarks.step_memory import PeakMemory

    earlier = torch.ones(32 * 2**20 // 4)  # 32 MiB alive before the block: not the block's
    with PeakMemory(torch.device("cpu")) as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB allocated and freed in the block
        del block
    assert 60 <= peak.mib <= 80
    with PeakMemory(torch.device("cpu")) as idle:
        pass
    assert idle.mib < 16
    del earlier
