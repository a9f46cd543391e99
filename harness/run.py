"""`python -m harness.run EXPERIMENT.yaml`: plan, check, then train and evaluate every cell on Ray.

Exit status: 0 all cells finished; 1 a cell failed; 2 bad input (experiment file, override,
dataset, weights) — reported in one line before Ray starts, with nothing written to results/.
"""
from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from harness import phases
from harness.cli import Parser, parse_or_exit
from harness.config import Cell, ConfigError, Experiment, expand_cells, load_experiment
from harness.storage import Location, StorageError, check_reachable, parse_location, safe_error

# torch, Ray and the model / data registries are imported where they are needed, after the
# experiment file has been read and validated: a bad file is reported without those imports.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python -m harness.run", description="Run an IDRBench experiment.")
    parser.add_argument("experiment", help="experiment YAML file, e.g. experiments/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override any key of the experiment file (value parsed as YAML); repeatable")
    parser.add_argument("--dry-run", action="store_true", help="print the plan with GPU-hours estimates and exit")
    parser.add_argument("--gpu-rate", type=float, default=None, metavar="FLOPS",
                        help="fvcore FLOPs/s one GPU sustains in training, for the --dry-run estimates "
                        "(default: measured from finished GPU cells in --results, else 2e13; see harness/estimate.py)")
    parser.add_argument("--gpu-rate-from", default=None, metavar="FILE",
                        help="take the --dry-run rate from a benchmarks/gpu_check.py JSON (gpu_rate_flops_per_s)")
    parser.add_argument("--address", default=None, help="join this Ray cluster instead of starting a local one")
    parser.add_argument("--results", default="results",
                        help="results root: a path (default: results) or s3://bucket/prefix[?endpoint_override=HOST:PORT"
                        "&scheme=http&region=R] (see docs/cluster.md)")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="run only cells whose id matches this shell pattern (e.g. 'upernet*ade20k*'); repeatable")
    parser.add_argument("--rerun", action="store_true", help="train cells again even when a record exists")
    parser.add_argument("--resume", action="store_true",
                        help="continue unfinished cells from their newest checkpoint instead of starting over")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="train on datasets without a current verification stamp "
                        "(from `python -m harness.prepare <dataset> --verify`)")
    return parse_or_exit(parser, argv)


def resolve_cells(exp: Experiment) -> list[Cell]:
    """Cells with the data root made absolute (workers may start in other directories)."""
    root = str(Path(exp.data.root).expanduser().resolve())
    return [cell.model_copy(update={"data_root": root}) for cell in expand_cells(exp)]


def select_cells(cells: list[Cell], patterns: list[str], source: str) -> list[Cell]:
    if not patterns:
        return cells
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.cell_id, p) for p in patterns)]
    if not chosen:
        raise ConfigError(f"{source}: --only {' '.join(patterns)} matches none of the {len(cells)} cells")
    return chosen


def check_plan(cells: list[Cell], source: str) -> None:
    """Checks of the cells that need more than the schema; raise ConfigError with one line."""
    from models.registry import check_backbone

    for cell in cells:
        try:
            check_backbone(cell.framework, cell.model.backbone)
        except ValueError as err:
            raise ConfigError(f"{source}: model.backbone: {err}") from None
        parts = cell.scaling.num_workers * cell.train.accumulation_steps
        if cell.train.batch_size % parts:
            raise ConfigError(
                f"{source}: train.batch_size: {cell.train.batch_size} is not divisible by "
                f"scaling.num_workers {cell.scaling.num_workers} x train.accumulation_steps "
                f"{cell.train.accumulation_steps} (cell {cell.cell_id})"
            )
        if cell.train.amp == "fp16" and not cell.scaling.use_gpu:
            raise ConfigError(f"{source}: train.amp: fp16 needs scaling.use_gpu: true; use bf16 on CPU")


def check_weights(cells: list[Cell], source: str) -> None:
    from models.backbones import PretrainedWeightsError
    from models.registry import resolve_weights

    needed = {(c.framework, c.model.backbone, c.model.pretrained) for c in cells}
    for framework, backbone, pretrained in sorted(needed, key=str):
        try:
            resolve_weights(framework, backbone, pretrained)
        except PretrainedWeightsError as err:
            raise ConfigError(f"{source}: {err}") from None


def check_datasets(cells: list[Cell], verify: bool = True) -> None:
    """Open every dataset split the plan needs (generating the synthetic one); with `verify`,
    require each dataset's verification stamp to match its files (harness/data/verify.py).

    Raises one DataError listing every dataset that is missing or broken, one line each.
    """
    from harness.data import DataError, build_dataset

    problems: dict[str, str] = {}
    seen = set()
    for cell in cells:
        for split, train in (("train", True), (cell.eval.split, False)):
            key = (cell.dataset, split, repr(sorted(cell.data_options.items())))
            if key in seen or cell.dataset in problems:
                continue
            seen.add(key)
            try:
                build_dataset(cell.dataset, cell.data_root, split, cell.data_options, train=train).load(0)
            except DataError as err:
                problems[cell.dataset] = str(err)
    if verify:
        problems.update(unverified_datasets(cells, problems))
    if problems:
        raise DataError("\n".join(text if text.startswith(name) else f"{name}: {text}" for name, text in problems.items()))


