"""TensorBoard scalars: computed by the training loop, written by the driver, read back from the events."""
from __future__ import annotations

import math

import pytest
import torch

from harness.config import load_experiment
from harness.run import resolve_cells
from harness.tblog import (
    CellEventWriters,
    evaluation_scalars,
    pick_count_entropy,
    read_scalars,
    relation_scalars,
)
from harness.train import PrintReporter, run_cell
from tests.conftest import tiny_experiment


class ScalarsReporter(PrintReporter):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.reported: list[tuple[int, dict[str, float]]] = []

    def scalars(self, cell_id: str, step: int, values: dict[str, float]) -> None:
        self.reported.append((step, values))


def test_pick_count_entropy_is_one_when_uniform_and_small_when_concentrated():
    assert pick_count_entropy(torch.full((5,), 7.0)) == pytest.approx(1.0)
    assert pick_count_entropy(torch.tensor([1000.0, 1e-6, 1e-6, 1e-6])) < 0.01
    two_of_four = -2 * 0.5 * math.log(0.5) / math.log(4)
    assert pick_count_entropy(torch.tensor([3.0, 3.0, 0.0, 0.0])) == pytest.approx(two_of_four)


def test_relation_scalars_by_hand():
    head = torch.nn.Module()
    head.register_buffer("relations_mean", torch.tensor([[1.0, -0.5], [0.25, 1.0]]))
    head.register_buffer("relations_var", torch.eye(2))
    head.register_buffer("pick_counts", torch.tensor([2.0, 2.0]))
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), head)
    stats = relation_scalars(model)
    assert stats["idr/relations_mean_abs"] == pytest.approx(2.75 / 4)
    assert stats["idr/relations_mean_offdiag_abs"] == pytest.approx(0.375)
    assert stats["idr/relations_var_offdiag_abs"] == 0.0
    assert stats["idr/pick_count_entropy"] == pytest.approx(1.0)
    assert relation_scalars(torch.nn.Conv2d(1, 1, 1)) == {}


def test_training_scalars_written_and_read_back(write_experiment, tmp_path):
    exp = tiny_experiment("tb", grid={"idr": [True]}, train={"iterations": 4, "batch_size": 4, "log_interval": 2})
    cell = resolve_cells(load_experiment(write_experiment(exp)))[0]
    reporter = ScalarsReporter()
    payload = run_cell(cell, reporter)
    assert [step for step, _ in reporter.reported] == [2, 4]
    first = reporter.reported[0][1]
    assert {"loss/total", "loss/stage1", "loss/stage2", "lr", "grad_norm", "idr/relations_mean_abs",
            "idr/pick_count_entropy"} <= set(first)
    assert first["loss/total"] == pytest.approx(sum(v for k, v in first.items() if k.startswith("loss/") and k != "loss/total"))
    assert first["grad_norm"] > 0 and 0 < first["idr/pick_count_entropy"] <= 1

    folder = tmp_path / "results" / "cells" / cell.cell_id
    writers = CellEventWriters({cell.cell_id: folder})
    for step, values in reporter.reported:
        writers.scalars(cell.cell_id, step, values)
    writers.scalars(cell.cell_id, 4, evaluation_scalars(payload["metrics"]))
    writers.close()
    events = read_scalars(folder)
    for step, values in reporter.reported:
        for tag, value in values.items():
            assert dict(events[tag])[step] == pytest.approx(value, rel=1e-6)
    assert events["val/mIoU"] == [(4, pytest.approx(payload["metrics"]["mIoU"], rel=1e-6))]
    boat = payload["metrics"]["per_class_iou"]["boat"]
    assert ("val_iou/boat" in events) == (not math.isnan(boat))


def test_final_flip_rate_and_curve_points_become_scalars():
    from harness.tblog import evaluation_scalars
    from harness.train import curve_scalars

    final = evaluation_scalars({"mIoU": 50.0, "context_flip": {"flip_rate": 42.0}})
    assert final["val/context_flip_rate"] == 42.0
    assert "val/context_flip_rate" not in evaluation_scalars({"mIoU": 50.0, "context_flip": {"flip_rate": None}})
    point = {"iteration": 100, "mIoU": 40.0, "focus_iou": {"boat": 10.0}, "flip_rate": 5.0,
             "relation_recovery": {"mean_reciprocal_rank": 0.5, "ranks": {"boat": 2}}}
    assert curve_scalars(point) == {"curve/mIoU": 40.0, "curve_iou/boat": 10.0, "curve/context_flip_rate": 5.0,
                                    "relations/mean_reciprocal_rank": 0.5, "relations/rank_boat": 2.0}
