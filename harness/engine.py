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

import os
import logging
import tempfile
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
from harness.storage import Location, delete_tree, parse_location


TRIAL_MEMORY_BYTES = 256 * 1024**2
# The hub, each Tune trial and (beside its trial) each Ray Train controller stay on the head
# node: losing another node then loses only training workers, which Ray Train restarts.
ON_HEAD_NODE = {"node:__internal_head__": 0.001}


@ray.remote(num_cpus=0)
class ProgressHub:
    """Mailbox between training workers and the driver."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, Any]] = []
        self._faults: dict[str, str] = {}

    def post(self, cell_id: str, kind: str, payload: Any) -> None:
        self._events.append((cell_id, kind, payload))

    def record_fault(self, cell_id: str, message: str) -> None:
        """Remember a cell's first CellFault, so that Ray Train's retries of it end at once."""
        if cell_id not in self._faults:
            self._faults[cell_id] = message
            self._events.append((cell_id, "fault", message))

    def fault(self, cell_id: str) -> str | None:
        return self._faults.get(cell_id)

    def drain(self) -> list[tuple[str, str, Any]]:
        events, self._events = self._events, []
        return events


class HubReporter:
    """The worker-side Reporter: fire-and-forget messages to the hub, checkpoints to Ray Train."""

    def __init__(self, hub, cell_id: str, checkpoint_root: str, staging: Path) -> None:
        self.hub = hub
        self.cell_id = cell_id
        self.checkpoint_root = checkpoint_root  # the cell's run folder in Ray's storage (a path or URI)
        self.staging = staging  # where checkpoints from an object store are copied; the caller removes it

    def restore(self) -> Path | None:
        """The newest intact checkpoint in the cell's storage folder, checked against its manifest
        (after a worker or node failure, or with `--resume`); each damaged one is skipped with a line.

        Listed from storage rather than taken from Ray's record: a killed driver can leave a complete
        checkpoint that Ray's record does not list yet, and Ray's newest may be the damaged one.
        """
        from harness.train import intact_checkpoint

        return intact_checkpoint(self.checkpoint_root, self.staging, lambda line: self.log(self.cell_id, line))

    def save(self, directory: Path, iteration: int) -> None:
        from harness.train import checkpoint_name

        checkpoint = ray.train.Checkpoint.from_directory(str(directory))
        ray.train.report({"iteration": iteration}, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_name(iteration))

    def log(self, cell_id: str, line: str) -> None:
        self.hub.post.remote(cell_id, "log", line)

    def progress(self, cell_id: str, stage: str, step: int, total: int, loss: float | None) -> None:
        self.hub.post.remote(cell_id, "progress", (stage, step, total, loss))

    def scalars(self, cell_id: str, step: int, values: dict[str, float]) -> None:
        self.hub.post.remote(cell_id, "scalars", (step, values))


def train_loop_per_worker(config: dict) -> None:
    """Entry point of every Ray Train worker of a cell."""
    entered = time.time()
    import torch

    from harness.train import CellFault, run_cell

    cell = validated_cell(config["cell"])
    hub = config["hub"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    if rank == 0:
        hub.post.remote(cell.cell_id, "phase", ("train worker group running", entered))
        hub.post.remote(cell.cell_id, "phase", ("worker imported harness.train", time.time()))
    device = ray.train.torch.get_device() if cell.scaling.use_gpu else torch.device("cpu")
    hub.post.remote(cell.cell_id, "log", f"worker rank {rank} of {world_size} on node {ray.get_runtime_context().get_node_id()}")
    earlier = ray.get(hub.fault.remote(cell.cell_id))
    if earlier is not None:  # divergence and bad data do not heal by retrying: end this retry at once
        raise CellFault(earlier)
    try:
        with tempfile.TemporaryDirectory(prefix="idrbench-restore-") as staging:
            reporter = HubReporter(hub, cell.cell_id, config["checkpoint_root"], Path(staging))
            payload = run_cell(cell, reporter, rank, world_size, device)
    except CellFault as err:
        ray.get(hub.record_fault.remote(cell.cell_id, str(err)))
        raise
    if rank == 0:
        hub.post.remote(cell.cell_id, "phase", ("run_cell returned", time.time()))
        ray.get(hub.post.remote(cell.cell_id, "result", payload))


def ray_storage(storage: Location) -> dict:
    """RunConfig's storage arguments: a local folder, or a path in a pyarrow filesystem (object stores)."""
    if storage.is_local:
        return {"storage_path": storage.path}
    return {"storage_path": storage.path, "storage_filesystem": storage.filesystem()}


