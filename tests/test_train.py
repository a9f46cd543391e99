"""The per-cell training loop in a plain process (no Ray): schedule, determinism, errors."""
import pytest

from harness.config import load_experiment
from harness.run import resolve_cells
from harness.train import PrintReporter, poly_lr, run_cell
from tests.conftest import tiny_experiment


def test_poly_schedule():
    assert poly_lr(0.01, 0, 100, 0.9, 1e-4) == pytest.approx(0.01)
    assert poly_lr(0.01, 100, 100, 0.9, 1e-4) == pytest.approx(1e-4)
    mid = poly_lr(0.01, 50, 100, 0.9, 0.0)
    assert mid == pytest.approx(0.01 * 0.5**0.9)


def _cells(write_experiment, **sections):
    return resolve_cells(load_experiment(write_experiment(tiny_experiment("plain", **sections))))


def test_same_seed_same_result(write_experiment):
    cell = _cells(write_experiment, grid={"idr": [True]})[0]
    first = run_cell(cell, PrintReporter())
    second = run_cell(cell, PrintReporter())
    assert first["metrics"]["per_class_iou"] == second["metrics"]["per_class_iou"]
    assert first["params"] == second["params"]
    other_seed = run_cell(cell.model_copy(update={"seed": 1}), PrintReporter())
    assert other_seed["metrics"]["per_class_iou"] != first["metrics"]["per_class_iou"]


def test_too_few_images_for_a_batch(write_experiment):
    cell = _cells(write_experiment, train={"iterations": 1, "batch_size": 64})[0]
    with pytest.raises(ValueError, match="give no batch of 64"):
        run_cell(cell, PrintReporter())
