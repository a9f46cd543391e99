"""Where training stands, handed by the training loop to the modules whose computation follows it.

Most models ignore the schedule. A few official modules read it: MCIBI's memory momentum is
scaled by the current learning rate and its memory loss starts with the second epoch. Such a
module has a method ``follow_training(progress: TrainingProgress)``; the loop calls
:func:`hand_progress` on the model before every optimiser step, and it reaches every module
that has one (whatever wraps it). A module that never hears from the loop (a test, a measure
run) keeps the state it starts with, :data:`BEFORE_TRAINING`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass(frozen=True)
class TrainingProgress:
    """The coming optimiser step.

    iteration: its 0-based index; epoch: the 1-based pass over the training set it belongs to
    (the official trainer's `epoch`); lr: the base learning rate it runs at (before any
    per-group multiplier; None when unknown).
    """

    iteration: int
    epoch: int
    lr: float | None

    def __post_init__(self) -> None:
        if self.iteration < 0 or self.epoch < 1:
            raise ValueError(f"training progress: iteration {self.iteration} (>= 0), epoch {self.epoch} (>= 1)")


BEFORE_TRAINING = TrainingProgress(iteration=0, epoch=1, lr=None)


def epoch_of(iteration: int, micro_batches_per_epoch: int, accumulation_steps: int = 1) -> int:
    """The 1-based epoch of optimiser step `iteration`: that of its first micro-batch."""
    return iteration * accumulation_steps // max(micro_batches_per_epoch, 1) + 1


def hand_progress(model: nn.Module, progress: TrainingProgress) -> int:
    """Give `progress` to every module of `model` that follows training; how many did."""
    followers = [m for m in model.modules() if callable(getattr(m, "follow_training", None))]
    for module in followers:
        module.follow_training(progress)
    return len(followers)
