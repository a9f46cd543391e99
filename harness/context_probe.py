"""What context scenes can tell that no public benchmark can: does a model read context?

Two measures, both pure functions of tensors (tests/test_study_metrics.py checks them on
hand-made predictions and matrices whose answer is known):

* *context flip rate* — the share of ambiguous-object pixels (ground truth boat, car, sheep,
  goat) whose prediction moves to the partner class when only the context is swapped
  (:func:`harness.data.context_scenes.swap_context`: same geometry, same object pixels, the
  bands and the object labels exchanged). A model that guesses from appearance or position
  predicts the same class on both images (0); one that reads the band follows it (1).
* *relation recovery* — for each ambiguous class, the rank of its true context class
  (water -> boat, road -> car, grass -> sheep, snow -> goat) in its column of the learned
  relation matrix. `IDRCore.record_deletion` writes the effect of deleting class d on the
  loss of ground-truth class c into R[d, c] (models.idr.update_relations indexes rows by the
  deleted class), so "deleting water hurts boat" is R[water, boat]: column boat, row water.
  The rank is against every other class; the *partner margin* asks only what telling boat
  from car needs: R[water, boat] - R[road, boat] (the true context against the partner's).

`python -m harness.context_probe RESULTS_DIR` scores the relation matrix of every trained
+IDR cell on context scenes under RESULTS_DIR (its model.pt), also for records written
before a measure existed.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from harness.data import SegmentationDataset
from harness.data import context_scenes as scenes
from harness.evaluate import predict
from harness.metrics import confusion_matrix, segmentation_metrics

AMBIGUOUS_OBJECTS: tuple[str, ...] = tuple(name for pair in scenes.AMBIGUOUS_PAIRS for name in pair)
TRUE_CONTEXT: dict[str, str] = {
    obj: ctx for mapping in (scenes.VEHICLE_FOR, scenes.ANIMAL_FOR) for ctx, obj in mapping.items()
}


def partner_of_objects(class_names: tuple[str, ...] | list[str]) -> torch.Tensor:
    """[K] long: each ambiguous object's partner class id, -1 for every other class."""
    index = {name: i for i, name in enumerate(class_names)}
    partner = torch.full((len(class_names),), -1, dtype=torch.long)
    for name in AMBIGUOUS_OBJECTS:
        partner[index[name]] = index[scenes.PARTNER[name]]
    return partner


