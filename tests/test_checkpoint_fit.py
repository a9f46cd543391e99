"""A checkpoint of another model says, in one line, what to type: harness.evaluate --checkpoint,
harness.convert and --resume (IDR or not, another framework, another class count)."""
from __future__ import annotations

import pytest
import torch

from harness.data import dataset_card
from harness.evaluate.command import main as evaluate_main
from models import build_segmentor
from tests.test_released import tiny_setting  # noqa: F401  (fixture)


def save_model(cell, path, framework: str, idr: bool, extra_classes: int = 0) -> None:
    classes = dataset_card(cell.dataset, cell.data_options).num_classes + extra_classes
    model = build_segmentor(framework, idr, classes, cell.model.model_copy(update={"pretrained": None}), 255)
    torch.save({"model": model.state_dict()}, path)


def evaluate_args(checkpoint, tmp_path, framework: str, idr: bool) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--framework", framework, *(["--idr"] if idr else []),
            "--dataset", "context_scenes", "--backbone", "resnet18", "--root", str(tmp_path / "datasets"),
            "--results", str(tmp_path / "results"), "--device", "cpu"]


@pytest.mark.parametrize(
    "saved, asked, expected",
    [
        (("fcn", True), ("fcn", False), "holds IDR weights (head.relations_mean, head.stage1.*, head.stage2.*, ...): "
                                        "add --idr"),
        (("fcn", False), ("fcn", True), "holds a baseline model without IDR (head.classifier.*, head.convs.*): "
                                        "drop --idr"),
        (("pspnet", True), ("fcn", True), "holds a pspnet+idr model (head.wiring.*): use --framework pspnet --idr"),
        (("deeplabv3", False), ("fcn", True), "holds a deeplabv3 model ("),
    ],
    ids=["idr", "baseline", "framework", "framework-baseline"],
)
def test_evaluate_checkpoint_of_another_model(tiny_setting, tmp_path, capsys, saved, asked, expected):  # noqa: F811
    checkpoint = tmp_path / "model.pt"
    save_model(tiny_setting, checkpoint, *saved)
    assert evaluate_main(evaluate_args(checkpoint, tmp_path, *asked)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{checkpoint}: {expected}"), err
    assert not (tmp_path / "results").exists()


def test_evaluate_checkpoint_of_another_class_count(tiny_setting, tmp_path, capsys):  # noqa: F811
    checkpoint = tmp_path / "model.pt"
    classes = dataset_card(tiny_setting.dataset, tiny_setting.data_options).num_classes
    save_model(tiny_setting, checkpoint, "fcn", True, extra_classes=150 - classes)
    assert evaluate_main(evaluate_args(checkpoint, tmp_path, "fcn", True)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{checkpoint}: holds 150 classes ("), err
    assert err[0].endswith(": use --dataset ade20k")


def official_checkpoint(path, framework: str, idr: bool, dataset: str, num_classes: int | None = None) -> None:
    """An official sssegmentation model at random init, saved as its trainer saves it."""
    pytest.importorskip("ssseg", reason="sssegmentation==1.7.0 is not installed (pip install '.[parity]')")
    from ssseg.modules.models.segmentors.builder import BuildSegmentor

    from harness.official import OFFICIAL_NUM_CLASSES, official_segmentor_cfg

    k = num_classes or OFFICIAL_NUM_CLASSES[dataset]
    official = BuildSegmentor(official_segmentor_cfg(framework, dataset, idr, num_classes=k), mode="TRAIN")
    torch.save({"model": official.state_dict()}, path)


@pytest.mark.parametrize(
    "saved, asked, expected",
    [
        (("fcn", True, "lip"), ("fcn", False, "lip"), "holds IDR weights (class_relations_mean, class_relations_var, "
                                                      "decoder_stage1.*, ...): add --idr"),
        (("fcn", False, "lip"), ("fcn", True, "lip"), "holds a baseline model without IDR (decoder.*): drop --idr"),
        (("pspnet", False, "lip"), ("deeplabv3", False, "lip"), "holds a pspnet model (ppm_net.*): "
                                                                 "use --framework pspnet"),
        (("fcn", False, "cityscapes"), ("fcn", False, "lip"), "holds 19 classes (auxiliary_decoder.4.weight is "
                                                              "19x512x1x1): use --dataset cityscapes"),
    ],
    ids=["idr", "baseline", "framework", "classes"],
)
def test_convert_checkpoint_of_another_model(tmp_path, capsys, saved, asked, expected):
    from harness.convert import main

    official_checkpoint(tmp_path / "official.pth", *saved)
    framework, idr, dataset = asked
    argv = [str(tmp_path / "official.pth"), "--framework", framework, *(["--idr"] if idr else []),
            "--dataset", dataset, "--out", str(tmp_path / "model.pt")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'official.pth'}: {expected}"]
    assert not (tmp_path / "model.pt").exists()


def test_resume_from_a_checkpoint_of_another_model(write_experiment, tmp_path):
    """--resume: the IDR cell's checkpoint offered to the baseline cell; then to a dataset whose classes changed."""
    from harness.config import load_experiment
    from harness.run import resolve_cells
    from harness.train import CellFault, PrintReporter, run_cell
    from tests.conftest import tiny_experiment
    from tests.test_custom_dataset import make_roads, roads_experiment

    make_roads(tmp_path / "datasets", {"train": 4, "val": 2})
    train = {"iterations": 2, "batch_size": 2, "checkpoint_interval": 1}
    path = write_experiment({**roads_experiment(), "train": {**tiny_experiment("x")["train"], **train}})
    baseline, with_idr = resolve_cells(load_experiment(path))
    root = tmp_path / "checkpoints"
    assert run_cell(with_idr, PrintReporter(root, quiet=True), stop_after=1) is None
    with pytest.raises(CellFault) as err:
        run_cell(baseline, PrintReporter(root, quiet=True))
    assert str(err.value).startswith(f"{baseline.cell_id}: checkpoint {root / 'iter_00000001'} holds IDR weights (")
    assert str(err.value).endswith("it is not this cell's; run without --resume (or remove it) to start afresh")

    classes = tmp_path / "datasets" / "my_roads" / "classes.txt"
    classes.write_text(classes.read_text() + "bus\n")
    [_, grown] = resolve_cells(load_experiment(path))
    with pytest.raises(CellFault, match=r"holds 3 classes \(.*\): the dataset's classes changed since"):
        run_cell(grown, PrintReporter(root, quiet=True))