def make_trainer(cell: Cell, hub, storage: Location, resume: bool) -> TorchTrainer:
    """The cell's trainer; with `resume` it continues from the cell's newest intact checkpoint."""
    run_dir = storage / cell.cell_id
    if not resume:
        delete_tree(run_dir)
    scaling = ScalingConfig(
        num_workers=cell.scaling.num_workers,
        use_gpu=cell.scaling.use_gpu,
        resources_per_worker={"CPU": cell.scaling.cpus_per_worker},
        placement_strategy=cell.scaling.placement.upper(),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cell": cell.model_dump(mode="json"),
            "hub": hub,
            "checkpoint_root": run_dir.uri,
        },
        scaling_config=scaling,
        run_config=RunConfig(
            name=cell.cell_id,
            **ray_storage(storage),
            failure_config=FailureConfig(max_failures=cell.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )


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
        make_trainer(cell, hub, parse_location(config["storage"]), config["resume"]).fit()
        hub.post.remote(cell.cell_id, "phase", ("trainer.fit returned", time.time()))
    except BaseException as exc:
        ray.get(hub.post.remote(cell.cell_id, "failed", "".join(traceback.format_exception(exc))))
        raise
    ray.get(hub.post.remote(cell.cell_id, "finished", time.perf_counter() - start))


class DriverEvents:
    """The driver's side of the hub: logs, live display, event files and records of the cells.

    Only the driver writes to `results/` (workers may sit on other machines). With results on an
    object store, logs and event files are written to a local staging folder and uploaded every
    `SYNC_SECONDS` and when their cell ends; records and models go straight up.
    """

    SYNC_SECONDS = 10.0

    def __init__(self, cells: list[Cell], results_dir: Location, board: Board, staging: Path | None = None) -> None:
        from harness.tblog import CellEventWriters

        self.results_dir = results_dir
        self.staging = results_dir.local_path() if results_dir.is_local else staging
        self.board = board
        self.by_id = {cell.cell_id: cell for cell in cells}
        self.payloads: dict[str, dict] = {}
        self.records: dict[str, dict] = {}
        self.faults: dict[str, str] = {}
        self.logs: dict[str, Any] = {}
        self.event_files = CellEventWriters({cid: self.local_cell_dir(cid) for cid in self.by_id})
        self.uploaded: dict[str, tuple[int, int]] = {}
        self.last_sync = time.monotonic()

    def local_cell_dir(self, cell_id: str) -> Path:
        return self.staging / "cells" / cell_id

    def sync(self, cell_id: str | None = None, force: bool = False) -> None:
        """Upload the staged logs and event files that changed (of one cell, or all); local results: nothing."""
        from harness.storage import upload_file

        if self.results_dir.is_local or not (force or time.monotonic() - self.last_sync >= self.SYNC_SECONDS):
            return
        self.last_sync = time.monotonic()
        for cid in [cell_id] if cell_id else list(self.by_id):
            folder = self.local_cell_dir(cid)
            files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
            for path in files:
                stamp = (path.stat().st_size, path.stat().st_mtime_ns)
                key = f"{cid}/{path.name}"
                if self.uploaded.get(key) != stamp:
                    try:
                        upload_file(path, self.results_dir / "cells" / cid / path.name)
                    except OSError as err:  # the endpoint is away: the next sync tries again
                        logging.getLogger(__name__).warning("upload of %s delayed: %s", key, err)
                        continue
                    self.uploaded[key] = stamp

    def _open_log(self, cell_id: str):
        """The cell's train.log for appending (on an object store: the earlier runs' lines fetched first)."""
        from harness.storage import read_bytes

        path = self.local_cell_dir(cell_id) / "train.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.results_dir.is_local and not path.exists():
            try:
                path.write_bytes(read_bytes(self.results_dir / "cells" / cell_id / "train.log"))
            except FileNotFoundError:
                pass
        return path.open("a")

    def log_line(self, cell_id: str, line: str) -> None:
        handle = self.logs.get(cell_id)
        if handle is None:
            handle = self.logs[cell_id] = self._open_log(cell_id)
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        handle.flush()

    def finish(self, cell_id: str, wall: float) -> None:
        """A trial ended well: write the cell's record from its payload (or mark it failed)."""
        from harness.records import store_cell
        from harness.tblog import evaluation_scalars

        cell = self.by_id[cell_id]
        if cell_id not in self.payloads:
            self.board.finish(cell_id, None, status="failed", error="no result reported")
            return
        record = store_cell(self.results_dir, cell, self.payloads[cell_id], wall)
        phases.mark("record written")
        self.records[cell_id] = record
        self.log_line(cell_id, f"record written: mIoU {record['metrics']['mIoU']:.2f}, wall {wall:.1f}s")
        self.board.finish(cell_id, record["metrics"]["mIoU"])
        self.event_files.scalars(cell_id, cell.train.iterations, evaluation_scalars(self.payloads[cell_id]["metrics"]))
        self.event_files.close(cell_id)
        self.sync(cell_id, force=True)

    def fail(self, cell_id: str, trace: str) -> None:
        self.log_line(cell_id, "failed:\n" + trace)
        self.sync(cell_id, force=True)
        self.board.finish(cell_id, None, status="failed", error=self.faults.get(cell_id) or _short_error(trace))

    def record_fault(self, cell_id: str, message: str) -> None:
        self.faults[cell_id] = message
        self.log_line(cell_id, f"failed, not retried: {message}")

    def handle(self, events: list[tuple[str, str, Any]]) -> None:
        actions = {
            "log": self.log_line,
            "progress": lambda cid, p: self.board.progress(cid, *p),
            "scalars": lambda cid, p: self.event_files.scalars(cid, *p),
            "phase": lambda cid, p: phases.mark(*p),
            "result": self.payloads.__setitem__,
            "started": lambda cid, p: self.board.start(cid),
            "finished": self.finish,
            "fault": self.record_fault,
            "failed": self.fail,
        }
        for cell_id, kind, payload in events:
            actions[kind](cell_id, payload)

    def close(self, error: BaseException | None) -> None:
        """Cells still waiting or running failed (with the grid's error, if any); close the files."""
        for cell_id, state in self.board.cells.items():
            if cell_id in self.by_id and state.status in ("waiting", "running"):
                reason = _short_error(str(error)) if error is not None else "did not finish"
                self.board.finish(cell_id, None, status="failed", error=reason)
        for handle in self.logs.values():
            handle.close()
        self.event_files.close()
        self.sync(force=True)


def make_tuner(cells: list[Cell], hub, storage: Location, max_concurrent: int, resume: bool) -> tune.Tuner:
    """One Tune trial per cell (`cell_trial`), at most `max_concurrent` at once."""
    # the driver writes each cell's event files (harness/tblog.py); Ray Tune's own CSV/JSON/TensorBoard
    # loggers would only add an empty trial folder and print a TensorBoard hint pointing at it
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # without those files Tune's result analysis warns, once per trial, that it found no metrics:
    # ours travel through the hub
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    return tune.Tuner(
        tune.with_resources(cell_trial, {"cpu": 0, "memory": TRIAL_MEMORY_BYTES, **ON_HEAD_NODE}),
        param_space={
            "cell": tune.grid_search([cell.model_dump(mode="json") for cell in cells]),
            "hub": hub,
            "storage": storage.uri,
            "resume": resume,
        },
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=False),
        run_config=tune.RunConfig(name="grid", verbose=0, **ray_storage(storage)),
    )


