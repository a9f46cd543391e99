"""Wall-clock marks of one `harness.run` invocation's phases, for benchmarks/bench_overhead.py.

Marks from Ray workers travel to the driver through the progress hub; the driver writes all of
them as JSON ([name, unix time] pairs) to the file named by $IDRBENCH_PHASES, if set.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

PHASES_ENV = "IDRBENCH_PHASES"
_marks: list[tuple[str, float]] = []


def mark(name: str, when: float | None = None) -> None:
    _marks.append((name, time.time() if when is None else when))


def dump() -> None:
    path = os.environ.get(PHASES_ENV)
    if path:
        Path(path).write_text(json.dumps(sorted(_marks, key=lambda m: m[1])))