def unverified_datasets(cells: list[Cell], skip: dict[str, str]) -> dict[str, str]:
    """{dataset: problem} for the datasets (other than `skip`) whose verification stamp is missing or stale."""
    from harness.data.verify import check_stamp, verify_dataset
    from harness.data.preparation import REAL_DATASETS

    problems: dict[str, str] = {}
    for cell in cells:
        if cell.dataset in skip or cell.dataset in problems:
            continue
        problem = check_stamp(cell.dataset, cell.data_root, cell.data_options)
        if problem is None:
            continue
        if cell.dataset not in REAL_DATASETS:  # generated by the harness (maybe before stamps): verify it now
            result = verify_dataset(cell.dataset, cell.data_root, cell.data_options)
            if not result.ok:
                fix = "Fix or remove the files named." if "folder" in cell.data_options else (
                    "Delete its generated folder to regenerate it.")
                problems[cell.dataset] = "\n".join(result.lines()) + f"\n{fix}"
            continue
        fix = f"run `python -m harness.prepare {cell.dataset} --root {cell.data_root} --verify`"
        problems[cell.dataset] = f"{cell.dataset}: {problem}; {fix}, or pass --no-verify"
    return problems


def check_inputs(cells: list[Cell], source: str, verify: bool) -> None:
    """Weights and datasets of every cell; raise ConfigError listing every problem, one line each."""
    from harness.data import DataError

    problems = []
    for check in (lambda: check_weights(cells, source), lambda: check_datasets(cells, verify)):
        try:
            check()
        except (ConfigError, DataError) as err:
            problems.append(str(err))
    if problems:
        raise ConfigError("\n".join(problems))


def rate_from_gpu_check(path: str) -> float:
    """`gpu_rate_flops_per_s` of a benchmarks/gpu_check.py report; ConfigError naming the file otherwise."""
    import json

    try:
        rate = json.loads(Path(path).read_text()).get("gpu_rate_flops_per_s")
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"--gpu-rate-from {path}: cannot read a gpu_check.py JSON report ({err})") from None
    if not isinstance(rate, (int, float)) or rate <= 0:
        raise ConfigError(f"--gpu-rate-from {path}: expected a positive number at gpu_rate_flops_per_s, got {rate!r}")
    return float(rate)


def dry_run(exp: Experiment, cells: list[Cell], args: argparse.Namespace) -> None:
    from harness.estimate import estimate_cells, plan_rate

    if args.gpu_rate_from is not None:
        source = f"measured by benchmarks/gpu_check.py ({args.gpu_rate_from})"
        rate = plan_rate(parse_location(args.results) / exp.name, rate_from_gpu_check(args.gpu_rate_from), source)
    else:
        rate = plan_rate(parse_location(args.results) / exp.name, args.gpu_rate)
    estimates = estimate_cells(cells, rate, lambda done, total: print(
        f"counting FLOPs: model {done}/{total}", file=sys.stderr, flush=True))
    print_plan(exp, cells, estimates, rate)


def print_plan(exp: Experiment, cells: list[Cell], estimates: list, rate) -> None:
    print(f"experiment {exp.name}: {len(cells)} cells, up to {exp.scaling.max_concurrent_cells} at once")
    header = f"{'cell':48} {'framework':10} {'IDR':4} {'dataset':16} {'backbone':14} {'seed':>4} {'iters':>7} {'batch':>5}"
    print(header + f" {'resources per cell':>26} {'GFLOPs':>8} {'GPU-h':>8} {'wall-h':>7}")
    for c, est in zip(cells, estimates):
        s = c.scaling
        resources = f"{s.num_workers} worker(s) x {s.cpus_per_worker:g} CPU" + (" + 1 GPU" if s.use_gpu else "")
        print(
            f"{c.cell_id:48} {c.framework:10} {'yes' if c.idr else 'no':4} {c.dataset:16} {c.model.backbone:14} "
            f"{c.seed:>4} {c.train.iterations:>7} {c.train.batch_size:>5} {resources:>26} "
            f"{est.forward_gflops:>8.1f} {est.gpu_hours:>8.2f} {est.wall_hours:>7.2f}"
        )
    total = sum(e.gpu_hours for e in estimates)
    print(
        f"estimated {total:.1f} GPU-hours in all (GFLOPs: fvcore, one forward at the training crop; GPU-h: "
        f"train + eval FLOPs at {rate.flops_per_s:.3g} FLOPs/s per GPU, {rate.source}; wall-h: GPU-h / workers "
        f"per cell). Estimates, not measurements: see harness/estimate.py"
    )


# Ray settings that cut the cost of a run (read by Ray, Tune and Train in every process; a local
# Ray's processes inherit the driver's environment; a cluster's keep their own): no usage-stats
# report and no Tune result loggers (results travel through the progress hub). A local Ray also
# goes without Ray Train's spot-preemption watcher and Ray's Prometheus metrics (nothing scrapes
# them on a workstation): fewer busy processes beside the training threads (other processes' CPU
# during training 4.2 -> 3.0 s per 20 s on the 2-core machine). Ray Train's worker poll stays at
# its default (2 s): benchmarks/bench_overhead.py times a step at 1, 2 and 5 s and finds no
# difference beyond the machine's noise.
RAY_ENV = {
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
}


