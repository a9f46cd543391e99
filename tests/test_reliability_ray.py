"""Reliability through `harness.run` on Ray: divergence, bad data, a killed driver."""
from __future__ import annotations

import pytest

from harness.run import main
from tests.conftest import tiny_experiment

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CELL = "fcn+idr_context_scenes_resnet18_s0"


def test_diverged_cell_fails_once_without_record_or_retry(ray_session, write_experiment, tmp_path, capsys):
    train = {"iterations": 8, "batch_size": 4, "lr": 1e6, "log_interval": 1, "max_failures": 2}
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


def test_bad_file_mid_split_fails_the_cell_without_retry(ray_session, write_experiment, tmp_path, capsys):
    from harness.data import build_dataset
    from tests.test_real_datasets import _truncate

    train = {"iterations": 3, "batch_size": 4, "log_interval": 1, "max_failures": 2}
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
    assert main([str(path), "--results", str(results), "--no-verify"]) == 1
    cell = results / "baddata" / "cells" / CELL
    assert not (cell / "record.json").exists()
    log = (cell / "train.log").read_text()
    assert log.count("start: ") == 1, "the bad file was retried"
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "bad training data at iteration " in errors[0] and f"{bad}: cannot decode image" in errors[0]
