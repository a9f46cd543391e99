"""Several Ray nodes on one machine: shared results storage, spread placement, a lost node."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cluster import nodes_missing_the_folder, probe_on_node
from tests.conftest import REPO, tiny_experiment

pytestmark = pytest.mark.ray  # its own clusters: never beside the shared session (conftest.py)

CELL = "fcn+idr_context_scenes_resnet18_s0"


def test_a_node_that_does_not_mount_the_results_folder_is_named(tmp_path):
    results = tmp_path / "results"
    elsewhere = tmp_path / "node-b-local-disk"  # what node b sees at the same path: its own empty disk

    def run_on_nodes(probe: str, token: str, node_ids: list[str]) -> list[bool]:
        local = str(elsewhere / Path(probe).name)
        return [probe_on_node(probe if node == "node-a" else local, token, node) for node in node_ids]

    assert nodes_missing_the_folder(results, ["node-a", "node-b"], run_on_nodes) == ["node-b"]
    assert nodes_missing_the_folder(results, ["node-a"], run_on_nodes) == []
    assert list(results.iterdir()) == []  # probes removed


def _run_driver(path: Path, results: Path, address: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "harness.run", str(path), "--results", str(results), "--address", address]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_line(log: Path, text: str, driver: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not (log.is_file() and text in log.read_text()):
        assert driver.poll() is None, f"the run ended before {text!r}"
        assert time.monotonic() < deadline, f"timed out waiting for {text!r}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.ray
def test_cell_spread_over_two_nodes_survives_losing_one(write_experiment, tmp_path):
    from ray.cluster_utils import Cluster

    exp = tiny_experiment(
        "twonodes",
        grid={"idr": [True]},
        train={"iterations": 16, "batch_size": 4, "log_interval": 4, "checkpoint_interval": 4, "max_failures": 2},
        scaling={"num_workers": 2, "cpus_per_worker": 1, "placement": "spread"},
    )
    path = write_experiment(exp)
    quick_health_checks = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}  # notice the loss in ~3 s
    head = {"num_cpus": 2, "include_dashboard": False, "_system_config": quick_health_checks}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        second = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        reference = _run_driver(path, tmp_path / "reference", cluster.address)
        assert reference.wait(timeout=240) == 0, _tails(reference, tmp_path / "reference")

        results = tmp_path / "results"
        log = results / "twonodes" / "cells" / CELL / "train.log"
        driver = _run_driver(path, results, cluster.address)
        _wait_for_line(log, "checkpoint at iteration 8", driver, 180)
        cluster.remove_node(second, allow_graceful=False)  # the raylet and its workers die at once
        cluster.add_node(num_cpus=2)  # a replacement joins
        assert driver.wait(timeout=240) == 0, _tails(driver, results)
    finally:
        cluster.shutdown()

    first_nodes = _worker_nodes(tmp_path / "reference" / "twonodes" / "cells" / CELL / "train.log")
    assert first_nodes[0][0] != first_nodes[0][1], "the two workers shared a node"
    assert second.node_id in first_nodes[0]
    text = log.read_text()
    assert re.search(r"resumed from \S+ at iteration [48]\n", text), text
    assert len(_worker_nodes(log)) >= 2  # started again after the node loss
    finished = json.loads((log.parent / "record.json").read_text())
    expected = json.loads((tmp_path / "reference" / "twonodes" / "cells" / CELL / "record.json").read_text())
    assert finished["per_class_iou"] == expected["per_class_iou"]
    results_files = sorted(p.name for p in log.parent.iterdir() if not p.name.startswith("events.out.tfevents"))
    assert results_files == ["model.pt", "record.json", "train.log"]  # and TensorBoard event files


def _tails(driver: subprocess.Popen, results: Path) -> str:
    logs = "".join(p.read_text()[-3000:] for p in results.rglob("train.log"))
    return driver.stdout.read()[-2000:] + "\n--- train.log:\n" + logs


def _worker_nodes(log: Path) -> list[tuple[str, str]]:
    """(rank 0 node, rank 1 node) of each start of the cell's workers, from the driver's log."""
    found = re.findall(r"worker rank (\d) of 2 on node (\w+)", log.read_text())
    starts: list[dict[str, str]] = []
    for rank, node in found:
        if not starts or rank in starts[-1]:
            starts.append({})
        starts[-1][rank] = node
    return [(s.get("0", ""), s.get("1", "")) for s in starts]
