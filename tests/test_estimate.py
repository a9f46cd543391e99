import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.nn as nn

from harness import diskcache, estimate
from harness.config import expand_cells, load_experiment
from harness.data import dataset_card
from harness.estimate import (
    Rate,
    estimate_cells,
    eval_pixels_per_image,
    measured_rate,
    reduced_size,
    scaled_forward_flops,
    eval_image_size,
    window_count,
)
from harness.evaluate import window_starts
from harness.measure import count_flops
from harness.run import main
from tests.conftest import tiny_experiment


def test_reduced_size_is_a_multiple_of_32_and_at_least_64():
    assert reduced_size((512, 1024)) == (128, 256)
    assert reduced_size((473, 473)) == (128, 128)
    assert reduced_size((64, 64)) == (64, 64)


def test_scaled_flops_of_a_convolutional_model_equal_the_full_count():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1))
    counted = []

    def count(size):
        counted.append(size)
        return count_flops(model, size)["total"]

    full = count_flops(model, (256, 512))["total"]
    assert scaled_forward_flops(count, (256, 512)) == pytest.approx(full, rel=1e-9)
    assert counted == [(64, 128)]  # only the reduced size was counted


@pytest.mark.parametrize("size, crop, stride", [((512, 683), (512, 512), (341, 341)), ((1024, 2048), (512, 1024), (341, 683)),
                                                (((640, 640)), (640, 640), (426, 426)), ((700, 1500), (640, 640), (426, 426))])
def test_window_count_matches_the_sliding_window_grid(size, crop, stride):
    expected = len(window_starts(size[0], crop[0], stride[0])) * len(window_starts(size[1], crop[1], stride[1]))
    assert window_count(size, crop, stride) == expected


def test_test_image_size_and_augmentation_pixels(write_experiment):
    ade = dataset_card("ade20k")
    assert eval_image_size(ade) == (512, 683)  # a 4:3 image fitted into (2048, 512)
    lip = dataset_card("lip")
    assert eval_image_size(lip) == tuple(lip.eval_scale)  # exact resize
    exp = load_experiment(write_experiment(tiny_experiment("t", eval={"flip": True, "scales": [0.5, 1.0]})))
    cell = expand_cells(exp)[0]
    card = dataset_card(cell.dataset, cell.data_options)
    h, w = eval_image_size(card)
    expected = 2 * (round(h * 0.5) * round(w * 0.5) + h * w)
    assert eval_pixels_per_image(cell, card) == expected


def _record(device="cuda:0", flops=10e9, batch=16, iterations=1000, seconds=100.0, world=8, **extra):
    return {"device": device, "complexity": {"total": flops}, "train_time_s": seconds, "world_size": world,
            "config": {"train": {"batch_size": batch, "iterations": iterations}}, **extra}


def test_measured_rate_from_finished_gpu_cells():
    records = [
        _record(seconds=100.0),
        _record(seconds=50.0),
        _record(seconds=200.0, resumed_from_iteration=500),
        _record(device="cpu", seconds=1.0),  # CPU cells say nothing of a GPU
        _record(seconds=1.0, evaluated_from="x"),  # re-evaluated: not a training run
    ]
    rate = measured_rate(records)
    per_gpu = [3 * 10e9 * 16 * it / (s * 8) for it, s in ((1000, 100.0), (1000, 50.0), (500, 200.0))]
    assert rate.flops_per_s == pytest.approx(sorted(per_gpu)[1])
    assert "3 finished GPU cell" in rate.source
    assert measured_rate([_record(device="cpu")]) is None


def test_estimate_adds_training_and_evaluation_work(write_experiment):
    exp = load_experiment(write_experiment(tiny_experiment("t", scaling={"num_workers": 2},
                                                           train={"iterations": 10, "batch_size": 4})))
    cells = expand_cells(exp)
    rate = Rate(1e9, "test")
    estimates = estimate_cells(cells, rate)
    assert [e.cell_id for e in estimates] == [c.cell_id for c in cells]
    for cell, est in zip(cells, estimates):
        card = dataset_card(cell.dataset, cell.data_options)
        assert est.train_gflops == pytest.approx(3 * est.forward_gflops * 4 * 10)
        per_pixel = est.forward_gflops / (card.crop_size[0] * card.crop_size[1])
        assert est.eval_gflops == pytest.approx(per_pixel * eval_pixels_per_image(cell, card) * card.splits["val"])
        assert est.gpu_hours == pytest.approx((est.train_gflops + est.eval_gflops) * 1e9 / 1e9 / 3600)
        assert est.wall_hours == pytest.approx(est.gpu_hours / 2)
    assert estimates[1].forward_gflops != estimates[0].forward_gflops  # IDR changes the model


def test_dry_run_prints_gpu_hours(write_experiment, capsys):
    path = write_experiment(tiny_experiment("t"))
    assert main([str(path), "--dry-run", "--gpu-rate", "1e12"]) == 0
    out = capsys.readouterr().out
    assert "GPU-h" in out and "1e+12 FLOPs/s per GPU, given with --gpu-rate" in out
    assert "estimated" in out and "GPU-hours in all" in out


def test_flop_counts_are_cached_per_model_and_size(write_experiment, tmp_path, monkeypatch):
    monkeypatch.setenv(diskcache.CACHE_ENV, str(tmp_path / "cache"))
    built = []
    real = estimate.count_model_flops

    def counting(cell, num_classes, ignore_index):
        built.append(cell.cell_id)
        return real(cell, num_classes, ignore_index)

    monkeypatch.setattr(estimate, "count_model_flops", counting)
    cells = expand_cells(load_experiment(write_experiment(tiny_experiment("t"))))
    first = estimate_cells(cells, Rate(1e9, "test"))
    assert len(built) == 2 and (tmp_path / "cache" / "flop_counts.json").is_file()
    again = estimate_cells(cells, Rate(1e9, "test"))
    assert len(built) == 2  # nothing counted the second time
    assert [e.forward_gflops for e in again] == [e.forward_gflops for e in first]
    wider = [c.model_copy(update={"model": c.model.model_copy(update={"feats_channels": 24})}) for c in cells]
    estimate_cells(wider, Rate(1e9, "test"))
    assert len(built) == 4  # another model config is another key


def test_flop_cache_key_depends_on_size_and_code(monkeypatch):
    key = estimate.FlopCache.key("fcn|True|5|{}", (64, 64))
    assert key != estimate.FlopCache.key("fcn|True|5|{}", (64, 96))
    monkeypatch.setattr(estimate, "code_fingerprint", lambda: "other code")
    assert key != estimate.FlopCache.key("fcn|True|5|{}", (64, 64))


def test_a_second_plan_imports_no_model_library(write_experiment, tmp_path, monkeypatch):
    """Once a plan's FLOP counts and backbone names are cached, `--dry-run` imports neither timm
    (nor torchvision through it) nor transformers: that is what makes a second plan quick."""
    monkeypatch.setenv(diskcache.CACHE_ENV, str(tmp_path / "cache"))
    exp = tiny_experiment("t", grid={"frameworks": ["fcn", "mask2former"], "datasets": ["context_scenes"],
                                     "idr": [False], "seeds": [0]})
    path = write_experiment(exp)
    assert main([str(path), "--dry-run"]) == 0  # counts and remembers
    probe = (
        "import sys; from harness.run import main; code = main([sys.argv[1], '--dry-run']); "
        "print(code, [m for m in ('timm', 'torchvision', 'transformers') if m in sys.modules])"
    )
    env = {**os.environ, diskcache.CACHE_ENV: str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr
