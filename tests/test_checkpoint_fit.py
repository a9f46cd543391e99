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
