"""Training one cell: a plain, iteration-based SGD + poly loop, then evaluation.

`run_cell` is independent of Ray: it runs in any process (rank 0 of 1 by default) and
reports through a :class:`Reporter`. `harness.engine` calls it inside Ray Train workers.

Checkpoints (every `train.checkpoint_interval` iterations) are a directory holding
`model.pt` (model with its IDR buffers, optimiser, iteration; written by rank 0) and one
`rng_rank<r>.pt` per rank (torch / CUDA / numpy / Python generator states). All load with
`torch.load(weights_only=True)`. The data position is a function of the iteration (the
sampler is seeded by seed and epoch, the augmentation by seed, epoch and sample index), so a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from harness import context_probe
from harness.config import Cell
from harness.data import DataError, SegmentationDataset, build_dataset
from harness.evaluate import evaluate, protocol_kwargs
from harness.fileio import sha256_of_file, temporary_directory
from harness.measure import count_flops
from harness.optim import build_optimizer, lr_at
from harness.tblog import training_scalars
from models import build_segmentor
from models.training_state import TrainingProgress, epoch_of, hand_progress

MODEL_FILE = "model.pt"


class CellFault(RuntimeError):
    """A fault of the cell itself (its data or its optimisation) that retrying cannot heal.

    The message is the whole one-line report, naming the cell."""


class Diverged(CellFault):
    """The loss or the gradient norm became non-finite."""


class BadData(CellFault):
    """A training sample could not be read or failed its checks."""


class DivergenceGuard:
    """Stops a cell at its first non-finite loss or gradient norm, or after `allowed` skipped steps.

    All ranks take the same decision: the finiteness flag is reduced over the process group.
    """

    def __init__(self, cell_id: str, allowed: int, distributed: bool) -> None:
        self.cell_id = cell_id
        self.allowed = allowed
        self.distributed = distributed
        self.skipped = 0
        self.last_finite_loss: float | None = None

    def step_ok(self, iteration: int, loss: float, grad_norm: torch.Tensor) -> bool:
        """True when the step may be applied; False to skip it; raises Diverged past the budget."""
        finite = torch.tensor([loss, float(grad_norm)], dtype=torch.float64).isfinite().all().to(torch.int32)
        if self.distributed:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if bool(finite):
            self.last_finite_loss = loss
            return True
        self.skipped += 1
        if self.skipped <= self.allowed:
            return False
        last = "none" if self.last_finite_loss is None else f"{self.last_finite_loss:.4g}"
        skipped = f", {self.allowed} bad step(s) skipped before (train.skip_nonfinite)" if self.allowed else ""
        raise Diverged(
            f"{self.cell_id}: diverged at iteration {iteration + 1}: loss {loss:.4g}, gradient norm "
            f"{float(grad_norm):.4g}; last finite loss {last}{skipped}"
        )


class Reporter(Protocol):
    def log(self, cell_id: str, line: str) -> None: ...

    def progress(self, cell_id: str, stage: str, step: int, total: int, loss: float | None) -> None: ...

    def scalars(self, cell_id: str, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars of a log interval (harness/tblog.py); the driver writes them."""

    def restore(self) -> Path | None:
        """The checkpoint directory to resume from, if any."""

    def save(self, directory: Path, iteration: int) -> None:
        """Persist this rank's part of a checkpoint (called on every rank)."""


class PrintReporter:
    """Reporter for plain processes: log lines to stdout, checkpoints under `checkpoint_root`."""

    def __init__(self, checkpoint_root: Path | None = None, quiet: bool = False):
        self.checkpoint_root = checkpoint_root
        self.quiet = quiet

    def log(self, cell_id: str, line: str) -> None:
        if not self.quiet:
            print(f"[{cell_id}] {line}", flush=True)

    def progress(self, cell_id: str, stage: str, step: int, total: int, loss: float | None) -> None:
        pass

    def scalars(self, cell_id: str, step: int, values: dict[str, float]) -> None:
        pass

    def restore(self) -> Path | None:
        if self.checkpoint_root is None or not Path(self.checkpoint_root).is_dir():
            return None
        return intact_checkpoint(self.checkpoint_root, self.checkpoint_root, lambda line: self.log("-", line))

    def save(self, directory: Path, iteration: int) -> None:
        if self.checkpoint_root is None:
            return
        final = self.checkpoint_root / checkpoint_name(iteration)
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(directory, partial)
        if final.exists():  # already saved by an earlier attempt
            shutil.rmtree(partial)
        else:
            os.replace(partial, final)


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:08d}"


