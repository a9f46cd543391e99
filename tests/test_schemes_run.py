"""Every context scheme of issue 23 builds from an experiment file and trains a few iterations through
harness.run on CPU: the similarity-driven ones, MCIBI++ on the four frameworks, ISNet and MCIBI, in one
run (one Ray Tune grid, two cells at once) so the suite pays Ray's per-run start-up once."""
import json

import pytest
import torch

from harness.config import ConfigError, expand_cells, load_experiment
from harness.official_schemes import SIMILARITY_SCHEMES
from harness.run import main
from tests.conftest import tiny_experiment

SCHEMES = [*SIMILARITY_SCHEMES, "fcn_mcibipp", "pspnet_mcibipp", "deeplabv3_mcibipp", "upernet_mcibipp",
           "isnet", "mcibi"]


def test_idr_axis_skips_frameworks_that_carry_a_plugin(write_experiment):
    exp = load_experiment(write_experiment(tiny_experiment("axis", grid={"frameworks": ["fcn", "fcn_mcibipp"]})))
    names = [(c.framework, c.idr) for c in expand_cells(exp)]
    assert names == [("fcn", False), ("fcn", True), ("fcn_mcibipp", False)]
    with pytest.raises(ConfigError, match="'isnet' carries its own context module"):
        load_experiment(write_experiment(tiny_experiment("axis", grid={"frameworks": ["isnet"], "idr": [True]})))


@pytest.mark.ray
@pytest.mark.slow
def test_every_scheme_trains_through_harness_run(ray_session, write_experiment, tmp_path):
    exp = tiny_experiment("schemes", grid={"frameworks": SCHEMES, "idr": [False]}, train={"iterations": 2, "log_interval": 1},
                          scaling={"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_cells": 2})
    path = write_experiment(exp)
    results = tmp_path / "results"
    assert main([str(path), "--results", str(results), "--address", ray_session.address]) == 0
    for framework in SCHEMES:
        cell = results / "schemes" / "cells" / f"{framework}_context_scenes_resnet18_s0"
        record = json.loads((cell / "record.json").read_text())
        assert record["config"]["framework"] == framework and record["params"] > 0
        assert 0.0 <= record["metrics"]["mIoU"] <= 100.0 and "iter 2/2" in (cell / "train.log").read_text()
        state = torch.load(cell / "model.pt", weights_only=True)["model"]
        if framework.endswith("_mcibipp"):  # the memory moved from its (0, 1) start and was saved
            memory = state["head.memory.memory"]
            assert memory.shape[1] == 2 and not torch.equal(memory[:, 1], torch.ones(len(memory)))
        if framework == "mcibi":  # the class vectors left their zero start and were saved
            assert state["head.memory.memory"].abs().sum() > 0
