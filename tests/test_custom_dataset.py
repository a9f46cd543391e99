"""A user's own dataset, described in the experiment (data.custom), through prepare, run, tables and results."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from harness.config import ConfigError, load_experiment
from tests.conftest import tiny_experiment

CLASSES = ["road", "car", "tree"]
COLOURS = np.array([[90, 90, 90], [200, 30, 30], [30, 160, 40]], dtype=np.uint8)


def write_pair(base: Path, split: str, stem: str, label: np.ndarray, seed: int) -> None:
    noise = np.random.default_rng(seed).integers(0, 20, (*label.shape, 3), dtype=np.uint8)
    Image.fromarray(COLOURS[np.minimum(label, 2)] + noise).save(base / "images" / split / f"{stem}.jpg")
    Image.fromarray(label).save(base / "labels" / split / f"{stem}.png")


def make_roads(root: Path, counts: dict[str, int] | None = None, size: int = 32) -> Path:
    """A dataset as a user keeps one: images/ and labels/ with a folder per split, and a classes.txt."""
    base = root / "my_roads"
    for split, count in (counts or {"train": 6, "val": 3}).items():
        (base / "images" / split).mkdir(parents=True)
        (base / "labels" / split).mkdir(parents=True)
        for index in range(count):
            label = np.zeros((size, size), np.uint8)
            label[:, size // 3 + index % 3 :] = 1
            label[: size // 2, 2 * size // 3 :] = 2
            write_pair(base, split, f"{split}_{index:03d}", label, index)
    (base / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return base


def roads_experiment(name: str = "roads", **description) -> dict:
    custom = {
        "path": "my_roads",
        "splits": {"train": {"images": "images/train", "labels": "labels/train"},
                   "val": {"images": "images/val", "labels": "labels/val"}},
        "classes": "classes.txt",
        "crop_size": [32, 32],
        "base_scale": [32, 32],
        "focus_classes": ["car"],
        **description,
    }
    grid = {"frameworks": ["fcn"], "datasets": ["my_roads"], "idr": [False, True], "seeds": [0]}
    return tiny_experiment(name, grid=grid, data={"options": {}, "custom": {"my_roads": custom}})


def prepare(*args: str) -> int:
    from harness.prepare import main

    return main(list(args))


def test_description_becomes_the_cells_card(write_experiment, tmp_path):
    make_roads(tmp_path / "datasets")
    exp = load_experiment(write_experiment(roads_experiment()))
    from harness.config import expand_cells
    from harness.data import build_dataset, dataset_card

    cell = expand_cells(exp)[0]
    card = dataset_card(cell.dataset, cell.data_options)
    assert card.class_names == tuple(CLASSES) and card.crop_size == (32, 32) and card.focus_classes == ("car",)
    dataset = build_dataset(cell.dataset, cell.data_root, "val", cell.data_options, train=False)
    assert len(dataset) == 3
    image, label = dataset.load(0)
    assert image.shape == (32, 32, 3) and set(np.unique(label)) == {0, 1, 2}


def test_reduce_zero_label_maps_zero_to_ignore(write_experiment, tmp_path):
    make_roads(tmp_path / "datasets")
    exp = load_experiment(write_experiment(roads_experiment(reduce_zero_label=True)))
    from harness.data import build_dataset

    options = exp.data.options_of("my_roads")
    _, label = build_dataset("my_roads", exp.data.root, "val", options, train=False).load(0)
    assert set(np.unique(label)) == {255, 0, 1}  # raw 0 -> ignore, 1 -> 0, 2 -> 1


def test_prepare_verify_with_the_experiment(write_experiment, tmp_path, capsys):
    make_roads(tmp_path / "datasets")
    path = write_experiment(roads_experiment())
    assert prepare("my_roads", "--experiment", str(path), "--verify") == 0
    out = capsys.readouterr().out
    assert "my_roads train: 6 image/label pairs" in out and "my_roads: verified 9 image/label pairs" in out


def test_listing_problems_one_line_each_all_at_once(write_experiment, tmp_path, capsys, monkeypatch):
    base = make_roads(tmp_path / "datasets", {"train": 6, "val": 2})
    (base / "labels" / "train" / "train_002.png").unlink()
    (base / "labels" / "train" / "train_004.png").rename(base / "labels" / "train" / "stray.png")
    for folder in ("images", "labels"):
        for path in (base / folder / "val").iterdir():
            path.unlink()
    path = write_experiment(roads_experiment())
    assert prepare("my_roads", "--experiment", str(path)) == 2
    err = capsys.readouterr().err
    assert (f"my_roads train: 2 of 6 image(s) in {base / 'images' / 'train'} have no label among the 5 in "
            f"{base / 'labels' / 'train'} (first: train_002, train_004)") in err
    assert "my_roads train: 1 of 5 label(s) in" in err and "have no image among the 6 in" in err
    assert "(first: stray)" in err
    assert "my_roads val: the split is empty" in err

    import ray

    from harness.run import main

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started on data known to be bad"))
    results = tmp_path / "results"
    assert main([str(path), "--results", str(results)]) == 2  # the same lines, before any work
    assert not results.exists()
    err = capsys.readouterr().err
    assert "have no label among the 5" in err and "my_roads val: the split is empty" in err


def test_label_value_outside_the_classes_names_file_and_value(write_experiment, tmp_path, capsys):
    base = make_roads(tmp_path / "datasets")
    bad = base / "labels" / "val" / "val_001.png"
    label = np.asarray(Image.open(bad)).copy()
    label[0, 0] = 7
    Image.fromarray(label).save(bad)
    path = write_experiment(roads_experiment())
    assert prepare("my_roads", "--experiment", str(path), "--verify") == 1
    assert f"val: {bad}: label value 7 outside 0..2 (ignore 255)" in capsys.readouterr().out


def test_palette_that_disagrees_with_the_classes(write_experiment, tmp_path):
    make_roads(tmp_path / "datasets")
    path = write_experiment(roads_experiment(palette=[[0, 0, 0], [1, 1, 1]], focus_classes=["bus"]))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    lines = str(err.value).splitlines()
    assert any("custom.my_roads.palette: 2 colours for 3 classes" in line for line in lines)
    assert any("custom.my_roads.focus_classes: 'bus' is not one of its classes" in line for line in lines)


def test_class_file_missing_and_name_taken(write_experiment, tmp_path):
    make_roads(tmp_path / "datasets")
    with pytest.raises(ConfigError, match=r"custom\.my_roads\.classes: class file .*names\.txt not found"):
        load_experiment(write_experiment(roads_experiment(classes="names.txt")))
    exp = roads_experiment()
    exp["data"]["custom"] = {"ade20k": exp["data"]["custom"]["my_roads"]}
    exp["grid"]["datasets"] = ["ade20k"]
    with pytest.raises(ConfigError, match="custom.ade20k: a built-in dataset has this name"):
        load_experiment(write_experiment(exp))


def test_evaluate_predictions_on_a_custom_dataset(write_experiment, tmp_path, capsys):
    base = make_roads(tmp_path / "datasets")
    path = write_experiment(roads_experiment())
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for label in (base / "labels" / "val").iterdir():
        predictions.joinpath(label.name).write_bytes(label.read_bytes())  # perfect predictions
    from harness.evaluate.command import main

    code = main(["--predictions", str(predictions), "--dataset", "my_roads", "--split", "val", "--custom", str(path)])
    assert code == 0
    assert "100.00" in capsys.readouterr().out


@pytest.mark.ray
@pytest.mark.slow
def test_run_tables_and_results_on_a_folder_dataset(ray_session, write_experiment, tmp_path, capsys):
    from harness.results import load
    from harness.run import main
    from harness.tables import main as tables_main

    make_roads(tmp_path / "datasets")
    path = write_experiment(roads_experiment())
    assert prepare("my_roads", "--experiment", str(path), "--verify") == 0
    results = tmp_path / "results"
    assert main([str(path), "--results", str(results)]) == 0
    assert tables_main([str(results / "roads")]) == 0
    table = (results / "roads" / "table.md").read_text()
    assert "my_roads" in table and "car" in table  # the focus class's IoU row
    frame = load(results / "roads")
    assert sorted(frame["idr"]) == [False, True] and set(frame["dataset"]) == {"my_roads"}
    assert set(frame["source"]) == {"trained"} and frame["mIoU"].notna().all()
    assert {"iou.road", "iou.car", "iou.tree"} <= set(frame.columns)
    stored = yaml.safe_load(path.read_text())["data"]["custom"]["my_roads"]
    assert frame["record"][0]["config"]["data_options"]["folder"]["path"] == stored["path"]
