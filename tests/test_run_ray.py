"""One tiny experiment end to end through Ray Train (2 DDP workers on gloo), records and tables."""
import json

import pytest
import torch

from harness.run import main
from harness.tblog import read_scalars
from tests.conftest import tiny_experiment

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_tiny_experiment_through_ray(ray_session, write_experiment, tmp_path, capfd):
    # both cells at once, each 2 DDP workers of half a CPU (the test cluster has 2 CPUs)
    exp = tiny_experiment("tiny", train={"log_interval": 1}, findings="IDR helps here: see docs/findings.md",
                          scaling={"num_workers": 2, "cpus_per_worker": 0.5, "max_concurrent_cells": 2})
    path = write_experiment(exp)
    results = tmp_path / "results"
    assert main([str(path), "--results", str(results)]) == 0
    out, err = capfd.readouterr()
    cells = sorted((results / "tiny" / "cells").iterdir())
    assert [c.name for c in cells] == ["fcn+idr_context_scenes_resnet18_s0", "fcn_context_scenes_resnet18_s0"]
    for cell in cells:
        record = json.loads((cell / "record.json").read_text())
        assert 0.0 <= record["metrics"]["mIoU"] <= 100.0
        assert set(record["per_class_iou"]) >= {"boat", "car", "sheep", "goat"}
        assert record["world_size"] == 2
        assert record["params"] > 0 and record["versions"]["torch"]
        assert record["complexity"]["gflops"] > 0 and record["complexity"]["input_size"] == [32, 32]
        assert record["config"]["seed"] == 0 and record["config"]["idr"] == cell.name.startswith("fcn+idr")
        state = torch.load(cell / "model.pt", weights_only=True)
        assert ("head.relations_mean" in state["model"]) == cell.name.startswith("fcn+idr")
        log = (cell / "train.log").read_text()
        assert "iter 3/3" in log and "eval on val" in log
    assert not list((results / "tiny" / "cells").glob("*/.record.json.*"))  # no temp files left behind
    table = (results / "tiny" / "table.md").read_text()
    assert "| fcn | context_scenes | resnet18 |" in table and "—" not in table.split("###")[0]
    assert "boat" in table and "goat" in table
    assert (results / "tiny" / "table.csv").read_text().startswith("framework,dataset,backbone")
    assert "baseline mIoU" in out
    # the end of the run: the summary, the main table, where the paper-layout tables are
    assert "paper-layout tables (" in out and str(results / "tiny" / "tables") in out and "Swin" not in out
    assert out.rstrip().splitlines()[-1] == "findings: IDR helps here: see docs/findings.md"  # after the tables

    # TensorBoard: every cell's event files, written by the driver; not Ray Tune's hint at its own folder
    assert "tensorboard --logdir" not in out + err
    for cell in cells:
        events = read_scalars(cell)
        assert [step for step, _ in events["loss/total"]] == [1, 2, 3] and [s for s, _ in events["lr"]] == [1, 2, 3]
        assert events["grad_norm"][0][1] > 0
        assert ("idr/pick_count_entropy" in events) == cell.name.startswith("fcn+idr")
        record = json.loads((cell / "record.json").read_text())
        assert events["val/mIoU"] == [(3, pytest.approx(record["metrics"]["mIoU"], rel=1e-6))]
    assert not list((results / "tiny" / "_ray").rglob("events.out.tfevents.*"))

    # a second run finds both cells complete and trains nothing
    assert main([str(path), "--results", str(results)]) == 0
    assert "2 cells, 2 already complete" in capfd.readouterr().out


def test_grid_isolates_a_failing_cell(ray_session, write_experiment, tmp_path):
    # a Tune grid of 2 cells at once; a global batch of 16 from 8 images fails in the worker
    exp = tiny_experiment(
        "grid",
        grid={"idr": [True], "sweep": {"train.batch_size": [4, 16]}},
        train={"iterations": 2, "batch_size": 4},
        scaling={"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_cells": 2},
    )
    path = write_experiment(exp)
    results = tmp_path / "results"
    assert main([str(path), "--results", str(results)]) == 1
    cells = results / "grid" / "cells"
    assert (cells / "fcn+idr_context_scenes_resnet18_s0_batch_size4" / "record.json").is_file()
    for name in ("fcn+idr_context_scenes_resnet18_s0_batch_size16",):
        assert not (cells / name / "record.json").exists()
        assert "give no batch of 16" in (cells / name / "train.log").read_text()
