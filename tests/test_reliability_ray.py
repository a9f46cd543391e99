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
