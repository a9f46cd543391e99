"""Several Ray nodes on one machine: shared results storage, spread placement, a lost node."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
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


def _run_driver(path: Path, results: str, address: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "harness.run", str(path), "--results", results, "--address", address]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(root, iteration: int, driver: subprocess.Popen, seconds: float) -> None:
    """Until the cell's checkpoint at `iteration` is complete in storage."""
    from tests.recovery import checkpoint_stored

    deadline = time.monotonic() + seconds
    while not checkpoint_stored(root / "_ray" / CELL, iteration):
        assert driver.poll() is None, f"the run ended before its checkpoint at iteration {iteration}"
        assert time.monotonic() < deadline, f"timed out waiting for the checkpoint at iteration {iteration}"
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.ray
def test_cell_spread_over_two_nodes_survives_losing_one(write_experiment, tmp_path, s3_server):
    """A cell spread over two nodes; once it has a checkpoint at iteration 8 the second node's raylet and
    workers die at once and a replacement joins. With results on a local disk, then on the loopback S3
    server, it ends with the per-class IoU of the uninterrupted run (one reference run, local)."""
    from ray.cluster_utils import Cluster

    from harness.storage import list_files, parse_location, read_text
    from tests.recovery import recovery_figures, report, same_iou

    exp = tiny_experiment(
        "twonodes",
        grid={"idr": [True]},
        train={"iterations": 16, "batch_size": 4, "log_interval": 4, "checkpoint_interval": 4, "max_failures": 2},
        scaling={"num_workers": 2, "cpus_per_worker": 1, "placement": "spread"},
    )
    path = write_experiment(exp)
    bucket = f"twonodes-{uuid.uuid4().hex[:8]}"
    s3_server.make_bucket(bucket)
    faulty = {"local": str(tmp_path / "results"), "s3": s3_server.uri(bucket, "results")}
    quick_health_checks = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}  # notice the loss in ~3 s
    head = {"num_cpus": 2, "include_dashboard": False, "_system_config": quick_health_checks}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    runs = {}
    try:
        second = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        reference = _run_driver(path, str(tmp_path / "reference"), cluster.address)
        assert reference.wait(timeout=240) == 0, _tails(reference, tmp_path / "reference")
        for storage, results in faulty.items():
            root = parse_location(results) / "twonodes"
            driver = _run_driver(path, results, cluster.address)
            _wait_for_checkpoint(root, 8, driver, 180)
            lost = second
            cluster.remove_node(lost, allow_graceful=False)  # the raylet and its workers die at once
            lost_at = time.time()
            second = cluster.add_node(num_cpus=2)  # a replacement joins
            assert driver.wait(timeout=240) == 0, _tails(driver, tmp_path / "results")
            runs[storage] = (root, lost, lost_at)
    finally:
        cluster.shutdown()

    reference_cell = tmp_path / "reference" / "twonodes" / "cells" / CELL
    expected = json.loads((reference_cell / "record.json").read_text())
    assert _worker_nodes((reference_cell / "train.log").read_text())[0][0] != _worker_nodes(
        (reference_cell / "train.log").read_text())[0][1], "the two workers shared a node"
    for storage, (root, lost, lost_at) in runs.items():
        cell = root / "cells" / CELL
        text = read_text(cell / "train.log")
        starts = _worker_nodes(text)
        assert starts[0][0] != starts[0][1] and lost.node_id in starts[0], starts
        assert re.search(r"resumed from \S+ at iteration [48]\n", text), text
        assert len(starts) >= 2  # started again after the node loss
        finished = json.loads(read_text(cell / "record.json"))
        equal = same_iou(finished["per_class_iou"], expected["per_class_iou"])
        report("node lost and replaced mid-cell", storage, recovery_figures(text, lost_at), equal)
        assert equal
        results_files = sorted(n for n in list_files(cell) if not n.startswith("events.out.tfevents"))
        assert results_files == ["model.pt", "record.json", "train.log"]  # and TensorBoard event files


def _tails(driver: subprocess.Popen, results: Path) -> str:
    logs = "".join(p.read_text()[-3000:] for p in results.rglob("train.log"))
    return driver.stdout.read()[-2000:] + "\n--- train.log:\n" + logs


def _worker_nodes(log: str) -> list[tuple[str, str]]:
    """(rank 0 node, rank 1 node) of each start of the cell's workers, from the driver's log text."""
    found = re.findall(r"worker rank (\d) of 2 on node (\w+)", log)
    starts: list[dict[str, str]] = []
    for rank, node in found:
        if not starts or rank in starts[-1]:
            starts.append({})
        starts[-1][rank] = node
    return [(s.get("0", ""), s.get("1", "")) for s in starts]
