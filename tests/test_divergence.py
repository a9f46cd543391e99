"""A diverging cell stops at its first non-finite step (no Ray: the plain training loop)."""
import pytest

from harness.config import load_experiment
from harness.run import resolve_cells
from harness.train import Diverged, DivergenceGuard, PrintReporter, run_cell
from tests.conftest import tiny_experiment


def _diverging_cell(write_experiment, **train):
    settings = {"iterations": 8, "batch_size": 4, "lr": 1e6, "log_interval": 1, **train}
    exp = tiny_experiment("diverge", grid={"idr": [True]}, train=settings)
    return resolve_cells(load_experiment(write_experiment(exp)))[0]


def test_huge_learning_rate_stops_the_cell_with_one_line(write_experiment, capsys):
    cell = _diverging_cell(write_experiment)
    with pytest.raises(Diverged) as caught:
        run_cell(cell, PrintReporter())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{cell.cell_id}: diverged at iteration ")
    assert "last finite loss " in message and "last finite loss none" not in message
    iteration = int(message.split("diverged at iteration ")[1].split(":")[0])
    assert iteration < cell.train.iterations
    assert "eval on" not in capsys.readouterr().out


def test_skip_nonfinite_skips_that_many_steps_then_fails(write_experiment, capsys):
    cell = _diverging_cell(write_experiment, skip_nonfinite=2, iterations=12)
    with pytest.raises(Diverged, match=r"2 bad step\(s\) skipped"):
        run_cell(cell, PrintReporter())
    assert capsys.readouterr().out.count("step skipped") == 2


def test_guard_keeps_the_last_finite_loss():
    guard = DivergenceGuard("c", allowed=1, distributed=False)
    import torch

    assert guard.step_ok(0, 2.5, torch.tensor(1.0))
    assert not guard.step_ok(1, float("inf"), torch.tensor(1.0))
    with pytest.raises(Diverged, match="iteration 3: loss 1, gradient norm nan; last finite loss 2.5"):
        guard.step_ok(2, 1.0, torch.tensor(float("nan")))