def start_ray(address: str | None) -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return
    if address:  # a cluster's processes keep the environment they were started with
        ray.init(address=address, log_to_driver=False)
    elif os.environ.get("RAY_ADDRESS"):  # a `ray job submit` driver: the job's own cluster
        ray.init(log_to_driver=False)
    else:  # our own Ray, never a cluster that `ray start` left running on this machine
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)


def check_resumable(todo: list[Cell], results_dir: Location) -> None:
    """With `--resume`: every cell that has checkpoints has an intact one (checked against its manifest);
    each damaged one is named in a warning line; ConfigError when a cell has only damaged ones."""
    from harness.fileio import temporary_directory
    from harness.train import NoIntactCheckpoint, intact_checkpoint

    with temporary_directory("idrbench-resume-check-") as staging:
        for cell in todo:
            try:
                intact_checkpoint(results_dir / "_ray" / cell.cell_id, staging,
                                  lambda line: print(f"warning: {line}", file=sys.stderr))
            except NoIntactCheckpoint as err:
                raise ConfigError(f"{cell.cell_id}: {err}") from None
            except OSError as err:
                raise ConfigError(f"{cell.cell_id}: cannot read its checkpoints ({safe_error(err)})") from None


def train_cells(todo: list[Cell], results_dir: Location, board, max_concurrent: int, args: argparse.Namespace) -> bool:
    """Remove what a killed run left half-written, start Ray, check the results folder is shared
    by every node, then run the cells; False (after one error line) when the cluster cannot."""
    from harness.cluster import ClusterError, check_shared_results
    from harness.engine import run_cells
    from harness.fileio import remove_partials
    from harness.records import cell_dir

    if results_dir.is_local:  # an object store has no half-written objects: a PUT is atomic
        for cell in todo:  # only these cells: the others may belong to a run still going
            remove_partials(cell_dir(results_dir, cell).local_path())
            remove_partials((results_dir / "_ray" / cell.cell_id).local_path())
    start_ray(args.address)
    phases.mark("ray started")
    try:
        check_shared_results(results_dir)
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return False
    with board:
        run_cells(todo, results_dir, board, max_concurrent, resume=args.resume)
    return True


def main(argv: list[str] | None = None) -> int:
    phases.mark("harness.run main")
    args = parse_args(argv)
    try:
        results_root = parse_location(args.results)
        exp = load_experiment(args.experiment, args.overrides)
        cells = select_cells(resolve_cells(exp), args.only, args.experiment)
        check_plan(cells, args.experiment)
        check_reachable(results_root)
        if args.dry_run:
            dry_run(exp, cells, args)
            return 0
        check_inputs(cells, args.experiment, args.verify)
    except (ConfigError, StorageError) as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2

    from rich.console import Console

    from harness.progress import Board
    from harness.records import completed_record
    results_dir = results_root / exp.name
    todo = [c for c in cells if args.rerun or completed_record(results_dir, c) is None]
    if args.resume:
        try:
            check_resumable(todo, results_dir)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    console = Console()
    console.print(f"experiment {exp.name}: {len(cells)} cells, {len(cells) - len(todo)} already complete")
    board = Board([c.cell_id for c in cells], console=console)
    for cell in cells:
        if cell not in todo:
            record = completed_record(results_dir, cell)
            board.finish(cell.cell_id, record["metrics"]["mIoU"], status="cached")
    start = time.perf_counter()
    phases.mark("checks done, records read")
    if todo and not train_cells(todo, results_dir, board, exp.scaling.max_concurrent_cells, args):
        return 2
    console.print(board.summary())
    for state in board.cells.values():
        if state.status == "failed":
            print(f"error: {state.error}", file=sys.stderr)
    console.print(f"total time {time.perf_counter() - start:.1f}s; results in {results_dir}")
    if any(s.status == "done" or s.status == "cached" for s in board.cells.values()):
        print(tables_brief(results_dir))
        if exp.findings:
            print(f"findings: {exp.findings}")
    phases.mark("tables written")
    phases.dump()
    return 1 if board.counts()["failed"] else 0


def tables_brief(results_dir: Location) -> str:
    """Write the experiment's tables where its records are (staged locally for an object store)."""
    from harness.storage import staged
    from harness.tables import write_tables_brief

    with staged(results_dir, lambda name: name.endswith("/record.json")) as folder:
        text = write_tables_brief(folder)
    return text if results_dir.is_local else text.replace(str(folder), results_dir.display)


def exit_now(code: int) -> NoReturn:
    """End the process once a run has closed its files: flush the streams, shut Ray down, and skip
    the interpreter's teardown of torch, pandas and the other module graphs, which took 2.5 s of
    every run's wall time on the 2-core machine and has nothing left to write."""
    if "ray" in sys.modules:
        import ray

        ray.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
