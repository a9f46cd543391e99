"""Checkpoints through Ray Train: `--resume` continues a cell and reaches the same result."""
import json

import pytest

from harness.run import main
from tests.conftest import tiny_experiment

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_resume_continues_from_the_newest_checkpoint(ray_session, write_experiment, tmp_path):
    exp = tiny_experiment(
        "resumable",
        grid={"idr": [True]},
        train={"iterations": 6, "batch_size": 4, "log_interval": 1, "checkpoint_interval": 2},
        scaling={"num_workers": 2, "cpus_per_worker": 1},
    )
    path = write_experiment(exp)
    results = tmp_path / "results"
    assert main([str(path), "--results", str(results)]) == 0
    cell = results / "resumable" / "cells" / "fcn+idr_context_scenes_resnet18_s0"
    first = json.loads((cell / "record.json").read_text())
    checkpoints = sorted((results / "resumable" / "_ray" / cell.name).glob("iter_*"))
    assert [c.name for c in checkpoints] == ["iter_00000002", "iter_00000004"]
    assert {p.name for p in checkpoints[-1].iterdir()} >= {"model.pt", "rng_rank0.pt", "rng_rank1.pt"}

    # pretend the run died after its last checkpoint: no record, then --resume
    (cell / "record.json").unlink()
    (cell / "train.log").unlink()
    assert main([str(path), "--results", str(results), "--resume"]) == 0
    second = json.loads((cell / "record.json").read_text())
    assert "at iteration 4" in (cell / "train.log").read_text()
    assert second["per_class_iou"] == first["per_class_iou"]
    assert second["metrics"] == first["metrics"]
