"""The quickstart as a new user meets it: wall time, IDR's lead and determinism.

    python benchmarks/bench_quickstart.py [--runs 2]

Runs `python -m harness.run experiments/quickstart.yaml` `--runs` times, each in a fresh
temporary folder holding only a copy of `experiments/`, so that every run generates the
synthetic data, starts Ray and writes its results as a first run from a clean clone does.
Prints each run's wall time against the target (<= 300 s on 2 cores), the baseline and +IDR
mIoU with the per-class IoU of the focus classes (the ones only context can tell apart), and,
with two runs or more, whether the metrics and final model files are identical across runs.
Run it under the shared Ray lock: `flock /tmp/idrbench-ray.lock python benchmarks/bench_quickstart.py`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.fileio import sha256_of_file  # noqa: E402
from harness.records import find_records  # noqa: E402

TARGET_S = 300.0


def run_quickstart(folder: Path) -> tuple[float, int, Path]:
    """(wall seconds, exit status, results folder) of one quickstart run inside `folder`."""
    shutil.copytree(REPO / "experiments", folder / "experiments")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    with open(folder / "run.log", "w") as log:  # a file, not a pipe: the time ends when the process does
        done = subprocess.run([sys.executable, "-m", "harness.run", "experiments/quickstart.yaml"],
                              cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start, done.returncode, folder / "results" / "quickstart"


def baseline_and_idr(results: Path) -> tuple[dict, dict]:
    """The FCN and FCN + IDR records of a quickstart results folder."""
    records = {record["idr"]: record for record in find_records(results)}
    if set(records) != {False, True}:
        raise SystemExit(f"error: {results}: expected one baseline and one +IDR record, found {sorted(records)}")
    return records[False], records[True]


def lead_lines(baseline: dict, idr: dict) -> tuple[list[str], bool]:
    """Printable lines comparing the two records, and whether +IDR leads overall and on every focus class."""
    lines = [f"mIoU: FCN {baseline['metrics']['mIoU']:.2f}, FCN + IDR {idr['metrics']['mIoU']:.2f} "
             f"({idr['metrics']['mIoU'] - baseline['metrics']['mIoU']:+.2f})"]
    ahead = idr["metrics"]["mIoU"] > baseline["metrics"]["mIoU"]
    for name in idr["focus_classes"]:
        base, ours = baseline["per_class_iou"][name], idr["per_class_iou"][name]
        lines.append(f"  {name:<6} IoU: FCN {base:6.2f}, FCN + IDR {ours:6.2f} ({ours - base:+.2f})")
        ahead = ahead and ours > base
    return lines, ahead


def fingerprint(results: Path) -> dict[str, tuple]:
    """Per cell: its metrics and the sha256 of its final model file."""
    return {record["cell_id"]: (record["metrics"], record["per_class_iou"],
                                sha256_of_file(results / "cells" / record["cell_id"] / record["model_file"]))
            for record in find_records(results)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="quickstart runs, one after another (2 checks determinism)")
    args = parser.parse_args(argv)
    walls, prints, ok = [], [], True
    with tempfile.TemporaryDirectory(prefix="bench_quickstart_") as tmp:
        for index in range(args.runs):
            folder = Path(tmp) / f"run{index}"
            folder.mkdir()
            wall, status, results = run_quickstart(folder)
            if status != 0:
                print((folder / "run.log").read_text()[-3000:])
                print(f"error: quickstart run {index + 1} exited with {status}")
                return 1
            baseline, idr = baseline_and_idr(results)
            train = ", ".join(f"{r['cell_id']} {r['train_time_s']:.1f} s" for r in (baseline, idr))
            print(f"run {index + 1}: {wall:.1f} s wall (target <= {TARGET_S:g} s); training: {train}")
            lines, ahead = lead_lines(baseline, idr)
            print("\n".join(lines))
            print(f"  FCN + IDR ahead overall and on every focus class: {'yes' if ahead else 'NO'}")
            walls.append(wall)
            prints.append(fingerprint(results))
            ok = ok and ahead and wall <= TARGET_S
    if len(prints) > 1:
        identical = all(p == prints[0] for p in prints[1:])
        print(f"identical metrics and model files across {len(prints)} runs: {'yes' if identical else 'NO'}")
        ok = ok and identical
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; slowest run {max(walls):.1f} s")
    print("targets met" if ok else "targets MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