def manifest_name(rank: int) -> str:
    return f"files_rank{rank}.json"


def checkpoint_problem(directory: Path, checksums: bool = True) -> str | None:
    """What is wrong with a checkpoint folder (None: intact): a file missing, short or not as written.

    Each rank lists its files with their sizes and sha256 in a manifest; rank 0's also gives the
    world size. Checkpoints from before manifests existed count as intact when they hold the model
    file; manifests from before checksums are checked on sizes. `checksums=False` checks sizes only.
    """
    first = directory / manifest_name(0)
    if not first.is_file():
        if (directory / MODEL_FILE).is_file() and not any(directory.glob("files_rank*.json")):
            return None
        return f"{first.name}: missing"
    try:
        world_size = int(json.loads(first.read_text())["world_size"])
        for rank in range(world_size):
            manifest = json.loads((directory / manifest_name(rank)).read_text())
            for name, size in manifest["files"].items():
                problem = file_problem(directory / name, size, (manifest.get("sha256") or {}).get(name) if checksums else None)
                if problem:
                    return f"{name}: {problem}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"manifest unreadable ({type(err).__name__}: {err})"
    return None


def file_problem(path: Path, size: int, sha256: str | None) -> str | None:
    """How a file differs from its manifest entry (None: it matches)."""
    from harness.fileio import sha256_of_file

    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if actual != size:
        return f"{actual} bytes, the manifest says {size}"
    if sha256 is not None and sha256_of_file(path) != sha256:
        return "checksum differs from the manifest (sha256)"
    return None


def checkpoint_complete(directory: Path) -> bool:
    """Whether every rank's files are all there at their full size (a killed upload leaves some short)."""
    return checkpoint_problem(directory, checksums=False) is None


class NoIntactCheckpoint(CellFault):
    """Checkpoints exist, but every one of them is damaged."""


def checkpoint_candidates(root) -> list:
    """The checkpoint folders under `root` (a path or a `harness.storage.Location`), newest first."""
    from harness.storage import list_files, parse_location

    location = parse_location(root)
    folders = {name.rsplit("/", 1)[0] for name in list_files(location) if name.endswith("/" + MODEL_FILE)}
    named = [(checkpoint_iteration(folder), folder) for folder in folders if checkpoint_iteration(folder) is not None]
    return [location / folder for _, folder in sorted(named, reverse=True)]


def intact_checkpoint(root, staging: Path, log=print) -> Path | None:
    """The newest checkpoint under `root` whose files match their manifest, as a local folder (copied
    into `staging` from an object store); each damaged one is named in one `log` line and skipped.

    None when there is no checkpoint; NoIntactCheckpoint when there are some but none is intact.
    """
    from harness.storage import download_tree, parse_location

    candidates = checkpoint_candidates(root)
    for candidate in candidates:
        if candidate.is_local:
            folder = candidate.local_path()
        else:
            folder = staging / candidate.name
            shutil.rmtree(folder, ignore_errors=True)
            download_tree(candidate, folder)
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        log(f"damaged checkpoint skipped: {candidate.display}/{problem}")
    if candidates:
        raise NoIntactCheckpoint(f"no intact checkpoint under {parse_location(root).display}: all {len(candidates)} are damaged "
                                 "(see the lines above); run without --resume to start over")
    return None


def latest_checkpoint(root: Path) -> Path | None:
    """The newest intact local checkpoint folder under `root` (searched recursively), damaged ones skipped silently."""
    if not root or not Path(root).is_dir():
        return None
    found = [p.parent for p in Path(root).rglob(MODEL_FILE) if p.parent.name.startswith("iter_")]
    intact = [p for p in found if checkpoint_problem(p) is None]
    return max(intact, key=lambda p: p.name) if intact else None


