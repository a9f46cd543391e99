"""Chaos, measured: a grid on a simulated two-node Ray cluster, results on a loopback S3 server,
faults injected from a seeded schedule.

    python benchmarks/chaos.py [--faults 10] [--seed 0] [--cells 6] [--iterations 30]

First the grid runs fault-free (the reference, its own prefix); then again while faults strike at
random moments: a training worker SIGKILLed, the second node's raylet killed and a new node added,
the S3 server stopped for a few seconds, the driver SIGKILLed and started again with `--resume`.
Prints faults injected (by kind), faults survived, cells finished, records lost (a record seen
and later gone), records whose per-class IoU differs from the reference, iterations recomputed
(iteration log lines beyond one per iteration, from the cells' train.log: a lower bound, since a
killed driver loses the lines it had not uploaded) and both wall times.
Exit 0 when every fault was survived, no record was lost and none differs. Needs the test
extra (moto). Bounded: `--timeout` seconds for the faulty run (default 900).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "chaos-key-id")  # fake credentials for the loopback server
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "chaos-secret")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

FAULT_KINDS = ("worker_kill", "node_replace", "s3_outage", "driver_kill")
OUTAGE_SECONDS = 4.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=10, help="faults to inject (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")
    parser.add_argument("--cells", type=int, default=6, help="cells in the grid (even: baseline and +IDR per seed)")
    parser.add_argument("--iterations", type=int, default=30, help="training iterations per cell")
    parser.add_argument("--gap", type=float, nargs=2, default=(6.0, 14.0), metavar=("MIN", "MAX"),
                        help="seconds between faults, drawn uniformly (default 6 14)")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on the faulty run, seconds")
    parser.add_argument("--schedule", default=None, metavar="KIND,KIND,...",
                        help=f"the kinds of fault in this order (of {', '.join(FAULT_KINDS)}); default: drawn by the seed")
    return parser.parse_args(argv)


def experiment(cells: int, iterations: int, data_root: Path) -> dict:
    """`cells` tiny cells (FCN with and without IDR, seeds 0..cells/2-1) checkpointing every 5 iterations."""
    return {
        "name": "chaos",
        "grid": {"frameworks": ["fcn"], "datasets": ["context_scenes"], "idr": [False, True],
                 "seeds": list(range(max(1, cells // 2)))},
        "model": {"backbone": "resnet18", "feats_channels": 16, "head_channels": 16, "aux_channels": 8,
                  "refine_channels": 8},
        "train": {"iterations": iterations, "batch_size": 4, "log_interval": 1, "checkpoint_interval": 5,
                  "max_failures": 20},
        "eval": {"batch_size": 4},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_cells": 2},
        "data": {"root": str(data_root), "options": {"context_scenes": {"num_train": 8, "num_val": 4, "image_size": 32}}},
    }


class Chaos:
    """The cluster, the S3 server, the driver, and the faults done to them."""

    def __init__(self, cluster, server, exp_path: Path, uri: str, rng: random.Random) -> None:
        self.cluster = cluster
        self.server = server
        self.exp_path = exp_path
        self.uri = uri
        self.rng = rng
        self.second = cluster.list_all_nodes()[1]
        self.driver: subprocess.Popen | None = None
        self.injected: Counter = Counter()
        self.driver_log = Path(tempfile.mkstemp(prefix="chaos-driver-", suffix=".log")[1])

    def start_driver(self, resume: bool) -> None:
        command = [sys.executable, "-m", "harness.run", str(self.exp_path), "--results", self.uri,
                   "--address", self.cluster.address] + (["--resume"] if resume else [])
        with self.driver_log.open("a") as log:
            self.driver = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def train_workers(self) -> list[int]:
        """Pids of this cluster's Ray Train workers (never another Ray's on the machine)."""
        from tests.recovery import train_workers_under

        raylets = [info.process.pid for node in self.cluster.list_all_nodes()
                   for info in node.all_processes.get("raylet", [])]
        return train_workers_under(raylets)

    def inject(self, kind: str) -> bool:
        """Do one fault; False when there was nothing to strike (no worker running)."""
        if kind == "worker_kill":
            workers = self.train_workers()
            if not workers:
                return False
            os.kill(self.rng.choice(workers), signal.SIGKILL)
        elif kind == "node_replace":
            self.cluster.remove_node(self.second, allow_graceful=False)
            self.second = self.cluster.add_node(num_cpus=2)
        elif kind == "s3_outage":
            self.server.stop()
            time.sleep(OUTAGE_SECONDS)
            self.server.start()
        elif kind == "driver_kill":
            self.driver.kill()
            self.driver.wait()
            wait_until(lambda: not self.train_workers(), 120)
            self.start_driver(resume=True)
        self.injected[kind] += 1
        return True


def wait_until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def records(location) -> dict[str, dict]:
    from harness.storage import list_files, read_bytes

    cells = location / "cells"
    names = [n for n in list_files(cells) if n.count("/") == 1 and n.endswith("/record.json")]
    return {name.split("/")[0]: json.loads(read_bytes(cells / name)) for name in names}


def recomputed_iterations(location, done: dict[str, dict]) -> int:
    """Iteration log lines of finished cells beyond one per iteration: steps trained again after a fault."""
    from harness.storage import read_text

    extra = 0
    for cell_id, record in done.items():
        text = read_text(location / "cells" / cell_id / "train.log")
        lines = len(re.findall(r" iter \d+/\d+ lr ", text))
        extra += max(0, lines - record["config"]["train"]["iterations"])
    return extra


def run_reference(exp_path: Path, uri: str, address: str) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness.run", str(exp_path), "--results", uri, "--address", address],
                          cwd=REPO, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode


def run_chaos(chaos: Chaos, location, cells: int, schedule: list[str], gap: tuple[float, float], timeout: float) -> dict:
    """Start the grid, strike `faults` times at random moments, keep the driver going; the outcome."""
    seen: set[str] = set()
    start = time.perf_counter()
    chaos.start_driver(resume=False)
    next_fault = time.monotonic() + chaos.rng.uniform(*gap)
    faults = len(schedule)
    schedule = list(schedule)
    while time.perf_counter() - start < timeout:
        seen |= set(records(location))
        ended = chaos.driver.poll() is not None
        if ended and len(seen) >= cells:
            break
        if ended:  # a driver that gave up (a cell failed): the operator's move, --resume
            chaos.start_driver(resume=True)
        if sum(chaos.injected.values()) < faults and time.monotonic() >= next_fault and schedule:
            kind = schedule[0]
            if chaos.inject(kind):
                schedule.pop(0)
                print(f"  {time.perf_counter() - start:6.1f}s fault {sum(chaos.injected.values())}: {kind}", flush=True)
            next_fault = time.monotonic() + chaos.rng.uniform(*gap)
        time.sleep(0.5)
    wall = time.perf_counter() - start
    if chaos.driver.poll() is None:
        chaos.driver.kill()
    return {"wall": wall, "seen": seen, "exit": chaos.driver.wait()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ray.cluster_utils import Cluster

    from harness.storage import parse_location
    from tests.s3server import S3Server

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="idrbench-chaos-"))
    exp_path = work / "chaos.yaml"
    exp_path.write_text(yaml.safe_dump(experiment(args.cells, args.iterations, work / "datasets")))
    cells = 2 * max(1, args.cells // 2)
    server = S3Server()
    server.start()
    bucket = f"chaos-{uuid.uuid4().hex[:8]}"
    server.make_bucket(bucket)
    head = {"num_cpus": 2, "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        print(f"grid of {cells} cells x {args.iterations} iterations on a two-node cluster, results on "
              f"s3://{bucket} (loopback); fault-free reference first", flush=True)
        reference_uri = server.uri(bucket, "reference")
        reference_wall, reference_exit = run_reference(exp_path, reference_uri, cluster.address)
        reference = records(parse_location(reference_uri) / "chaos")
        print(f"reference: exit {reference_exit}, {len(reference)} cells in {reference_wall:.1f}s", flush=True)

        chaos_uri = server.uri(bucket, "chaos")
        location = parse_location(chaos_uri) / "chaos"
        chaos = Chaos(cluster, server, exp_path, chaos_uri, rng)
        kinds = args.schedule.split(",") if args.schedule else [rng.choice(FAULT_KINDS) for _ in range(args.faults)]
        unknown = sorted(set(kinds) - set(FAULT_KINDS))
        if unknown:
            raise SystemExit(f"error: --schedule: unknown fault kind(s) {', '.join(unknown)}")
        outcome = run_chaos(chaos, location, cells, kinds, tuple(args.gap), args.timeout)
        final = records(location)
        recomputed = recomputed_iterations(location, final)
    finally:
        cluster.shutdown()
        server.stop()
    injected = sum(chaos.injected.values())
    lost = sorted(outcome["seen"] - set(final))
    differ = sorted(c for c, r in final.items() if c not in reference or r["per_class_iou"] != reference[c]["per_class_iou"])
    survived = injected if len(final) == cells and not lost else 0
    print(f"faults injected: {injected} ({', '.join(f'{k} {v}' for k, v in sorted(chaos.injected.items()))})")
    print(f"faults survived: {survived}")
    print(f"cells finished: {len(final)} of {cells}")
    print(f"records lost: {len(lost)}{' ' + ', '.join(lost) if lost else ''}")
    print(f"records different from the fault-free run (per-class IoU): {len(differ)}{' ' + ', '.join(differ) if differ else ''}")
    print(f"iterations recomputed: {recomputed} (iteration lines logged twice; a lower bound: a SIGKILLed "
          "driver loses the log lines it had not uploaded yet)")
    print(f"wall time: {outcome['wall']:.1f}s with faults, {reference_wall:.1f}s fault-free "
          f"({outcome['wall'] / reference_wall:.2f}x)")
    print(f"driver log: {chaos.driver_log}")
    ok = injected >= len(kinds) and survived == injected and not lost and not differ and len(final) == cells
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
