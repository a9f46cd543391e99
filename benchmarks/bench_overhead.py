"""The harness's own overhead per cell: the same tiny training in a plain process vs through Ray.

    python benchmarks/bench_overhead.py [--iterations 40] [--checkpoint-interval 10]

Prints the wall time of one cell run (a) by `harness.train.run_cell` in this process and (b) by
`python -m harness.run` (Ray start, Tune trial, Train worker group, records), their ratio, and
the cost of saving and loading one checkpoint. Everything runs in one invocation, so the ratio is
meaningful on any machine. The harness.run time is broken down by the phase marks it writes to
$IDRBENCH_PHASES (harness/phases.py): process start and imports, checks, Ray start, Tune trial
start, Train worker group start, the cell itself, Train / Tune teardown, records and tables, exit.
The cell's own time inside the Train worker is set against the plain run, so that a slower
training inside Ray can be told from the fixed cost around it; the CPU time the hypervisor took
(steal, from /proc/stat) during each run is printed too, since a virtual machine's speed drifts.
It also times Ray's own floor: a process that starts Ray as harness.run does and runs one Tune
trial holding an empty `TorchTrainer.fit` (one worker, same CPUs), so the overhead that is ours
(imports, checks, the hub, records) can be told from what Ray Tune and Train cost by themselves.
Last, it times one training step in this process and inside a Ray Train worker at several
controller poll intervals (each poll wakes the worker while its compute threads hold every core).
Run it under the shared Ray lock: `flock /tmp/idrbench-ray.lock python benchmarks/bench_overhead.py`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.config import load_experiment  # noqa: E402
from harness.run import resolve_cells  # noqa: E402
from harness.train import PrintReporter, load_checkpoint, run_cell, save_checkpoint  # noqa: E402
from models import build_segmentor  # noqa: E402


def experiment(root: Path, iterations: int, interval: int) -> dict:
    return {
        "name": "overhead",
        "grid": {"frameworks": ["fcn"], "datasets": ["context_scenes"], "idr": [True], "seeds": [0]},
        "model": {"backbone": "resnet18", "feats_channels": 64, "head_channels": 64, "aux_channels": 32,
                  "refine_channels": 32},
        "train": {"iterations": iterations, "batch_size": 8, "log_interval": 10, "checkpoint_interval": interval},
        "scaling": {"num_workers": 1, "cpus_per_worker": 2},
        "data": {"root": str(root / "datasets"), "options": {"context_scenes": {"num_train": 64, "num_val": 16}}},
    }


RAY_FLOOR = """
import sys
from harness.engine import ON_HEAD_NODE, TRIAL_MEMORY_BYTES
from harness.run import start_ray
from ray import tune
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

def empty_cell(config):
    TorchTrainer(lambda _: None, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": config["cpus"]}),
                 run_config=RunConfig(name="empty", storage_path=config["storage"])).fit()

start_ray(None)
tune.Tuner(tune.with_resources(empty_cell, {"cpu": 0, "memory": TRIAL_MEMORY_BYTES, **ON_HEAD_NODE}),
           param_space={"storage": sys.argv[1], "cpus": float(sys.argv[2])},
           run_config=tune.RunConfig(name="floor", storage_path=sys.argv[1], verbose=0)).fit()
"""


STEP_IN_TRAIN_WORKER = """
import json, os, sys
os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = sys.argv[3]
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from harness.run import start_ray

def steps(config):
    sys.path.insert(0, config["benchmarks"])
    from bench_overhead import seconds_per_step
    from harness.config import validated_cell
    cell = validated_cell(config["cell"])
    with open(config["out"], "w") as out:
        json.dump(seconds_per_step(cell, config["steps"]), out)

start_ray(None)
cell = json.loads(sys.argv[1])
TorchTrainer(steps, train_loop_config={"cell": cell, "out": sys.argv[2], "steps": int(sys.argv[4]),
                                           "benchmarks": sys.argv[6]},
             scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": cell["scaling"]["cpus_per_worker"]}),
             run_config=RunConfig(name="poll", storage_path=sys.argv[5])).fit()
"""


def seconds_per_step(cell, steps: int, warmup: int = 3) -> float:
    """Mean seconds of `steps` training steps of `cell` after `warmup` untimed ones, in this process."""
    from harness.train import build_run, train_loop

    train = cell.train.model_copy(update={"checkpoint_interval": 0, "iterations": warmup + steps})
    run = build_run(cell.model_copy(update={"train": train}), PrintReporter(quiet=True), 0, 1, torch.device("cpu"))
    train_loop(run, stop_after=warmup)
    run.start_iteration = warmup
    start = time.perf_counter()
    train_loop(run)
    return (time.perf_counter() - start) / steps


def step_in_train_worker(cell, root: Path, interval: float, steps: int) -> float:
    """Seconds per training step of `cell` inside a Ray Train worker whose controller polls every `interval` s."""
    out = root / f"poll-{interval:g}.json"
    subprocess.run([sys.executable, "-c", STEP_IN_TRAIN_WORKER, json.dumps(cell.model_dump(mode="json")), str(out),
                    str(interval), str(steps), str(root / "poll"), str(REPO / "benchmarks")], cwd=REPO, check=True, capture_output=True)
    return json.loads(out.read_text())


def poll_interval_steps(cell, root: Path, intervals: list[float], steps: int, rounds: int) -> dict[str, float]:
    """Fastest seconds per step over `rounds` rounds, in this process and in a Train worker per poll
    interval; each round runs them in the reverse order of the one before, so that a drift of the
    machine's speed does not favour whichever comes last."""
    if not intervals:
        return {}
    configs: list[float | None] = [None, *intervals]
    best: dict[float | None, float] = {}
    for round_index in range(rounds):
        for interval in configs if round_index % 2 == 0 else configs[::-1]:
            seconds = seconds_per_step(cell, steps) if interval is None else step_in_train_worker(cell, root, interval, steps)
            best[interval] = min(seconds, best.get(interval, seconds))
    return {("plain process" if k is None else f"Train worker, poll every {k:g} s"): best[k] for k in configs}