def checkpoint_iteration(directory: Path | str) -> int | None:
    """The iteration in a checkpoint folder's name (`iter_00000010` -> 10), if it has one."""
    name = Path(directory).name
    return int(name[len("iter_"):]) if name.startswith("iter_") and name[len("iter_"):].isdigit() else None


def poly_lr(base_lr: float, iteration: int, total: int, power: float, min_lr: float) -> float:
    """mmsegmentation's poly schedule: (base - min) * (1 - it/total)^power + min."""
    return (base_lr - min_lr) * (1.0 - iteration / total) ** power + min_lr


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    directory: Path, model: nn.Module, optimizer, scaler, iteration: int, rank: int, world_size: int = 1,
    curve: list[dict] | None = None,
) -> None:
    """This rank's part of a checkpoint, then its manifest (file sizes: see `checkpoint_complete`)."""
    files = [f"rng_rank{rank}.pt"]
    if rank == 0:
        state = {
            "iteration": iteration,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "curve": curve or [],
        }
        torch.save(state, directory / MODEL_FILE)
        files.append(MODEL_FILE)
    torch.save(rng_state(), directory / f"rng_rank{rank}.pt")
    manifest = {
        "world_size": world_size,
        "files": {name: (directory / name).stat().st_size for name in files},
        "sha256": {name: sha256_of_file(directory / name) for name in files},
    }
    (directory / manifest_name(rank)).write_text(json.dumps(manifest))


def checkpoint_curve(directory: Path) -> list[dict]:
    """The learning-curve points a checkpoint carries (none in checkpoints from before curves)."""
    return list(torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True).get("curve", []))


def load_checkpoint(directory: Path, model: nn.Module, optimizer, scaler, rank: int, log) -> int:
    """Restore model, optimiser, loss scaler and this rank's generators; returns the iteration reached."""
    state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng_file = directory / f"rng_rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    else:
        log(f"checkpoint has no generator state for rank {rank}: random streams restart")
    return int(state["iteration"])


