"""Checks for runs on a Ray cluster of several nodes.

Ray Train workers upload checkpoints to `<results>/<experiment>/_ray` themselves, so on more
than one node that folder must be on a filesystem every node mounts (NFS, a cluster FS) or on
an object store every node reaches with its own credentials: otherwise a checkpoint lands on
the node that wrote it and a retry on another node cannot find it. `check_shared_results`
proves it before any training: the driver writes a probe file, a zero-CPU task pinned to each
node reads it and writes an answer beside it, and the driver reads every answer back.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from harness.storage import Location, delete_file, is_file, list_files, parse_location, read_text, write_text

PROBE_PREFIX = ".idrbench-probe-"
PROBE_TIMEOUT_S = 120.0


class ClusterError(Exception):
    """The cluster cannot run this plan; the message is the one-line report."""


def probe_on_node(probe: str, token: str, node_id: str) -> bool:
    """Runs on `node_id`: whether it sees the driver's probe file (a path or URI); if so, it answers beside it."""
    from harness.storage import retried

    location = parse_location(probe)
    try:
        seen = retried(lambda: read_text(location), f"reading {location}", seconds=5) == token
        if seen:
            write_text(location.parent / f"{location.name}-{node_id}", token)
    except OSError:  # cannot reach the endpoint, no credentials, or not mounted here
        return False
    return seen


def nodes_missing_the_folder(
    folder: Path | Location, node_ids: list[str], run_on_nodes: Callable[[str, str, list[str]], list[bool]]
) -> list[str]:
    """The nodes that cannot read a file the driver writes in `folder`, or whose answer the driver cannot read."""
    folder = parse_location(folder)
    if folder.is_local:
        folder.local_path().mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = folder / f"{PROBE_PREFIX}{token}"
    write_text(probe, token)
    try:
        seen = run_on_nodes(probe.uri, token, node_ids)
        answered = [folder / f"{probe.name}-{node}" for node in node_ids]
        return [node for node, ok, answer in zip(node_ids, seen, answered) if not (ok and is_file(answer))]
    finally:
        for name in list_files(folder):
            if name.startswith(f"{PROBE_PREFIX}{token}"):
                delete_file(folder / name)


def _run_on_ray_nodes(probe: str, token: str, node_ids: list[str]) -> list[bool]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(probe_on_node)
    refs = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(probe, token, node)
        for node in node_ids
    ]
    return ray.get(refs, timeout=PROBE_TIMEOUT_S)


def alive_node_ids() -> list[str]:
    import ray

    return [node["NodeID"] for node in ray.nodes() if node.get("Alive")]


def check_shared_results(folder: Path | Location) -> None:
    """With more than one Ray node, raise ClusterError unless every node reads and writes `folder`."""
    node_ids = alive_node_ids()
    if len(node_ids) < 2:
        return
    folder = parse_location(folder)
    missing = nodes_missing_the_folder(folder, node_ids, _run_on_ray_nodes)
    if missing and not folder.is_local:
        raise ClusterError(
            f"--results {folder}: {len(missing)} of {len(node_ids)} Ray nodes cannot reach the endpoint or read and "
            f"write there with their credentials: {', '.join(n[:12] for n in missing)}; give every node network "
            "access and credentials (environment, ~/.aws, a role; see docs/cluster.md)"
        )
    if missing:
        raise ClusterError(
            f"--results {folder}: not on a filesystem every node mounts ({len(missing)} of {len(node_ids)} Ray nodes "
            f"cannot read or write it: {', '.join(n[:12] for n in missing)}); checkpoints are written by the workers, "
            "so put --results on shared storage (see docs/cluster.md)"
        )
