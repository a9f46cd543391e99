"""How fast a bad experiment file is reported, and how fast a second `--dry-run` plans full_table.

    python benchmarks/bench_plan.py [--experiment experiments/full_table.yaml]

Runs, each as a fresh process (as a user would): `harness.run` on a copy of the quickstart with
a misspelt key (target <= 2 s to the error), then `harness.run EXPERIMENT --dry-run` twice with
an empty FLOP-count cache in a temporary folder ($IDRBENCH_CACHE_DIR): the first call counts
every model with fvcore, the second reads the cache (target <= 10 s). Prints each wall time,
the second/first ratio and the load average, since the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ERROR_TARGET_S = 2.0
DRY_RUN_TARGET_S = 10.0


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(wall seconds, exit status, last line of stderr) of one process."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    return time.perf_counter() - start, done.returncode, lines[-1] if lines else ""


def misspelt_copy(folder: Path) -> Path:
    text = (ROOT / "experiments" / "quickstart.yaml").read_text().replace("  backbone:", "  backbnoe:", 1)
    path = folder / "misspelt.yaml"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="experiments/full_table.yaml")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_plan_") as tmp:
        env = {**os.environ, "IDRBENCH_CACHE_DIR": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1"}
        run = [sys.executable, "-m", "harness.run"]
        error_s, error_rc, message = timed([*run, str(misspelt_copy(Path(tmp)))], env)
        plan = [*run, args.experiment, "--dry-run", "--results", str(Path(tmp) / "results")]
        first_s, first_rc, _ = timed(plan, env)
        second_s, second_rc, _ = timed(plan, env)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"misspelt key: exit {error_rc} after {error_s:.2f} s (target <= {ERROR_TARGET_S:g} s): {message}")
    print(f"--dry-run {args.experiment}: first call {first_s:.1f} s (exit {first_rc}), "
          f"second call {second_s:.1f} s (exit {second_rc}; target <= {DRY_RUN_TARGET_S:g} s), "
          f"second/first {second_s / first_s:.2f}")
    ok = error_rc == 2 and error_s <= ERROR_TARGET_S and second_rc == 0 and second_s <= DRY_RUN_TARGET_S
    print("targets met" if ok else "targets MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
