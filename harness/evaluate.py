"""Evaluation: whole-image inference, a confusion matrix summed over ranks, and the metrics."""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from harness.data import SegmentationDataset
from harness.metrics import confusion_matrix, segmentation_metrics


def _as_list(batch: list) -> list:
    """Keep samples apart: test images of one batch may differ in size."""
    return batch


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, label_size: tuple[int, int]) -> torch.Tensor:
    """Whole-image, single-scale prediction resized to the label size: [B,H,W] class ids."""
    logits = model(images)
    if logits.shape[-2:] != label_size:
        logits = F.interpolate(logits, size=label_size, mode="bilinear", align_corners=False)
    return logits.argmax(1)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    device: torch.device,
    batch_size: int = 4,
    rank: int = 0,
    world_size: int = 1,
    loader_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict:
    """Score this rank's share of `dataset`; confusion matrices are all-reduced, not predictions."""
    card = dataset.card
    k = card.num_classes
    model.eval()
    shard = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world_size)))
    loader = torch.utils.data.DataLoader(
        shard, batch_size=batch_size, shuffle=False, num_workers=loader_workers, collate_fn=_as_list
    )
    confusion = torch.zeros(k, k, dtype=torch.int64, device=device)
    for step, batch in enumerate(loader):
        same_size = len({tuple(img.shape) for img, _ in batch}) == 1 and len({tuple(l.shape) for _, l in batch}) == 1
        groups = [batch] if same_size else [[item] for item in batch]
        for group in groups:
            images = torch.stack([img for img, _ in group]).to(device)
            labels = torch.stack([lab for _, lab in group]).to(device)
            pred = predict(model, images, tuple(labels.shape[-2:]))
            confusion += confusion_matrix(pred, labels, k, card.ignore_index)
        if on_batch is not None:
            on_batch(step + 1, len(loader))
    if dist.is_available() and dist.is_initialized() and world_size > 1:
        dist.all_reduce(confusion, op=dist.ReduceOp.SUM)
    metrics = segmentation_metrics(confusion.cpu(), card.class_names)
    metrics["num_images"] = len(dataset)
    return metrics
