"""Reliability through `harness.run` on Ray: divergence, bad data, a killed driver."""
from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time

import pytest

from harness.run import main
from tests.conftest import REPO, tiny_experiment

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


def _train_worker_pids() -> list[int]:
    from tests.test_cluster import _train_worker_pids as pids

    return pids()


def _wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_killed_driver_resumes_without_retraining_or_duplicates(ray_session, write_experiment, tmp_path):
    exp = tiny_experiment(
        "driverloss",
        train={"iterations": 2, "batch_size": 4, "log_interval": 5},
        overrides=[{"match": {"idr": True}, "set": {"train.iterations": 20, "train.checkpoint_interval": 5}}],
    )
    path = write_experiment(exp)
    results = tmp_path / "results"
    cells = results / "driverloss" / "cells"
    baseline, interrupted = cells / "fcn_context_scenes_resnet18_s0", cells / CELL
    command = [sys.executable, "-m", "harness.run", str(path), "--results", str(results), "--address", ray_session.address]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = interrupted / "train.log"
    try:
        _wait_for(lambda: log.is_file() and "checkpoint at iteration 10" in log.read_text(), 240, "a checkpoint")
    finally:
        driver.kill()  # SIGKILL: no cleanup of any kind
        driver.wait()
    assert (baseline / "record.json").is_file() and not (interrupted / "record.json").exists()
    first = (baseline / "record.json").read_text()
    _wait_for(lambda: not _train_worker_pids(), 120, "the dead driver's workers to go")
    (interrupted / ".record.json.partial-99999-deadbeef").write_text('{"half')  # a record cut short

    assert main([str(path), "--results", str(results), "--resume"]) == 0
    assert (baseline / "record.json").read_text() == first  # not retrained
    assert (baseline / "train.log").read_text().count("start: ") == 1
    text = log.read_text()
    resumed = [int(m) for m in re.findall(r"resumed from \S+ at iteration (\d+)", text)]
    assert len(resumed) == 1 and 10 <= resumed[0] < 20, text
    assert json.loads((interrupted / "record.json").read_text())["resumed_from_iteration"] == resumed[0]
    results_files = sorted(p.name for p in interrupted.iterdir() if not p.name.startswith("events.out.tfevents"))
    assert results_files == ["model.pt", "record.json", "train.log"]  # and TensorBoard event files
    assert [p for p in results.rglob("*") if "partial" in p.name] == []
    checkpoints = [p for p in (results / "driverloss" / "_ray" / CELL).rglob("iter_*/*") if p.is_file()]
    assert checkpoints and {oct(stat.S_IMODE(p.stat().st_mode)) for p in [*interrupted.iterdir(), *checkpoints]} == {"0o644"}
