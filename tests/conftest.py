"""Shared fixtures: offline hubs, one Ray session for the whole test run, tiny experiments."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("IDRBENCH_CACHE_DIR", tempfile.mkdtemp(prefix="idrbench-test-cache-"))  # FLOP counts
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing-key-id")  # fake credentials for the loopback S3 server
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing-secret-value")  # (fixture s3_server), read by Ray's workers too
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup on a machine without one
os.environ["RAY_AUTH_MODE"] = "token"  # read when ray is imported: set before any test imports it

REPO = Path(__file__).resolve().parent.parent


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`, pyproject.toml) every test that uses the shared
    Ray session runs in one worker, in order ("ray"); the tests that start clusters of their own run
    in order in another group ("ray-own"), beside it. Each cluster is stopped, and its workers are
    found, through its own processes only (`stop_cluster`, `train_worker_pids`)."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif item.get_closest_marker("ray"):  # its own clusters, stopped by their own processes
            item.add_marker(pytest.mark.xdist_group("ray-own"))


def train_worker_pids(address: str) -> list[int]:
    """Pids of the Ray Train workers of the cluster at `address` (its raylets' children), never those
    of another Ray on the machine."""
    import ray  # noqa: F401  (puts the psutil Ray bundles on the path)
    import psutil

    from tests.recovery import train_workers_under

    gcs = re.compile(rf"--gcs-address=\S+:{address.rsplit(':', 1)[1]}(\s|$)")
    raylets = [p.pid for p in psutil.process_iter(["cmdline"])
               if "raylet" in " ".join(p.info["cmdline"] or []) and gcs.search(" ".join(p.info["cmdline"] or []))]
    return train_workers_under(raylets)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RayCluster:
    address: str  # GCS address for ray.init / harness.run --address
    dashboard: str  # job submission address


def stop_cluster(temp_dir: str, port: int) -> None:
    """Kill the processes of the cluster started with `temp_dir` and GCS `port`, and their children.

    Not `ray stop --force`, which kills every Ray process on the machine: another test run's
    cluster, or a user's own `harness.run`, would die with it."""
    import psutil

    marks = (temp_dir, f":{port}")
    own = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(mark in cmdline for mark in marks) and proc.pid != os.getpid():
            own.append(proc)
    tree = {p.pid: p for proc in own for p in [proc, *_children(proc)]}
    for proc in tree.values():
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(tree.values()), timeout=30)


def _children(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray cluster for all tests that need it: `ray start --head` on 127.0.0.1
    with token authentication and the dashboard on loopback (starting Ray costs ~20 s)."""
    import ray

    env = dict(os.environ)
    subprocess.run(["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    port, dash, client = _free_port(), _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="idrbench-ray-")
    # every port its own: a cluster another test starts beside it takes Ray's default agent ports,
    # and a head whose job agent could not bind refuses `ray job submit`
    agent_ports = {
        flag: _free_port() for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                        "--runtime-env-agent-port", "--metrics-export-port")
    }
    start = [
        "ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
        *(f"{flag}={value}" for flag, value in agent_ports.items()),
        f"--temp-dir={temp_dir}", "--num-cpus=2", "--disable-usage-stats",
    ]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    cluster = RayCluster(address=f"127.0.0.1:{port}", dashboard=f"http://127.0.0.1:{dash}")
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield cluster
    finally:
        ray.shutdown()
        stop_cluster(temp_dir, port)


def tiny_experiment(name: str, **sections) -> dict:
    """A seconds-long experiment on 32-pixel context scenes."""
    exp = {
        "name": name,
        "grid": {"frameworks": ["fcn"], "datasets": ["context_scenes"], "idr": [False, True], "seeds": [0]},
        "model": {
            "backbone": "resnet18",
            "feats_channels": 16,
            "head_channels": 16,
            "aux_channels": 8,
            "refine_channels": 8,
        },
        "train": {"iterations": 3, "batch_size": 4, "log_interval": 1},
        "eval": {"batch_size": 4},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "data": {"root": "datasets", "options": {"context_scenes": {"num_train": 8, "num_val": 4, "image_size": 32}}},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            exp[key] = {**exp.get(key, {}), **value}
        else:
            exp[key] = value
    return exp


@pytest.fixture
def write_experiment(tmp_path):
    def write(exp: dict, name: str = "exp.yaml") -> Path:
        exp = dict(exp)
        exp["data"] = {**exp["data"], "root": str(tmp_path / "datasets")}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(exp, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback for the session (fake credentials in the environment: the AWS chain)."""
    pytest.importorskip("moto.server")
    from tests.s3server import S3Server

    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()