def _batches(
    dataset: SegmentationDataset,
    sampler: torch.utils.data.DistributedSampler,
    batch_size: int,
    start_iteration: int,
    loader_kwargs: dict,
) -> Iterator:
    """Batches forever, starting at the position `start_iteration` batches into the stream.

    Each epoch's loader draws its base seed from a generator of its own, not from torch's global
    one: otherwise a run resumed mid-epoch (which opens a loader where the uninterrupted run did
    not) would shift the global stream (dropout, IDR's picks) by one draw from then on.
    """
    per_epoch = len(sampler) // batch_size
    epoch, skip = divmod(start_iteration, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        order = list(sampler)
        chunks = [order[i * batch_size : (i + 1) * batch_size] for i in range(skip, per_epoch)]
        generator = torch.Generator().manual_seed(epoch)
        yield from torch.utils.data.DataLoader(dataset, batch_sampler=chunks, generator=generator, **loader_kwargs)
        epoch, skip = epoch + 1, 0


def _prepare_norm(model: nn.Module, cell: Cell, device: torch.device, world_size: int, log) -> nn.Module:
    if not cell.model.sync_bn or world_size == 1:
        return model
    if device.type == "cuda":
        log("using SyncBatchNorm across ranks")
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    log("SyncBatchNorm needs GPUs: using per-rank BatchNorm on CPU")
    return model


def gradient_norm(model: nn.Module, max_norm: float | None) -> torch.Tensor:
    """The global gradient norm (clipping to `max_norm` when given)."""
    if max_norm is not None:
        return nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def next_batch(batches: Iterator, cell_id: str, iteration: int):
    """The next training batch; a sample that fails to load becomes BadData naming its file."""
    try:
        return next(batches)
    except DataError as err:
        # A loader worker's error arrives wrapped in its traceback: its last line names the file.
        detail = str(err).strip().splitlines()[-1].removeprefix(f"{DataError.__module__}.DataError: ")
        raise BadData(f"{cell_id}: bad training data at iteration {iteration + 1}: {detail}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class CellRun:
    """What one worker holds while it trains and evaluates a cell."""

    cell: Cell
    reporter: Reporter
    rank: int
    world_size: int
    device: torch.device
    threads: int
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    sampler: torch.utils.data.DistributedSampler
    per_rank_batch: int  # images per micro-batch on this rank
    net: nn.Module  # the segmentor itself: checkpoints, evaluation, statistics
    model: nn.Module  # what the loop calls: `net`, wrapped in DDP when distributed
    distributed: bool
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    num_params: int
    complexity: dict
    start_iteration: int = 0
    curve: list[dict] = field(default_factory=list)  # learning-curve points (train.eval_interval)

    def log(self, line: str) -> None:
        if self.rank == 0:
            self.reporter.log(self.cell.cell_id, line)


def _per_rank_batch(cell: Cell, world_size: int) -> int:
    accumulation = cell.train.accumulation_steps
    if cell.train.batch_size % (world_size * accumulation):
        raise ValueError(
            f"train.batch_size {cell.train.batch_size} is not divisible by {world_size} workers x {accumulation} micro-batches"
        )
    return cell.train.batch_size // (world_size * accumulation)


def build_run(cell: Cell, reporter: Reporter, rank: int, world_size: int, device: torch.device) -> CellRun:
    """Threads, datasets, the model (DDP when distributed), sampler, optimiser and loss scaler."""
    threads = cell.train.torch_threads or max(1, int(cell.scaling.cpus_per_worker))
    torch.set_num_threads(threads)
    per_rank_batch = _per_rank_batch(cell, world_size)
    seed_everything(cell.seed)
    train_set = build_dataset(cell.dataset, cell.data_root, "train", cell.data_options, train=True, seed=cell.seed)
    val_set = build_dataset(cell.dataset, cell.data_root, cell.eval.split, cell.data_options, train=False)
    card = train_set.card
    net = build_segmentor(cell.framework, cell.idr, card.num_classes, cell.model, card.ignore_index)
    num_params = count_parameters(net)
    complexity = {"input_size": list(card.crop_size), **count_flops(net, card.crop_size)} if rank == 0 else {}

    def log(line: str) -> None:
        if rank == 0:
            reporter.log(cell.cell_id, line)

    net = _prepare_norm(net, cell, device, world_size, log).to(device)
    distributed = dist.is_available() and dist.is_initialized() and world_size > 1
    model = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None) \
        if distributed else net
    seed_everything(cell.seed * 1000 + rank)  # dropout and deletion picks differ across ranks
    sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=cell.seed, drop_last=True
    )
    if len(sampler) < per_rank_batch:
        raise ValueError(f"{cell.dataset}: {len(train_set)} training images give no batch of {per_rank_batch}")
    optimizer = build_optimizer(net, cell.train)
    scaler = torch.amp.GradScaler(device.type, enabled=cell.train.amp == "fp16")
    return CellRun(cell, reporter, rank, world_size, device, threads, train_set, val_set, sampler, per_rank_batch,
                   net, model, distributed, optimizer, scaler, num_params, complexity)


def restore(run: CellRun) -> None:
    """Continue from the checkpoint the reporter offers (a retry, or `--resume`), if any."""
    resume_from = run.reporter.restore()
    if resume_from is not None:
        try:
            run.start_iteration = load_checkpoint(resume_from, run.net, run.optimizer, run.scaler, run.rank, run.log)
        except RuntimeError as err:
            if "Error(s) in loading state_dict" not in str(err):
                raise
            raise CellFault(checkpoint_mismatch(run, resume_from, err)) from None
        run.curve = [p for p in checkpoint_curve(resume_from) if p["iteration"] <= run.start_iteration]
        run.log(f"resumed from {resume_from} at iteration {run.start_iteration}")


# what to do when the checkpoint a cell would resume from holds another model
RESUME_FLAGS = {
    "idr": "it is not this cell's; run without --resume (or remove it) to start afresh",
    "baseline": "it is not this cell's; run without --resume (or remove it) to start afresh",
    "framework": "it is not this cell's; run without --resume (or remove it) to start afresh",
    "classes": "the dataset's classes changed since; restore them, or run without --resume to start afresh",
}


