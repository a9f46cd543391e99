"""Cluster use: `ray job submit` of an experiment, and a worker killed mid-training."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from harness.config import load_experiment
from harness.run import main, resolve_cells
from harness.train import PrintReporter, run_cell
from tests.conftest import REPO, tiny_experiment, train_worker_pids

pytestmark = [pytest.mark.ray, pytest.mark.slow]

JOB_EXCLUDES = ["datasets/", "results/", ".git/", "*.egg-info/", "__pycache__/", ".venv/", "venv/"]


def test_ray_job_submit_runs_an_experiment(ray_session, tmp_path):
    exp = tiny_experiment("job", grid={"idr": [True]})
    exp["data"]["root"] = str(tmp_path / "datasets")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(exp))
    results = tmp_path / "results"
    command = [
        "ray", "job", "submit", "--address", ray_session.dashboard, "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps({"excludes": JOB_EXCLUDES}),
        "--", "python", "-m", "harness.run", str(path), "--results", str(results),
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    for _ in range(12):  # the job agent of a just-started head can lag behind the dashboard
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        if "No available agent to submit job" not in done.stderr:
            break
        time.sleep(5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    record = json.loads((results / "job" / "cells" / "fcn+idr_context_scenes_resnet18_s0" / "record.json").read_text())
    assert record["metrics"]["mIoU"] >= 0


def test_killed_worker_resumes_from_its_checkpoint(ray_session, write_experiment, tmp_path):
    exp = tiny_experiment(
        "crash",
        grid={"idr": [True]},
        train={"iterations": 40, "batch_size": 4, "log_interval": 5, "checkpoint_interval": 10, "max_failures": 1},
    )
    path = write_experiment(exp)
    results = tmp_path / "results"
    log = results / "crash" / "cells" / "fcn+idr_context_scenes_resnet18_s0" / "train.log"
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("code", main([str(path), "--results", str(results)])))
    runner.start()
    killed = []
    deadline = time.monotonic() + 300
    while runner.is_alive() and not killed and time.monotonic() < deadline:
        if log.is_file() and "checkpoint at iteration 20" in log.read_text():
            for pid in train_worker_pids(ray_session.address):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.2)
    runner.join(timeout=600)
    assert killed, "the run ended before a worker could be killed"
    assert outcome["code"] == 0
    text = log.read_text()
    assert "resumed from" in text
    record = json.loads((log.parent / "record.json").read_text())
    # the newest checkpoint Ray Train had registered when the worker died (10 or 20)
    assert record["resumed_from_iteration"] in (10, 20)

    # the same cell uninterrupted, in a plain process, ends with the same metrics
    cell = resolve_cells(load_experiment(path))[0]
    uninterrupted = run_cell(cell, PrintReporter(quiet=True))
    assert record["per_class_iou"] == pytest.approx(uninterrupted["metrics"]["per_class_iou"], nan_ok=True)
