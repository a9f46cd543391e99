"""Training one cell: a plain, iteration-based SGD + poly loop, then evaluation.

`run_cell` is independent of Ray: it runs in any process (rank 0 of 1 by default) and
reports through a :class:`Reporter`. `harness.engine` calls it inside Ray Train workers.
"""
from __future__ import annotations

import os
import random
import time
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from harness.config import Cell
from harness.data import build_dataset
from harness.evaluate import evaluate
from models import build_segmentor


class Reporter(Protocol):
    def log(self, cell_id: str, line: str) -> None: ...

    def progress(self, cell_id: str, stage: str, step: int, total: int, loss: float | None) -> None: ...


class PrintReporter:
    """Reporter for plain processes: progress and log lines to stdout."""

    def log(self, cell_id: str, line: str) -> None:
        print(f"[{cell_id}] {line}", flush=True)

    def progress(self, cell_id: str, stage: str, step: int, total: int, loss: float | None) -> None:
        pass


def poly_lr(base_lr: float, iteration: int, total: int, power: float, min_lr: float) -> float:
    """mmsegmentation's poly schedule: (base - min) * (1 - it/total)^power + min."""
    return (base_lr - min_lr) * (1.0 - iteration / total) ** power + min_lr


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _infinite_batches(loader: torch.utils.data.DataLoader, sampler, dataset):
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def _prepare_norm(model: nn.Module, cell: Cell, device: torch.device, world_size: int, log) -> nn.Module:
    if not cell.model.sync_bn or world_size == 1:
        return model
    if device.type == "cuda":
        log("using SyncBatchNorm across ranks")
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    log("SyncBatchNorm needs GPUs: using per-rank BatchNorm on CPU")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_cell(
    cell: Cell,
    reporter: Reporter,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> dict | None:
    """Train and evaluate one cell; rank 0 returns the metrics payload, other ranks None."""
    device = device or torch.device("cpu")
    cell_id = cell.cell_id

    def log(line: str) -> None:
        if rank == 0:
            reporter.log(cell_id, line)

    threads = cell.train.torch_threads or max(1, int(cell.scaling.cpus_per_worker))
    torch.set_num_threads(threads)
    if cell.train.batch_size % world_size:
        raise ValueError(f"train.batch_size {cell.train.batch_size} is not divisible by {world_size} workers")
    per_rank_batch = cell.train.batch_size // world_size

    seed_everything(cell.seed)
    train_set = build_dataset(cell.dataset, cell.data_root, "train", cell.data_options, train=True, seed=cell.seed)
    val_set = build_dataset(cell.dataset, cell.data_root, cell.eval.split, cell.data_options, train=False)
    card = train_set.card
    model = build_segmentor(cell.framework, cell.idr, card.num_classes, cell.model, card.ignore_index)
    num_params = count_parameters(model)
    model = _prepare_norm(model, cell, device, world_size, log).to(device)
    distributed = dist.is_available() and dist.is_initialized() and world_size > 1
    if distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    seed_everything(cell.seed * 1000 + rank)  # dropout and deletion picks differ across ranks

    sampler = (
        torch.utils.data.DistributedSampler(train_set, world_size, rank, shuffle=True, seed=cell.seed, drop_last=True)
        if distributed
        else torch.utils.data.RandomSampler(train_set, generator=torch.Generator().manual_seed(cell.seed))
    )
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=per_rank_batch,
        sampler=sampler,
        num_workers=cell.train.loader_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    if len(loader) == 0:
        raise ValueError(f"{cell.dataset}: {len(train_set)} training images give no batch of {per_rank_batch}")
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cell.train.lr, momentum=cell.train.momentum, weight_decay=cell.train.weight_decay
    )
    log(
        f"start: {cell.framework}{' + IDR' if cell.idr else ''} on {cell.dataset}, backbone {cell.model.backbone}, "
        f"{num_params / 1e6:.2f} M params, {cell.train.iterations} iterations, batch {cell.train.batch_size} "
        f"over {world_size} worker(s), {len(train_set)} train / {len(val_set)} {cell.eval.split} images, device {device}"
    )

    total = cell.train.iterations
    batches = _infinite_batches(loader, sampler if distributed else None, train_set)
    model.train()
    start = time.perf_counter()
    running: dict[str, float] = {}
    for iteration in range(total):
        lr = poly_lr(cell.train.lr, iteration, total, cell.train.poly_power, cell.train.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        losses = model(images, labels)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, value in losses.items():
            running[name] = running.get(name, 0.0) + float(value.detach())
        step = iteration + 1
        if step % cell.train.log_interval == 0 or step == total:
            n = cell.train.log_interval if step % cell.train.log_interval == 0 else step % cell.train.log_interval
            means = {name: value / n for name, value in running.items()}
            mean_loss = sum(means.values())
            parts = " ".join(f"{name} {value:.4f}" for name, value in means.items())
            log(f"iter {step}/{total} lr {lr:.2e} loss {mean_loss:.4f} ({parts}) {time.perf_counter() - start:.1f}s")
            if rank == 0:
                reporter.progress(cell_id, "train", step, total, mean_loss)
            running = {}
    train_time = time.perf_counter() - start

    eval_start = time.perf_counter()
    net = model.module if distributed else model

    def on_eval_batch(done: int, count: int) -> None:
        if rank == 0:
            reporter.progress(cell_id, "eval", done, count, None)

    metrics = evaluate(
        net, val_set, device, cell.eval.batch_size, rank, world_size, cell.train.loader_workers, on_eval_batch
    )
    eval_time = time.perf_counter() - eval_start
    log(f"eval on {cell.eval.split}: mIoU {metrics['mIoU']:.2f} mAcc {metrics['mAcc']:.2f} aAcc {metrics['aAcc']:.2f}")
    if rank != 0:
        return None
    return {
        "metrics": metrics,
        "params": num_params,
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "iterations_per_s": total / train_time if train_time > 0 else None,
        "world_size": world_size,
        "device": str(device),
        "torch_threads": threads,
        "pid": os.getpid(),
    }