def checkpoint_mismatch(run: CellRun, directory: Path, err: RuntimeError) -> str:
    """One line: what the checkpoint holds instead of the cell's model, and what to do."""
    from harness.checkpoint_fit import describe, diagnose

    cell = run.cell
    state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)["model"]
    classes = run.train_set.card.num_classes
    finding = diagnose(state, run.net, cell.framework, cell.idr, classes, cell.model)
    if finding is not None:
        return f"{cell.cell_id}: checkpoint {directory} {describe(finding, RESUME_FLAGS)}"
    return (f"{cell.cell_id}: checkpoint {directory} does not fit the cell's model "
            f"({' '.join(str(err).split())[:200]}); run without --resume to start afresh")


def start_line(run: CellRun) -> str:
    cell = run.cell
    return (
        f"start: {cell.framework}{' + IDR' if cell.idr else ''} on {cell.dataset}, backbone {cell.model.backbone}, "
        f"{run.num_params / 1e6:.2f} M params, {cell.train.iterations} iterations, batch {cell.train.batch_size} "
        f"over {run.world_size} worker(s), {len(run.train_set)} train / {len(run.val_set)} {cell.eval.split} images, "
        f"device {run.device}"
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, iteration: int, train_cfg) -> float:
    lr = lr_at(iteration, train_cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr


def progress_at(run: CellRun, iteration: int, lr: float) -> TrainingProgress:
    """The training state of step `iteration` for the modules that follow it (models/training_state.py)."""
    micro_batches_per_epoch = len(run.sampler) // run.per_rank_batch
    epoch = epoch_of(iteration, micro_batches_per_epoch, run.cell.train.accumulation_steps)
    return TrainingProgress(iteration=iteration, epoch=epoch, lr=lr)


def forward_backward(run: CellRun, batches: Iterator, iteration: int) -> dict[str, float]:
    """Gradients of one optimiser step (over `accumulation_steps` micro-batches); its loss terms."""
    accumulation = run.cell.train.accumulation_steps
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run.cell.train.amp)
    run.optimizer.zero_grad(set_to_none=True)
    step_losses: dict[str, float] = {}
    for micro in range(accumulation):
        images, labels = next_batch(batches, run.cell.cell_id, iteration)
        images, labels = images.to(run.device, non_blocking=True), labels.to(run.device, non_blocking=True)
        sync = micro == accumulation - 1 or not run.distributed  # DDP all-reduces on the last micro-batch only
        with (contextlib.nullcontext() if sync else run.model.no_sync()):
            with torch.autocast(run.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                losses = run.model(images, labels)
            run.scaler.scale(sum(losses.values()) / accumulation).backward()
        for name, value in losses.items():
            step_losses[name] = step_losses.get(name, 0.0) + float(value.detach()) / accumulation
    return step_losses


def apply_step(run: CellRun, guard: DivergenceGuard, iteration: int, step_losses: dict[str, float]) -> bool:
    """Clip and step, unless the loss or gradient norm is not finite (then skip, or raise Diverged)."""
    run.scaler.unscale_(run.optimizer)
    grad_norm = gradient_norm(run.model, run.cell.train.clip_grad_norm)
    applied = guard.step_ok(iteration, sum(step_losses.values()), grad_norm)
    if applied:
        run.scaler.step(run.optimizer)
    else:
        run.log(f"iteration {iteration + 1}: non-finite loss or gradient, step skipped ({guard.skipped}/{guard.allowed})")
    run.scaler.update()
    return applied


def report_progress(run: CellRun, step: int, lr: float, sums: dict[str, float], steps: int, elapsed: float) -> None:
    """The log line, the live display and the TensorBoard scalars of the last `steps` steps."""
    total = run.cell.train.iterations
    means = {name: value / max(steps, 1) for name, value in sums.items()}
    mean_loss = sum(means.values())
    parts = " ".join(f"{name} {value:.4f}" for name, value in means.items())
    run.log(f"iter {step}/{total} lr {lr:.2e} loss {mean_loss:.4f} ({parts}) {elapsed:.1f}s")
    if run.rank == 0:
        run.reporter.progress(run.cell.cell_id, "train", step, total, mean_loss)
        run.reporter.scalars(run.cell.cell_id, step, training_scalars(means, lr, run.net))


def save_progress(run: CellRun, step: int) -> None:
    """A checkpoint of every rank, handed to the reporter (Ray Train moves it to storage)."""
    with temporary_directory("idrbench-ckpt-") as tmp:
        save_checkpoint(tmp, run.net, run.optimizer, run.scaler, step, run.rank, run.world_size, run.curve)
        run.reporter.save(tmp, step)
    run.log(f"checkpoint at iteration {step}")


def train_loop(run: CellRun, stop_after: int | None = None) -> float | None:
    """Train from `run.start_iteration` to the end; the seconds it took (None: stopped at `stop_after`)."""
    train_cfg, total = run.cell.train, run.cell.train.iterations
    loader_kwargs = {"num_workers": train_cfg.loader_workers, "pin_memory": run.device.type == "cuda"}
    batches = _batches(run.train_set, run.sampler, run.per_rank_batch,
                       run.start_iteration * train_cfg.accumulation_steps, loader_kwargs)
    guard = DivergenceGuard(run.cell.cell_id, train_cfg.skip_nonfinite, run.distributed)
    sums: dict[str, float] = {}
    steps = 0
    run.model.train()
    start = time.perf_counter()
    for iteration in range(run.start_iteration, total):
        lr = set_learning_rate(run.optimizer, iteration, train_cfg)
        hand_progress(run.net, progress_at(run, iteration, lr))
        step_losses = forward_backward(run, batches, iteration)
        if apply_step(run, guard, iteration, step_losses):
            steps += 1
            for name, value in step_losses.items():
                sums[name] = sums.get(name, 0.0) + value
        step = iteration + 1
        if step % train_cfg.log_interval == 0 or step == total:
            report_progress(run, step, lr, sums, steps, time.perf_counter() - start)
            sums, steps = {}, 0
        if train_cfg.eval_interval and step % train_cfg.eval_interval == 0:
            evaluate_curve_point(run, step)
        if train_cfg.checkpoint_interval and step % train_cfg.checkpoint_interval == 0 and step < total:
            save_progress(run, step)
        if stop_after is not None and step >= stop_after:
            return None
    return time.perf_counter() - start


def idr_relations(net: nn.Module) -> torch.Tensor | None:
    """The learned mean relation matrix of the model's IDR module, if it has one."""
    for module in net.modules():
        if hasattr(module, "relations_mean") and hasattr(module, "pick_counts"):
            return module.relations_mean
    return None


def is_context_scenes(cell: Cell) -> bool:
    return cell.dataset == context_probe.scenes.NAME


def context_flip(run: CellRun, dataset: SegmentationDataset) -> dict:
    """Flip rate and swapped-image mIoU of `dataset` (context scenes) under the cell's protocol."""
    cell = run.cell
    swapped = context_probe.SwappedScenes(dataset, cell.data_options, cell.eval.split)
    return context_probe.evaluate_context_flip(run.net, dataset, swapped, run.device, cell.eval.batch_size,
                                               run.rank, run.world_size, **protocol_kwargs(cell.eval))


def relation_recovery(run: CellRun) -> dict | None:
    """Ranks of the true context classes in the learned relations (IDR cells on context scenes)."""
    relations = idr_relations(run.net)
    if relations is None or not is_context_scenes(run.cell):
        return None
    return context_probe.relation_recovery(relations, run.train_set.card.class_names)


def curve_scalars(point: dict) -> dict[str, float]:
    """The TensorBoard scalars of one learning-curve point."""
    scalars = {"curve/mIoU": point["mIoU"]}
    scalars.update({f"curve_iou/{name}": value for name, value in point["focus_iou"].items()})
    if point.get("flip_rate") is not None:
        scalars["curve/context_flip_rate"] = point["flip_rate"]
    recovery = point.get("relation_recovery")
    if recovery is not None:
        scalars["relations/mean_reciprocal_rank"] = recovery["mean_reciprocal_rank"]
        scalars.update({f"relations/rank_{name}": float(rank) for name, rank in recovery["ranks"].items()})
    return scalars


def evaluate_curve_point(run: CellRun, step: int) -> None:
    """One learning-curve point on the fixed curve subset (all ranks take part); training's random
    streams are left as they were, so a cell trains the same with or without curves."""
    cell = run.cell
    subset = context_probe.first_images(run.val_set, cell.train.eval_subset)
    devices = [run.device] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        metrics = evaluate(run.net, subset, run.device, cell.eval.batch_size, run.rank, run.world_size,
                           cell.train.loader_workers, **protocol_kwargs(cell.eval))
        flip = context_flip(run, subset) if is_context_scenes(cell) else None
    run.model.train()
    focus = run.train_set.card.focus_classes
    point = {
        "iteration": step,
        "mIoU": metrics["mIoU"],
        "focus_iou": {name: metrics["per_class_iou"][name] for name in focus},
        "flip_rate": flip["flip_rate"] if flip else None,
        "relation_recovery": relation_recovery(run),
    }
    run.curve.append(point)
    run.log(f"curve at iteration {step}: mIoU {point['mIoU']:.2f} on {len(subset)} {cell.eval.split} images")
    if run.rank == 0:
        run.reporter.scalars(cell.cell_id, step, curve_scalars(point))


def learning_curve(run: CellRun) -> dict | None:
    """The record's curve: which images it was measured on, and its points."""
    cell = run.cell
    if not cell.train.eval_interval:
        return None
    images = len(context_probe.first_images(run.val_set, cell.train.eval_subset))
    subset = f"first {images} of {cell.eval.split}" if images < len(run.val_set) else f"all of {cell.eval.split}"
    return {"eval_interval": cell.train.eval_interval, "images": subset, "num_images": images, "points": run.curve}


def evaluate_run(run: CellRun) -> tuple[dict, float]:
    """The cell's test protocol on its evaluation split (all ranks take part); metrics and seconds."""
    start = time.perf_counter()

    def on_eval_batch(done: int, count: int) -> None:
        if run.rank == 0:
            run.reporter.progress(run.cell.cell_id, "eval", done, count, None)

    cell = run.cell
    metrics = evaluate(run.net, run.val_set, run.device, cell.eval.batch_size, run.rank, run.world_size,
                       cell.train.loader_workers, on_eval_batch, **protocol_kwargs(cell.eval))
    run.log(f"eval on {cell.eval.split}: mIoU {metrics['mIoU']:.2f} mAcc {metrics['mAcc']:.2f} aAcc {metrics['aAcc']:.2f}")
    if is_context_scenes(cell):
        metrics["context_flip"] = context_flip(run, run.val_set)
        run.log(f"context flip rate on {cell.eval.split}: {_percent(metrics['context_flip']['flip_rate'])}")
    return metrics, time.perf_counter() - start


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


def final_model_bytes(net: nn.Module, iteration: int) -> bytes:
    """The content of the cell's final model file: weights and IDR buffers, loadable with weights_only=True.

    Serialised here, in the worker, so that the progress hub passes plain bytes on and never
    imports torch just to unpickle tensors (that import cost seconds on every cell).
    """
    state = {name: tensor.detach().cpu() for name, tensor in net.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"iteration": iteration, "model": state}, buffer)
    return buffer.getvalue()