def flip_counts(
    pred_original: torch.Tensor, pred_swapped: torch.Tensor, target: torch.Tensor, partner: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per ground-truth class (of the original image): pixels whose prediction flipped, and pixels.

    A pixel flips when its prediction on the swapped image is the partner of its prediction
    on the original. Only pixels whose ground truth has a partner (`partner >= 0`) count;
    both outputs are [K] int64, to be summed over batches (and ranks) before dividing.
    """
    k = partner.shape[0]
    partner = partner.to(target.device)
    safe_target = target.clamp(0, k - 1)
    counted = (target >= 0) & (target < k) & (partner[safe_target] >= 0)
    expected_flip = partner[pred_original.clamp(0, k - 1)]
    flipped = (expected_flip >= 0) & (expected_flip == pred_swapped)
    total = torch.bincount(safe_target[counted], minlength=k)
    flips = torch.bincount(safe_target[counted & flipped], minlength=k)
    return flips, total


def flip_rates(flips: torch.Tensor, total: torch.Tensor, class_names: tuple[str, ...] | list[str]) -> dict:
    """{"flip_rate": share over all ambiguous pixels (percent), "per_class": {name: percent or None}}."""
    partner = partner_of_objects(class_names)
    counted = partner >= 0
    all_pixels = int(total[counted].sum())
    overall = 100.0 * float(flips[counted].sum()) / all_pixels if all_pixels else None
    per_class = {
        class_names[i]: (100.0 * float(flips[i]) / int(total[i]) if int(total[i]) else None)
        for i in torch.nonzero(counted).flatten().tolist()
    }
    return {"flip_rate": overall, "per_class": per_class, "pixels": all_pixels}


def context_ranks(relations: torch.Tensor, context: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """Rank (1 = first) of R[context[i], objects[i]] in column objects[i], the diagonal left out.

    Ties count against the true class (the rank is the number of other rows at least as
    large, plus one), so an untrained identity matrix ranks every true class last (K - 1).
    """
    k = relations.shape[0]
    columns = relations[:, objects].T  # [P,K]: the relation column of each object
    true_value = columns.gather(1, context.unsqueeze(1))  # [P,1]
    rows = torch.arange(k, device=relations.device).unsqueeze(0)
    others = (rows != objects.unsqueeze(1)) & (rows != context.unsqueeze(1))
    return 1 + ((columns >= true_value) & others).sum(1)


def partner_margins(
    relations: torch.Tensor, context: torch.Tensor, partner_context: torch.Tensor, objects: torch.Tensor
) -> torch.Tensor:
    """R[context[i], objects[i]] - R[partner_context[i], objects[i]]: positive when the object's
    relation column weighs its own context above the context of the class it is confused with."""
    return relations[context, objects] - relations[partner_context, objects]


def relation_recovery(relations: torch.Tensor, class_names: tuple[str, ...] | list[str]) -> dict:
    """Ranks of each ambiguous class's true context class, their mean reciprocal rank and the
    share ranked first (percent), out of K - 1 candidates; the partner margins (see
    :func:`partner_margins`) and the share of them above zero (percent)."""
    index = {name: i for i, name in enumerate(class_names)}
    objects = torch.tensor([index[name] for name in AMBIGUOUS_OBJECTS])
    context = torch.tensor([index[TRUE_CONTEXT[name]] for name in AMBIGUOUS_OBJECTS])
    partner_context = torch.tensor([index[TRUE_CONTEXT[scenes.PARTNER[name]]] for name in AMBIGUOUS_OBJECTS])
    matrix = relations.detach().float().cpu()
    ranks = context_ranks(matrix, context, objects)
    margins = partner_margins(matrix, context, partner_context, objects)
    return {
        "ranks": {name: int(rank) for name, rank in zip(AMBIGUOUS_OBJECTS, ranks)},
        "mean_reciprocal_rank": float((1.0 / ranks.double()).mean()),
        "share_first": 100.0 * float((ranks == 1).double().mean()),
        "candidates": len(class_names) - 1,
        "partner_margin": {name: float(m) for name, m in zip(AMBIGUOUS_OBJECTS, margins)},
        "partner_preferred": 100.0 * float((margins > 0).double().mean()),
    }


def true_relations(class_names: tuple[str, ...] | list[str]) -> torch.Tensor:
    """[K,K] the generator's dependencies in the relation matrix's orientation: 1 at
    R[context, object] for the four true pairs, 0 elsewhere (drawn beside the learned one)."""
    index = {name: i for i, name in enumerate(class_names)}
    matrix = torch.zeros(len(class_names), len(class_names))
    for obj, ctx in TRUE_CONTEXT.items():
        matrix[index[ctx], index[obj]] = 1.0
    return matrix


# ----------------------------------------------------------------------------- evaluation


class SwappedScenes(SegmentationDataset):
    """The context-swapped twin of a context-scenes split: scene i rendered from
    `swap_context(layout of scene i)`, in memory, through the split's own test pipeline."""

    def __init__(self, original: SegmentationDataset, options: dict[str, Any], split: str) -> None:
        super().__init__(original.samples, original.card, original.pipeline)
        opts = {**scenes.DEFAULT_OPTIONS, **options}
        self.scene_seed, self.image_size, self.split = int(opts["seed"]), int(opts["image_size"]), split

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        scene_index = int(self.samples[index].image.stem)
        layout = scenes.scene_layout(self.scene_seed, self.split, scene_index, self.image_size)
        return scenes.render_scene(scenes.swap_context(layout))


def first_images(dataset: SegmentationDataset, count: int | None) -> SegmentationDataset:
    """The same dataset cut to its first `count` images (all of them for None or 0)."""
    if not count or count >= len(dataset):
        return dataset
    subset = copy.copy(dataset)
    subset.samples = dataset.samples[:count]
    return subset


@torch.no_grad()
def evaluate_context_flip(
    model: torch.nn.Module,
    original: SegmentationDataset,
    swapped: SegmentationDataset,
    device: torch.device,
    batch_size: int = 4,
    rank: int = 0,
    world_size: int = 1,
    **protocol,
) -> dict:
    """Flip rate (see :func:`flip_counts`) and mIoU on the swapped images; this rank's share of
    the images, counts summed over ranks. `protocol`: the keywords of harness.evaluate.predict."""
    card = original.card
    k = card.num_classes
    partner = partner_of_objects(card.class_names).to(device)
    flip_swap = tuple(getattr(card, "flip_swap", ()))
    counts = torch.zeros(2, k, dtype=torch.int64, device=device)
    confusion = torch.zeros(k, k, dtype=torch.int64, device=device)
    model.eval()
    indices = list(range(rank, len(original), world_size))
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        pairs = [(original[i], swapped[i]) for i in chunk]
        images = torch.stack([o[0] for o, _ in pairs] + [s[0] for _, s in pairs]).to(device)
        labels = torch.stack([o[1] for o, _ in pairs] + [s[1] for _, s in pairs]).to(device)
        pred = predict(model, images, tuple(labels.shape[-2:]), flip_swap=flip_swap, **protocol)
        n = len(chunk)
        flips, total = flip_counts(pred[:n], pred[n:], labels[:n].long(), partner)
        counts += torch.stack([flips, total])
        confusion += confusion_matrix(pred[n:], labels[n:], k, card.ignore_index)
    if dist.is_available() and dist.is_initialized() and world_size > 1:
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        dist.all_reduce(confusion, op=dist.ReduceOp.SUM)
    result = flip_rates(counts[0].cpu(), counts[1].cpu(), card.class_names)
    swapped_metrics = segmentation_metrics(confusion.cpu(), card.class_names)
    result["swapped_mIoU"] = swapped_metrics["mIoU"]
    result["num_images"] = len(original)
    return result


# ----------------------------------------------------------------------------- rescoring trained cells


def load_relations(path: Path) -> dict[str, Any]:
    """`relations_mean` and `relations_var` ([K, K] tensors) of a checkpoint's IDR head."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = state.get("model", state) if isinstance(state, dict) else state
    found = {}
    for name in ("relations_mean", "relations_var"):
        keys = [k for k in model if k == f"head.{name}" or k.endswith(f".{name}")]
        keys.sort(key=lambda k: (k != f"head.{name}", len(k)))
        if not keys:
            raise KeyError(f"{path}: no {name} buffer (is this a +IDR model?)")
        found[name] = model[keys[0]].detach().float().cpu()
    return found


def rescore_records(results_dir: Path) -> list[dict]:
    """Relation recovery of every +IDR context-scenes cell under `results_dir`, computed again from
    the relation matrix in its model.pt: {"cell", "group" (the cell id without its seed), **recovery}."""
    from harness.records import find_records

    rows = []
    for record in find_records(results_dir):
        if record.get("dataset") != "context_scenes" or not record.get("idr"):
            continue
        model_file = Path(results_dir) / "cells" / record["cell_id"] / "model.pt"
        relations = load_relations(model_file)["relations_mean"]
        recovery = relation_recovery(relations, list(record["per_class_iou"]))
        group = re.sub(r"_s\d+(?=_|$)", "", record["cell_id"], count=1)
        rows.append({"cell": record["cell_id"], "group": group, **recovery})
    return rows


def recovery_summary(rows: list[dict]) -> str:
    """A markdown table: per group of seeds, the mean reciprocal rank, the share ranked first,
    the share of positive partner margins and the mean margin of each ambiguous class."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    header = ["cells (seeds)", "n", "MRR", "ranked first %", "partner preferred %",
              *(f"margin {name}" for name in AMBIGUOUS_OBJECTS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group, members in sorted(groups.items()):
        figures = [fmean(m["mean_reciprocal_rank"] for m in members), fmean(m["share_first"] for m in members),
                   fmean(m["partner_preferred"] for m in members),
                   *(fmean(m["partner_margin"][name] for m in members) for name in AMBIGUOUS_OBJECTS)]
        cells = [f"{figures[0]:.2f}", f"{figures[1]:.0f}", f"{figures[2]:.0f}", *(f"{v:+.3f}" for v in figures[3:])]
        lines.append("| " + " | ".join([group, str(len(members)), *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.context_probe",
                                     description="Score the learned relations of trained +IDR context-scenes cells.")
    parser.add_argument("results", type=Path, help="an experiment's results folder (results/EXP)")
    args = parser.parse_args(argv)
    if not (args.results / "cells").is_dir():
        print(f"error: {args.results}: no cells/ folder (expected an experiment's results folder)", file=sys.stderr)
        return 2
    try:
        rows = rescore_records(args.results)
    except (KeyError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {args.results}: no trained +IDR cell on context_scenes", file=sys.stderr)
        return 2
    print(recovery_summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
