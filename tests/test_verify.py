"""Dataset verification: every sample decoded once, a stamp keyed by the files, bad files found mid-split."""
from __future__ import annotations

import os
import re

import pytest

from harness.config import load_experiment
from harness.data import DataError, build_dataset
from harness.data.verify import check_stamp, stamp_path, verify_dataset
from harness.prepare import main as prepare_main
from harness.run import check_datasets, main, resolve_cells
from harness.train import BadData, PrintReporter, run_cell
from tests.conftest import tiny_experiment
from tests.test_real_datasets import H, W, _label, _save, _truncate, write_ade20k

SCENES = {"num_train": 8, "num_val": 4, "image_size": 32}


def test_prepare_verify_names_a_bad_file_in_the_middle_of_a_split(tmp_path, capsys):
    base = write_ade20k(tmp_path)
    bad = base / "images" / "training" / "ADE_train_00000002.jpg"  # the second of three
    good = bad.read_bytes()
    _truncate(bad)
    assert prepare_main(["ade20k", "--root", str(tmp_path), "--allow-partial", "--verify"]) == 1
    out = capsys.readouterr().out
    assert "ade20k: 1 of 5 samples failed verification (train 3, val 2):" in out
    assert f"train: {bad}: cannot decode image" in out
    assert not stamp_path(tmp_path, "ade20k").exists()
    bad.write_bytes(good)
    assert prepare_main(["ade20k", "--root", str(tmp_path), "--allow-partial", "--verify"]) == 0
    assert "ade20k: verified 5 image/label pairs (train 3, val 2)" in capsys.readouterr().out
    assert check_stamp("ade20k", tmp_path) is None


@pytest.mark.parametrize("fault", ["label_range", "size"])
def test_verification_checks_label_range_and_size(tmp_path, fault):
    base = write_ade20k(tmp_path)
    label = base / "annotations" / "training" / "ADE_train_00000002.png"
    if fault == "label_range":
        _save(_label([1, 151]), label)
        expected = f"{label}: label value 151 outside 0..149 (ignore 255)"
    else:
        _save(_label([1, 2], h=H + 2), label)
        expected = f"{label}: label is {W}x{H + 2} but image ADE_train_00000002.jpg is {W}x{H}"
    result = verify_dataset("ade20k", tmp_path, workers=2)
    assert [p.split(": ", 1)[1] for p in result.problems] == [expected]


def _ade_cells(write_experiment, tmp_path):
    exp = tiny_experiment("v", grid={"datasets": ["ade20k"], "idr": [False]})
    path = write_experiment(exp)
    write_ade20k(tmp_path / "datasets")
    return path, resolve_cells(load_experiment(path))


def test_run_refuses_a_dataset_without_a_current_stamp(write_experiment, tmp_path, capsys):
    path, cells = _ade_cells(write_experiment, tmp_path)
    root = tmp_path / "datasets"
    assert main([str(path), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "error: ade20k: not verified" in err
    assert f"python -m harness.prepare ade20k --root {root} --verify" in err and "--no-verify" in err
    check_datasets(cells, verify=False)
    assert verify_dataset("ade20k", root).ok
    check_datasets(cells)
    label = root / "ade20k" / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000002.png"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    with pytest.raises(DataError, match=re.escape("ade20k: files changed since verification")):
        check_datasets(cells)
    assert not (tmp_path / "r").exists()


def _scene_cell(write_experiment, **train):
    exp = tiny_experiment("bad", grid={"idr": [False]}, train={"iterations": 3, "batch_size": 4, **train})
    return resolve_cells(load_experiment(write_experiment(exp)))[0]


def test_generated_scenes_are_stamped_and_a_corrupted_one_is_refused(write_experiment, tmp_path):
    cell = _scene_cell(write_experiment)
    samples = build_dataset("context_scenes", cell.data_root, "train", cell.data_options, train=True).samples
    assert check_stamp("context_scenes", cell.data_root, cell.data_options) is None
    _truncate(samples[5].image)
    with pytest.raises(DataError, match=re.escape(f"train: {samples[5].image}: cannot decode image")):
        check_datasets([cell])


@pytest.mark.parametrize("loader_workers", [0, 1])
def test_bad_file_met_in_training_fails_the_cell_naming_it(write_experiment, loader_workers):
    cell = _scene_cell(write_experiment, loader_workers=loader_workers)
    samples = build_dataset("context_scenes", cell.data_root, "train", cell.data_options, train=True).samples
    _truncate(samples[5].label)
    with pytest.raises(BadData) as caught:
        run_cell(cell, PrintReporter(quiet=True))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{cell.cell_id}: bad training data at iteration ")
    assert f": {samples[5].label}: cannot decode label" in message, message
