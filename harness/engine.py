"""Running cells on Ray: a Ray Tune grid with one trial per cell, each trial one Ray Train
`TorchTrainer` (DDP; gloo on CPU, NCCL on GPU).

Workers send log lines, progress and their final payload to a small `ProgressHub` actor;
the driver drains it, keeps the live display and the cell logs, and writes each record.
(Ray Train's own `Result.metrics` stays empty unless a checkpoint is reported, so results
travel through the hub.)

Each Tune trial and each Train controller is a fresh Ray worker process that imports this
module: it imports only Ray (and torch through Ray Train) at the top; the training code
(`harness.train`: models, timm, the data pipeline) is imported in the Train workers only, and
the records in the driver only, which keeps those processes' start-up short.
"""
from __future__ import annotations

import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from harness import phases
from harness.config import Cell, validated_cell
from harness.progress import Board


TRIAL_MEMORY_BYTES = 256 * 1024**2


@ray.remote(num_cpus=0)
class ProgressHub:
    """Mailbox between training workers and the driver."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, Any]] = []

    def post(self, cell_id: str, kind: str, payload: Any) -> None:
        self._events.append((cell_id, kind, payload))

    def drain(self) -> list[tuple[str, str, Any]]:
        events, self._events = self._events, []
        return events


class HubReporter:
    """The worker-side Reporter: fire-and-forget messages to the hub, checkpoints to Ray Train."""

    def __init__(self, hub, resume_dir: str | None = None) -> None:
        self.hub = hub
        self.resume_dir = resume_dir

    def restore(self) -> Path | None:
        """After a worker failure, this run's newest checkpoint; else the one `--resume` found."""
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            return Path(checkpoint.to_directory())
        return Path(self.resume_dir) if self.resume_dir else None

    def save(self, directory: Path, iteration: int) -> None:
        from harness.train import checkpoint_name

        checkpoint = ray.train.Checkpoint.from_directory(str(directory))
        ray.train.report({"iteration": iteration}, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_name(iteration))

    def log(self, cell_id: str, line: str) -> None:
        self.hub.post.remote(cell_id, "log", line)

    def progress(self, cell_id: str, stage: str, step: int, total: int, loss: float | None) -> None:
        self.hub.post.remote(cell_id, "progress", (stage, step, total, loss))


