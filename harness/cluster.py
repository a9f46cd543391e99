"""Checks for runs on a Ray cluster of several nodes.

Ray Train workers upload checkpoints to `<results>/<experiment>/_ray` themselves, so on more
than one node that folder must be on a filesystem every node mounts (NFS, a cluster FS):
otherwise a checkpoint lands on the node that wrote it and a retry on another node cannot
find it. `check_shared_results` proves it before any training: the driver writes a probe
file, a zero-CPU task pinned to each node reads it and writes an answer beside it, and the
driver reads every answer back.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from harness.fileio import write_text_atomic

PROBE_PREFIX = ".idrbench-probe-"
PROBE_TIMEOUT_S = 120.0


class ClusterError(Exception):
    """The cluster cannot run this plan; the message is the one-line report."""


def probe_on_node(probe: str, token: str, node_id: str) -> bool:
    """Runs on `node_id`: whether it sees the driver's probe file; if so, it answers beside it."""
    path = Path(probe)
    try:
        seen = path.read_text() == token
    except OSError:
        return False
    if seen:
        write_text_atomic(path.with_name(f"{path.name}-{node_id}"), token)
    return seen


def nodes_missing_the_folder(
    folder: Path, node_ids: list[str], run_on_nodes: Callable[[str, str, list[str]], list[bool]]
) -> list[str]:
    """The nodes that cannot read a file the driver writes in `folder`, or whose answer the driver cannot read."""
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = folder / f"{PROBE_PREFIX}{token}"
    write_text_atomic(probe, token)
    try:
        seen = run_on_nodes(str(probe), token, node_ids)
        answered = [probe.with_name(f"{probe.name}-{node}") for node in node_ids]
        return [node for node, ok, answer in zip(node_ids, seen, answered) if not (ok and answer.is_file())]
    finally:
        for path in folder.glob(f"{PROBE_PREFIX}{token}*"):
            path.unlink(missing_ok=True)


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


def check_shared_results(folder: Path) -> None:
    """With more than one Ray node, raise ClusterError unless every node reads and writes `folder`."""
    node_ids = alive_node_ids()
    if len(node_ids) < 2:
        return
    missing = nodes_missing_the_folder(Path(folder).resolve(), node_ids, _run_on_ray_nodes)
    if missing:
        raise ClusterError(
            f"--results {folder}: not on a filesystem every node mounts ({len(missing)} of {len(node_ids)} Ray nodes "
            f"cannot read or write it: {', '.join(n[:12] for n in missing)}); checkpoints are written by the workers, "
            "so put --results on shared storage (see docs/cluster.md)"
        )