def fit_while_draining(tuner: tune.Tuner, hub, events: DriverEvents) -> BaseException | None:
    """Run the grid in a thread while the driver handles the hub's events; the grid's error, if any."""
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            tuner.fit()
        except BaseException as exc:  # reported by the caller; cells already finished keep their records
            outcome["error"] = exc

    worker = threading.Thread(target=fit, name="idrbench-tune", daemon=True)
    phases.mark("tune grid starting")
    worker.start()
    while worker.is_alive():
        worker.join(timeout=1.0)
        events.handle(ray.get(hub.drain.remote()))
        events.sync()
    events.handle(ray.get(hub.drain.remote()))
    phases.mark("tune grid returned")
    return outcome.get("error")


def run_cells(
    cells: list[Cell], results_dir: Path | Location, board: Board, max_concurrent: int = 1, resume: bool = False
) -> dict[str, dict]:
    """Train and evaluate `cells` as one Ray Tune grid (a trial per cell); returns records by cell id.

    At most `max_concurrent` cells run at once. With `resume`, each cell continues from its
    newest intact checkpoint under `results_dir/_ray`. `results_dir` may be an object-store location.
    """
    from harness.fileio import temporary_directory

    results_dir = parse_location(results_dir)
    storage = results_dir / "_ray"
    if storage.is_local:
        storage.local_path().mkdir(parents=True, exist_ok=True)
    hub = ProgressHub.options(resources=ON_HEAD_NODE).remote()
    with temporary_directory("idrbench-staging-") as staging:
        events = DriverEvents(cells, results_dir, board, staging)
        try:
            error = fit_while_draining(make_tuner(cells, hub, storage, max_concurrent, resume), hub, events)
        finally:
            ray.kill(hub)  # a driver that lives on (a notebook, the test session) keeps no idle hub
        events.close(error)
    return events.records
