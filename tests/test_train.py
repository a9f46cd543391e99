"""The per-cell training loop in a plain process (no Ray): schedule, determinism, errors."""
import json

import pytest

from harness.config import load_experiment
from harness.run import resolve_cells
from harness.train import PrintReporter, latest_checkpoint, poly_lr, run_cell
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


@pytest.mark.parametrize(
    "extra",
    [{}, {"accumulation_steps": 2, "amp": "bf16", "clip_grad_norm": 1.0}],
    ids=["plain", "accumulation-bf16-clip"],
)
def test_interrupted_run_resumes_to_the_same_result(write_experiment, tmp_path, extra):
    train = {"iterations": 4, "batch_size": 4, "checkpoint_interval": 2, **extra}
    cell = _cells(write_experiment, grid={"idr": [True]}, train=train)[0]
    uninterrupted = run_cell(cell, PrintReporter(quiet=True))
    root = tmp_path / "ckpt"
    assert run_cell(cell, PrintReporter(root, quiet=True), stop_after=3) is None  # "crash" after iteration 3
    assert latest_checkpoint(root).name == "iter_00000002"
    resumed = run_cell(cell, PrintReporter(root, quiet=True))
    assert resumed["resumed_from_iteration"] == 2
    assert resumed["metrics"]["per_class_iou"] == uninterrupted["metrics"]["per_class_iou"]


def test_checkpoints_load_with_weights_only(write_experiment, tmp_path):
    import torch

    cell = _cells(write_experiment, train={"iterations": 2, "batch_size": 4, "checkpoint_interval": 1})[1]
    run_cell(cell, PrintReporter(tmp_path, quiet=True))
    state = torch.load(latest_checkpoint(tmp_path) / "model.pt", weights_only=True)
    assert state["iteration"] == 1
    assert "head.relations_mean" in state["model"] and state["optimizer"]["state"]
    rng = torch.load(latest_checkpoint(tmp_path) / "rng_rank0.pt", weights_only=True)
    assert set(rng) == {"torch", "cuda", "numpy", "python"}


def test_a_checkpoint_cut_short_is_not_the_newest(tmp_path):
    import torch

    from harness.train import checkpoint_complete, save_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for iteration in (2, 4, 6):
        for rank in (0, 1):
            folder = tmp_path / f"iter_{iteration:08d}"
            folder.mkdir(exist_ok=True)
            save_checkpoint(folder, model, optimizer, scaler, iteration, rank, world_size=2)
    assert latest_checkpoint(tmp_path).name == "iter_00000006"
    model_file = tmp_path / "iter_00000006" / "model.pt"
    model_file.write_bytes(model_file.read_bytes()[:-10])  # the upload was killed mid-file
    (tmp_path / "iter_00000004" / "files_rank1.json").unlink()  # rank 1's part never arrived
    assert not checkpoint_complete(tmp_path / "iter_00000006")
    assert latest_checkpoint(tmp_path).name == "iter_00000002"


def test_the_payload_reaches_the_hub_without_torch(write_experiment):
    """The progress hub (a process that never imports torch) unpickles what rank 0 sends: the final
    model travels as the bytes of its file, which loads with weights_only=True."""
    import io
    import pickle
    import subprocess
    import sys

    import torch

    cell = _cells(write_experiment, grid={"idr": [True]}, train={"iterations": 1, "batch_size": 4})[0]
    payload = run_cell(cell, PrintReporter(quiet=True))
    unpickle = "import pickle, sys; pickle.loads(sys.stdin.buffer.read()); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", unpickle], input=pickle.dumps(payload), capture_output=True, check=True)
    assert out.stdout.strip() == b"False"
    final = torch.load(io.BytesIO(payload["final_model"]), weights_only=True)
    assert final["iteration"] == 1 and "head.relations_mean" in final["model"]


def test_learning_curve_is_recorded_and_leaves_training_unchanged(write_experiment):
    train = {"iterations": 4, "batch_size": 4}
    plain = _cells(write_experiment, grid={"idr": [True]}, train=train)[0]
    curved = plain.model_copy(update={"train": plain.train.model_copy(update={"eval_interval": 2, "eval_subset": 2})})
    without = run_cell(plain, PrintReporter(quiet=True))
    with_curve = run_cell(curved, PrintReporter(quiet=True))
    assert with_curve["metrics"]["per_class_iou"] == without["metrics"]["per_class_iou"]
    assert without["learning_curve"] is None
    curve = with_curve["learning_curve"]
    assert curve["num_images"] == 2 and curve["images"] == "first 2 of val"
    assert [p["iteration"] for p in curve["points"]] == [2, 4]
    point = curve["points"][-1]
    assert set(point["focus_iou"]) == {"boat", "car", "sheep", "goat"}
    assert set(point["relation_recovery"]["ranks"]) == {"boat", "car", "sheep", "goat"}
    flip = with_curve["metrics"]["context_flip"]
    assert flip["num_images"] == 4 and flip["pixels"] > 0 and 0.0 <= flip["flip_rate"] <= 100.0
    assert with_curve["relation_recovery"]["candidates"] == 9


def test_the_learning_curve_survives_a_resume(write_experiment, tmp_path):
    train = {"iterations": 4, "batch_size": 4, "checkpoint_interval": 2, "eval_interval": 1, "eval_subset": 1}
    cell = _cells(write_experiment, grid={"idr": [False]}, train=train)[0]
    uninterrupted = run_cell(cell, PrintReporter(quiet=True))
    root = tmp_path / "ckpt"
    assert run_cell(cell, PrintReporter(root, quiet=True), stop_after=3) is None
    resumed = run_cell(cell, PrintReporter(root, quiet=True))
    assert json.dumps(resumed["learning_curve"]) == json.dumps(uninterrupted["learning_curve"])  # NaN-safe
    assert [p["iteration"] for p in resumed["learning_curve"]["points"]] == [1, 2, 3, 4]
    assert resumed["relation_recovery"] is None
