"""The launchers in deploy/: the Slurm batch script (run here with stand-in srun / scontrol / ray)
and the KubeRay RayJob (parsed; its entrypoint parsed by harness.run's own argument parser)."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import yaml

from harness.run import parse_args
from harness.storage import parse_location
from tests.conftest import REPO

STAND_INS = {
    "scontrol": 'echo "scontrol $*" >> "$CALLS"; printf "nodeA\\nnodeB\\n"',
    "srun": 'echo "srun $*" >> "$CALLS"\n'
            'while [ $# -gt 0 ]; do case "$1" in -w) shift 2;; -*) shift;; *) break;; esac; done\nexec "$@"',
    "hostname": 'echo "127.0.0.1"',
    # `ray symmetric-run` would start Ray on every node and `ray stop` it at the end (every Ray on
    # the machine): the stand-in records its arguments and environment and runs the entrypoint
    # as the head node would, with --dry-run (the plan, no training).
    "ray": 'echo "ray $* auth=$RAY_AUTH_MODE token=${#RAY_AUTH_TOKEN}" >> "$CALLS"\n'
           'args=("$@"); for i in "${!args[@]}"; do [ "${args[$i]}" = "--" ] && exec "${args[@]:$((i+1))}" --dry-run; done\n'
           "exit 3",
}


def test_sbatch_script_brings_up_ray_on_every_node_and_runs_the_experiment(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls),
           "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "nodeA,nodeB", "SLURM_GPUS_ON_NODE": "4",
           "SLURM_CPUS_PER_TASK": "8"}
    env.pop("RAY_AUTH_TOKEN", None)
    script = REPO / "deploy" / "slurm" / "idrbench.sbatch"
    command = ["bash", str(script), "experiments/quickstart.yaml", str(tmp_path / "datasets"), str(tmp_path / "results"),
               "--set", "train.iterations=5"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = calls.read_text().splitlines()
    assert any(line.startswith("srun --nodes=1 --ntasks=1 -w nodeA hostname") for line in lines), lines
    assert any(line.startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 ray symmetric-run") for line in lines)
    ray = next(line for line in lines if line.startswith("ray symmetric-run"))
    assert "--address 127.0.0.1:6379 --min-nodes 2 --num-cpus 8 --num-gpus 4" in ray
    assert "auth=token token=64" in ray  # a 32-byte token generated for the job
    assert "experiment quickstart: 2 cells" in done.stdout  # the plan of the entrypoint, run here


def test_sbatch_script_without_its_arguments_says_how_to_call_it():
    done = subprocess.run(["bash", str(REPO / "deploy" / "slurm" / "idrbench.sbatch")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("usage: sbatch")


def test_rayjob_has_token_auth_gpu_workers_s3_results_and_an_entrypoint_our_cli_takes():
    job = yaml.safe_load((REPO / "deploy" / "kuberay" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    workers = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert int(workers["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    for container in [cluster["headGroupSpec"]["template"]["spec"]["containers"][0], workers]:
        secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        assert set(secrets) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # from a Secret, never inline
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:4] == ["python", "-u", "-m", "harness.run"]
    args = parse_args(words[4:])
    assert (REPO / args.experiment).is_file()
    assert parse_location(args.results).scheme == "s3"
    assert any(value.startswith("data.root=") for value in args.overrides)
