"""Figures of a cell's recovery from a fault, read from its train.log (lines stamped to the second):
time to recover, iterations repeated; and whether two per-class IoUs are equal."""
from __future__ import annotations

import math
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
    """One line for the test's output (`pytest -s`): the figures the issue asks for."""
    line = (f"recovery figures: {test} [{storage}]: time to recover {figures['time_to_recover_s']:.0f}s, "
            f"iterations repeated {figures['iterations_repeated']} (resumed from {figures['resumed_from']}), "
            f"per-class IoU equal to the uninterrupted run: {equal}")
    print(line, flush=True)
    return line