def steal_seconds() -> float | None:
    """CPU seconds the hypervisor has taken from this virtual machine since boot (Linux; None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def stolen(before: float | None, after: float | None) -> str:
    return "unknown" if before is None or after is None else f"{after - before:.1f} s"


def ray_floor(storage: Path, cpus: float) -> float:
    """Wall seconds of a process that starts Ray and runs one Tune trial around an empty TorchTrainer.fit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RAY_FLOOR, str(storage), str(cpus)], cwd=REPO, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--checkpoint-interval", type=int, default=10)
    parser.add_argument("--poll-intervals", default="1,2,5",
                        help="Ray Train controller poll intervals (s) to time a training step under; '' to skip")
    parser.add_argument("--poll-steps", type=int, default=20)
    parser.add_argument("--poll-rounds", type=int, default=2, help="rounds of those timings (the fastest of each is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "overhead.yaml"
        path.write_text(yaml.safe_dump(experiment(root, args.iterations, args.checkpoint_interval)))
        cell = resolve_cells(load_experiment(path))[0]
        run_cell(cell, PrintReporter(quiet=True), stop_after=1)  # generate the data, warm caches

        steal_start, start = steal_seconds(), time.perf_counter()
        run_cell(cell, PrintReporter(root / "plain_ckpt", quiet=True))
        plain = time.perf_counter() - start
        steal_plain = steal_seconds()

        marks_file = root / "phases.json"
        env = {**os.environ, "IDRBENCH_PHASES": str(marks_file)}
        launched, start = time.time(), time.perf_counter()
        with open(root / "harness-run.log", "w") as log:  # a file, not a pipe: the time ends when the process does
            subprocess.run([sys.executable, "-m", "harness.run", str(path), "--results", str(root / "results")],
                           cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
        through_ray = time.perf_counter() - start
        steal_ray = steal_seconds()
        marks = [("process launched", launched), *json.loads(marks_file.read_text()), ("process exited", time.time())]
        at = dict(marks)
        cell_in_worker = at["run_cell returned"] - at["worker imported harness.train"]

        floor = ray_floor(root / "floor", cell.scaling.cpus_per_worker)
        polled = poll_interval_steps(cell, root, [float(v) for v in args.poll_intervals.split(",") if v.strip()],
                                     args.poll_steps, args.poll_rounds)

        model = build_segmentor("fcn", True, 10, cell.model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        ckpt = root / "ckpt"
        ckpt.mkdir()
        start = time.perf_counter()
        save_checkpoint(ckpt, model, optimizer, scaler, 1, 0)
        saved = time.perf_counter() - start
        start = time.perf_counter()
        load_checkpoint(ckpt, model, optimizer, scaler, 0, print)
        loaded = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in ckpt.iterdir()) / 2**20

    print(f"one cell, {args.iterations} iterations, checkpoint every {args.checkpoint_interval}, CPU, "
          f"torch {torch.__version__}")
    print(f"plain process (run_cell)          {plain:8.1f} s")
    print(f"python -m harness.run (with Ray)  {through_ray:8.1f} s   ratio {through_ray / plain:.2f}x, "
          f"overhead {through_ray - plain:.1f} s")
    print(f"the cell itself (run_cell): plain {plain:.1f} s, in the Train worker {cell_in_worker:.1f} s "
          f"({cell_in_worker / plain:.2f}x); harness.run outside run_cell {through_ray - cell_in_worker:.1f} s")
    print(f"CPU time the hypervisor took (steal): {stolen(steal_start, steal_plain)} during the plain run, "
          f"{stolen(steal_plain, steal_ray)} during harness.run")
    print(f"Ray's floor: start Ray, one Tune trial, an empty TorchTrainer.fit, exit  {floor:6.1f} s; "
          f"harness.run overhead beyond it {through_ray - plain - floor:.1f} s")
    print("harness.run phases (seconds since the previous mark):")
    for (_, before), (name, when) in zip(marks, marks[1:]):
        print(f"  {name:34} {when - before:7.1f}")
    if polled:
        base = polled["plain process"]
        print(f"one training step (fastest of {args.poll_rounds} rounds of {args.poll_steps} steps timed after 3), "
              f"plain process vs a Ray Train worker by the controller's poll interval (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S; harness.run keeps Ray's 2):")
        for name, seconds in polled.items():
            print(f"  {name:34} {seconds:7.3f} s   {seconds / base:.2f}x")
    print(f"checkpoint save / load            {saved * 1e3:8.1f} / {loaded * 1e3:.1f} ms ({size_mb:.1f} MiB)")


if __name__ == "__main__":
    main()