def payload(run: CellRun, metrics: dict, train_time: float, eval_time: float) -> dict:
    """What rank 0 hands the driver: metrics, sizes, timings and the final weights."""
    done_iterations = run.cell.train.iterations - run.start_iteration
    return {
        "metrics": metrics,
        "params": run.num_params,
        "complexity": run.complexity,
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "iterations_per_s": done_iterations / train_time if train_time > 0 else None,
        "resumed_from_iteration": run.start_iteration,
        "world_size": run.world_size,
        "device": str(run.device),
        "torch_threads": run.threads,
        "learning_curve": learning_curve(run),
        "relation_recovery": relation_recovery(run),
        "final_model": final_model_bytes(run.net, run.cell.train.iterations),
    }


def run_cell(
    cell: Cell,
    reporter: Reporter,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    stop_after: int | None = None,
) -> dict | None:
    """Train and evaluate one cell; rank 0 returns the metrics payload, other ranks None.

    `stop_after` ends training early at that iteration without evaluating (used to test resume).
    """
    run = build_run(cell, reporter, rank, world_size, device or torch.device("cpu"))
    restore(run)
    run.log(start_line(run))
    train_time = train_loop(run, stop_after)
    if train_time is None:
        return None
    metrics, eval_time = evaluate_run(run)
    return payload(run, metrics, train_time, eval_time) if rank == 0 else None
