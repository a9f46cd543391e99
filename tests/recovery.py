"""Figures of a cell's recovery from a fault, read from its train.log (lines stamped to the second):
time to recover, iterations repeated; and whether two per-class IoUs are equal."""
from __future__ import annotations

import math
import os
import re
import time

STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$", re.MULTILINE)
ITERATION = re.compile(r"^iter (\d+)/\d+ ")
RESUMED = re.compile(r"^resumed from \S+ at iteration (\d+)")


def stamped_lines(text: str) -> list[tuple[float, str]]:
    """(seconds since the epoch, line) of each stamped log line (the driver writes local time)."""
    return [(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")), line) for stamp, line in STAMPED.findall(text)]


def recovery_figures(text: str, fault_at: float) -> dict[str, float | int]:
    """Seconds from the fault to the cell training again (its first "resumed from" line after it),
    and iterations trained again: the newest iteration logged before the fault less the one resumed
    from (a lower bound, at the log interval's grain)."""
    lines = stamped_lines(text)
    reached = max((int(m.group(1)) for t, line in lines if t <= fault_at and (m := ITERATION.match(line))), default=0)
    resumed = [(t, int(m.group(1))) for t, line in lines if t >= math.floor(fault_at) and (m := RESUMED.match(line))]
    assert resumed, "no resumption logged after the fault"
    at, iteration = resumed[0]
    return {"time_to_recover_s": max(0.0, at - fault_at), "iterations_repeated": max(0, reached - iteration),
            "resumed_from": iteration}


def same_iou(first: dict[str, float], second: dict[str, float]) -> bool:
    """Equal per-class IoU, class by class, exactly (NaN, a class absent from both, counts as equal)."""
    def is_nan(value) -> bool:
        return isinstance(value, float) and math.isnan(value)

    return first.keys() == second.keys() and all(
        first[k] == second[k] or (is_nan(first[k]) and is_nan(second[k])) for k in first)


def report(test: str, storage: str, figures: dict, equal: bool) -> str:
    """One line for the test's output (`pytest -s`; also appended to the file named by
    $IDRBENCH_RECOVERY_FIGURES, where set): the figures the issue asks for."""
    line = (f"recovery figures: {test} [{storage}]: time to recover {figures['time_to_recover_s']:.0f}s, "
            f"iterations repeated {figures['iterations_repeated']} (resumed from {figures['resumed_from']}), "
            f"per-class IoU equal to the uninterrupted run: {equal}")
    print(line, flush=True)
    figures_file = os.environ.get("IDRBENCH_RECOVERY_FIGURES")
    if figures_file:
        with open(figures_file, "a") as out:
            out.write(line + "\n")
    return line


def checkpoint_stored(cell_storage, iteration: int) -> bool:
    """Whether the checkpoint at `iteration` is complete in storage (a path or an object-store
    location): every rank's manifest there, and every file it lists at its full size. Ray Train
    copies a checkpoint's files in no set order, so a manifest alone does not say so."""
    import json

    from harness.storage import list_files, read_text
    from harness.train import checkpoint_name, manifest_name

    folder = cell_storage / checkpoint_name(iteration)
    present = list_files(folder)
    if manifest_name(0) not in present:
        return False
    try:
        world_size = int(json.loads(read_text(folder / manifest_name(0)))["world_size"])
        manifests = [json.loads(read_text(folder / manifest_name(rank))) for rank in range(world_size)]
    except (OSError, ValueError, KeyError):
        return False
    return all(present.get(name) == size for manifest in manifests for name, size in manifest["files"].items())


def train_workers_under(raylet_pids: list[int]) -> list[int]:
    """Pids of the Ray Train workers started by these raylets (their descendants), so a test or the
    chaos benchmark strikes its own cluster's workers, never another Ray's on the machine."""
    import ray  # noqa: F401  (puts the psutil Ray bundles on the path)
    import psutil

    found = []
    for pid in raylet_pids:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            try:
                if "RayTrainWorker" in " ".join(child.cmdline()):
                    found.append(child.pid)
            except psutil.Error:
                continue
    return found