def train_loop_per_worker(config: dict) -> None:
    """Entry point of every Ray Train worker of a cell."""
    import torch

    from harness.train import run_cell

    cell = validated_cell(config["cell"])
    hub = config["hub"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    if rank == 0:
        hub.post.remote(cell.cell_id, "phase", ("train worker group running", time.time()))
    device = ray.train.torch.get_device() if cell.scaling.use_gpu else torch.device("cpu")
    payload = run_cell(cell, HubReporter(hub, config.get("resume_dir")), rank, world_size, device)
    if rank == 0:
        hub.post.remote(cell.cell_id, "phase", ("run_cell returned", time.time()))
        ray.get(hub.post.remote(cell.cell_id, "result", payload))


def make_trainer(cell: Cell, hub, storage_path: Path, resume: bool, latest: str | None = None) -> TorchTrainer:
    """The cell's trainer; it continues from `latest` (the cell's newest checkpoint) when `resume`."""
    run_dir = storage_path / cell.cell_id
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    scaling = ScalingConfig(
        num_workers=cell.scaling.num_workers,
        use_gpu=cell.scaling.use_gpu,
        resources_per_worker={"CPU": cell.scaling.cpus_per_worker},
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cell": cell.model_dump(mode="json"),
            "hub": hub,
            "resume_dir": latest if resume else None,
        },
        scaling_config=scaling,
        run_config=RunConfig(
            name=cell.cell_id,
            storage_path=str(storage_path),
            failure_config=FailureConfig(max_failures=cell.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )


def _as_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _short_error(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    causes = [line for line in lines if "Error" in line or "error" in line]
    return (causes[-1] if causes else (lines[-1] if lines else "unknown error")).strip()[:300]


def cell_trial(config: dict) -> None:
    """One Ray Tune trial: run a cell's TorchTrainer and tell the hub how it went.

    The trial holds no CPU itself (only a little memory; Tune needs some resource per trial);
    the cell's Train workers ask for theirs.
    """
    cell = validated_cell(config["cell"])
    hub = config["hub"]
    start = time.perf_counter()
    hub.post.remote(cell.cell_id, "started", None)
    hub.post.remote(cell.cell_id, "phase", ("tune trial running", time.time()))
    try:
        latest = config["latest"].get(cell.cell_id)
        make_trainer(cell, hub, Path(config["storage"]), config["resume"], latest).fit()
        hub.post.remote(cell.cell_id, "phase", ("trainer.fit returned", time.time()))
    except BaseException as exc:
        ray.get(hub.post.remote(cell.cell_id, "failed", "".join(traceback.format_exception(exc))))
        raise
    ray.get(hub.post.remote(cell.cell_id, "finished", time.perf_counter() - start))


def run_cells(
    cells: list[Cell], results_dir: Path, board: Board, max_concurrent: int = 1, resume: bool = False
) -> dict[str, dict]:
    """Train and evaluate `cells` as one Ray Tune grid (a trial per cell); returns records by cell id.

    At most `max_concurrent` cells run at once. With `resume`, each cell continues from its
    newest checkpoint under `results_dir/_ray`.
    """
    from harness.records import cell_dir, store_cell
    from harness.train import latest_checkpoint

    hub = ProgressHub.remote()
    storage = (results_dir / "_ray").resolve()
    storage.mkdir(parents=True, exist_ok=True)
    by_id = {cell.cell_id: cell for cell in cells}
    payloads: dict[str, dict] = {}
    records: dict[str, dict] = {}
    logs: dict[str, Any] = {}

    def log_line(cell_id: str, line: str) -> None:
        handle = logs.get(cell_id)
        if handle is None:
            path = cell_dir(results_dir, by_id[cell_id]) / "train.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = logs[cell_id] = path.open("a")
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        handle.flush()

    def finish(cell_id: str, wall: float) -> None:
        cell = by_id[cell_id]
        if cell_id not in payloads:
            board.finish(cell_id, None, status="failed", error="no result reported")
            return
        record = store_cell(results_dir, cell, payloads[cell_id], wall)
        phases.mark("record written")
        records[cell_id] = record
        log_line(cell_id, f"record written: mIoU {record['metrics']['mIoU']:.2f}, wall {wall:.1f}s")
        board.finish(cell_id, record["metrics"]["mIoU"])

    def handle(events: list[tuple[str, str, Any]]) -> None:
        for cell_id, kind, payload in events:
            if kind == "log":
                log_line(cell_id, payload)
            elif kind == "progress":
                board.progress(cell_id, *payload)
            elif kind == "phase":
                phases.mark(*payload)
            elif kind == "result":
                payloads[cell_id] = payload
            elif kind == "started":
                board.start(cell_id)
            elif kind == "finished":
                finish(cell_id, payload)
            elif kind == "failed":
                log_line(cell_id, "failed:\n" + payload)
                board.finish(cell_id, None, status="failed", error=_short_error(payload))

    tuner = tune.Tuner(
        tune.with_resources(cell_trial, {"cpu": 0, "memory": TRIAL_MEMORY_BYTES}),
        param_space={
            "cell": tune.grid_search([cell.model_dump(mode="json") for cell in cells]),
            "hub": hub,
            "storage": str(storage),
            "resume": resume,
            "latest": {c.cell_id: _as_str(latest_checkpoint(storage / c.cell_id)) for c in cells} if resume else {},
        },
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=False),
        run_config=tune.RunConfig(name="grid", storage_path=str(storage), verbose=0),
    )
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            tuner.fit()
        except BaseException as exc:  # reported below; cells already finished keep their records
            outcome["error"] = exc

    worker = threading.Thread(target=fit, name="idrbench-tune", daemon=True)
    phases.mark("tune grid starting")
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.5)
        handle(ray.get(hub.drain.remote()))
    handle(ray.get(hub.drain.remote()))
    phases.mark("tune grid returned")
    for cell_id, state in board.cells.items():
        if cell_id in by_id and state.status in ("waiting", "running"):
            error = _short_error(str(outcome["error"])) if "error" in outcome else "did not finish"
            board.finish(cell_id, None, status="failed", error=error)
    for handle_ in logs.values():
        handle_.close()
    return records
