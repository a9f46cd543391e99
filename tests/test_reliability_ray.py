"""Reliability through `harness.run` on Ray: divergence, bad data, a killed driver."""
from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from harness.run import main
from tests.conftest import REPO, tiny_experiment, train_worker_pids

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CELL = "fcn+idr_context_scenes_resnet18_s0"


def test_diverged_cell_fails_once_without_record_or_retry(ray_session, write_experiment, tmp_path, capsys):
    train = {"iterations": 8, "batch_size": 4, "lr": 1e6, "log_interval": 1, "max_failures": 1}
    path = write_experiment(tiny_experiment("diverge", grid={"idr": [True]}, train=train))
    results = tmp_path / "results"
    assert main([str(path), "--results", str(results)]) == 1
    cell = results / "diverge" / "cells" / CELL
    assert not (cell / "record.json").exists()
    log = (cell / "train.log").read_text()
    assert log.count("start: ") == 1, "the fault was retried"
    assert "failed, not retried: " + CELL + ": diverged at iteration " in log
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "diverged at iteration" in errors[0] and "last finite loss" in errors[0]


def test_bad_file_mid_split_is_refused_before_ray_starts(write_experiment, tmp_path, capsys, monkeypatch):
    """A file changed after verification: harness.run names it and stops before Ray or results/.

    Met during training anyway (`--no-verify`), the same file fails the cell at once naming it
    (tests/test_verify.py, through `run_cell`), and such a fault is not retried by Ray
    (`CellFault`, as the divergence test above shows through Ray).
    """
    import ray

    from harness.data import build_dataset
    from tests.test_real_datasets import _truncate

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started on data known to be bad"))
    train = {"iterations": 3, "batch_size": 4, "log_interval": 1, "max_failures": 1}
    exp = tiny_experiment("baddata", grid={"idr": [True]}, train=train)
    path = write_experiment(exp)
    root = tmp_path / "datasets"
    options = exp["data"]["options"]["context_scenes"]
    bad = build_dataset("context_scenes", root, "train", options, train=True).samples[5].image
    _truncate(bad)
    results = tmp_path / "results"
    assert main([str(path), "--results", str(results)]) == 2  # the stamp no longer matches: refused up front
    assert f"{bad}: cannot decode image" in capsys.readouterr().err
    assert not results.exists()


def _wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def driverloss_experiment(tmp_path_factory) -> tuple[Path, dict]:
    """The driver-loss grid (a 2-iteration baseline, a 20-iteration +IDR cell checkpointing every 5) and
    the +IDR cell's per-class IoU trained uninterrupted in a plain process."""
    from harness.config import load_experiment
    from harness.run import resolve_cells
    from harness.train import PrintReporter, run_cell

    folder = tmp_path_factory.mktemp("driverloss")
    exp = tiny_experiment(
        "driverloss",
        train={"iterations": 2, "batch_size": 4, "log_interval": 5},
        overrides=[{"match": {"idr": True}, "set": {"train.iterations": 20, "train.checkpoint_interval": 5}}],
    )
    exp["data"]["root"] = str(folder / "datasets")
    path = folder / "driverloss.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    cell = next(c for c in resolve_cells(load_experiment(path)) if c.idr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray worker with one CPU runs it
    try:
        return path, run_cell(cell, PrintReporter(quiet=True))["metrics"]["per_class_iou"]
    finally:
        torch.set_num_threads(threads)


def test_killed_driver_resumes_without_retraining_or_duplicates(ray_session, driverloss_experiment, tmp_path):
    """The driver SIGKILLed once the +IDR cell has a checkpoint at iteration 10 on a local disk; `--resume`
    retrains nothing finished, resumes the cell from its newest checkpoint and ends with the uninterrupted
    run's per-class IoU. (The same with results on S3 is tests/test_chaos.py's driver_kill fault; resuming
    from S3 past a damaged checkpoint is tests/test_storage.py.)"""
    from harness.storage import is_file, list_files, parse_location, read_text
    from tests.recovery import checkpoint_stored, recovery_figures, report, same_iou

    path, uninterrupted = driverloss_experiment
    results = str(tmp_path / "results")
    root = parse_location(results) / "driverloss"
    cells = root / "cells"
    baseline, interrupted = cells / "fcn_context_scenes_resnet18_s0", cells / CELL
    command = [sys.executable, "-m", "harness.run", str(path), "--results", results, "--address", ray_session.address]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: checkpoint_stored(root / "_ray" / CELL, 10), 240, "the checkpoint at iteration 10")
    finally:
        driver.kill()  # SIGKILL: no cleanup of any kind
        driver.wait()
        killed_at = time.time()
    assert is_file(baseline / "record.json") and not is_file(interrupted / "record.json")
    first = read_text(baseline / "record.json")
    _wait_for(lambda: not train_worker_pids(ray_session.address), 120, "the dead driver's workers to go")
    (interrupted.local_path() / ".record.json.partial-99999-deadbeef").write_text('{"half')  # a record cut short

    assert main([str(path), "--results", results, "--resume"]) == 0
    assert read_text(baseline / "record.json") == first  # not retrained
    assert read_text(baseline / "train.log").count("start: ") == 1
    text = read_text(interrupted / "train.log")
    resumed = [int(m) for m in re.findall(r"resumed from \S+ at iteration (\d+)", text)]
    assert len(resumed) == 1 and 10 <= resumed[0] < 20, text
    record = json.loads(read_text(interrupted / "record.json"))
    assert record["resumed_from_iteration"] == resumed[0]
    equal = same_iou(record["per_class_iou"], uninterrupted)
    report("driver SIGKILLed, then --resume", "local", recovery_figures(text, killed_at), equal)
    assert equal
    results_files = sorted(n for n in list_files(interrupted) if not n.startswith("events.out.tfevents"))
    assert results_files == ["model.pt", "record.json", "train.log"]  # and TensorBoard event files
    local = root.local_path()
    assert [p for p in local.rglob("*") if "partial" in p.name] == []
    checkpoints = [p for p in (local / "_ray" / CELL).rglob("iter_*/*") if p.is_file()]
    modes = {oct(stat.S_IMODE(p.stat().st_mode)) for p in [*interrupted.local_path().iterdir(), *checkpoints]}
    assert checkpoints and modes == {"0o644"}
