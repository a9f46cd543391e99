"""Our models against the official sssegmentation 1.7.0 models, module for module.

For each framework with and without IDR (and each IDR switch value at least once) the official
model is built at random init (`BuildSegmentor`), saved as the official trainer saves it
(`{'model': state_dict, ...}`), converted with `harness.convert`, and both are run on the same
input: eval logits, then one training forward in float64 with dropout off and the deleted class
of each image forced to the same choice on both sides (the largest class present: official
`random.choices` and our `torch.multinomial` are replaced by that rule, the code around them
runs unchanged): stage-1 / stage-2 logits, every loss term, the gradient norm and the four IDR
buffers afterwards. Parameter counts are checked against the official figures at 150 classes;
all 20 released configurations are converted (same module tree, same shapes).

Small inputs and few classes keep it fast. Swin-L runs with depths (2, 2, 2, 2) for the
numerics (every block type is kept; only stage 3 has fewer blocks).
"""
from __future__ import annotations

import random
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("ssseg", reason="sssegmentation==1.7.0 is not installed (pip install '.[parity]')")

from ssseg.modules.models.segmentors.builder import BuildSegmentor
from ssseg.modules.utils import SSSegInputStructure

from harness.convert import (
    ConversionError,
    build_official_model,
    convert_file,
    convert_state_dict,
)
from harness.official import R50, SWIN_L, official_segmentor_cfg, released_pairs
from models import backbones
from models.plugins.idr_head import DELETION_OUTPUT

K = 5
SIZE = 64  # eval input
TRAIN_SIZE = 32  # training-step input (float64 backward through R50 dominates the file's time)
SHRUNKEN_SWIN = (2, 2, 2, 2)
TOL = 1e-5


@pytest.fixture
def shrunken_swin(monkeypatch):
    """Build our timm Swin-L with SHRUNKEN_SWIN depths, as the official side is built."""
    original = backbones._create

    def create(name, kwargs, optional):
        if "swin" in name:
            kwargs = {**kwargs, "depths": SHRUNKEN_SWIN}
        return original(name, kwargs, optional)

    monkeypatch.setattr(backbones, "_create", create)


def _randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (random init leaves them 0/1)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=gen) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(module.bias.shape, generator=gen) * 0.2 - 0.1)


def build_pair(tmp_path, framework, dataset, idr, backbone=R50, num_classes=K):
    """(official, ours): the official model at random init, saved and converted through files."""
    torch.manual_seed(0)
    depths = SHRUNKEN_SWIN if backbone == SWIN_L else None
    cfg = official_segmentor_cfg(framework, dataset, idr, backbone, num_classes=num_classes, swin_depths=depths)
    if backbone == SWIN_L:
        cfg["backbone"]["drop_path_rate"] = 0.0  # stochastic depth off on both sides, as dropout
    official = BuildSegmentor(cfg, mode="TRAIN")
    with torch.no_grad():
        _randomize_norms(official)
    source, converted = tmp_path / "official.pth", tmp_path / "model.pt"
    torch.save({"model": official.state_dict(), "epoch": 1, "iter": 10}, source)  # as ssseg/train.py
    convert_file(source, converted, framework=framework, idr=idr, dataset=dataset, backbone=backbone,
                 num_classes=num_classes)
    ours, _ = build_official_model(framework, idr, dataset, backbone, num_classes, drop_path_rate=0.0)
    ours.load_state_dict(torch.load(converted, map_location="cpu", weights_only=True)["model"])
    return official, ours


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp(min=1e-12)).item()


def _no_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d)):
            module.p = 0.0


def _largest_present_class(monkeypatch) -> None:
    """Both sides delete the largest class present in each image (the choice code runs as is)."""
    monkeypatch.setattr(random, "choices", lambda population, weights=None, k=1: [max(population)])
    monkeypatch.setattr(torch, "multinomial", lambda weights, n: weights.nonzero().flatten()[-1:])


def _capture(module: nn.Module, store: list) -> None:
    module.register_forward_hook(lambda m, i, out: store.append(out.detach().clone()))


def _capture_stage2(head: nn.Module, store: list) -> None:
    """Our anchor's then our deleted pass's stage-2 logits, in the order of the official decoder's
    two calls (our deleted pass reuses the anchor's first convolution, so both are read from the
    head's output, not from calls of the stage-2 module)."""

    def hook(module, args, out):
        store.append(out["stage2"].detach().clone())
        if DELETION_OUTPUT in out:
            store.append(out[DELETION_OUTPUT].deleted_logits.detach().clone())

    head.register_forward_hook(hook)


def _targets(size: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, K, (2, size, size), generator=gen)
    target[:, :4] = 255  # an ignored band
    return target


def _check_eval(official: nn.Module, ours: nn.Module, size: int = SIZE) -> None:
    official.eval()
    ours.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = official(SSSegInputStructure(images=x, mode="TEST")).seg_logits
        theirs = F.interpolate(theirs, size=x.shape[-2:], mode="bilinear", align_corners=False)
        mine = ours(x)
    assert _relative(theirs, mine) < TOL


def _grad_norm(model: nn.Module) -> float:
    return sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None) ** 0.5


_LOSS_NAMES = {"loss_aux": "aux", "loss_cls": "decode", "loss_cls_stage1": "stage1", "loss_cls_stage2": "stage2"}
_BUFFERS = {
    "class_relations_mean": "relations_mean",
    "class_relations_var": "relations_var",
    "selected_classes_counter": "pick_counts",
    "dl_cls_representations": "dataset_reps",
}


def _check_train_step(official: nn.Module, ours: nn.Module, idr: bool, monkeypatch, size: int = TRAIN_SIZE) -> None:
    """One training forward + backward, float64, dropout off, the same deleted classes."""
    for model in (official, ours):
        model.double().train()
        _no_dropout(model)
    _largest_present_class(monkeypatch)
    theirs_out, mine_out = {}, {}
    if idr:
        for name in ("stage1", "stage2"):
            theirs_out[name], mine_out[name] = [], []
            _capture(getattr(official, f"decoder_{name}"), theirs_out[name])
        _capture(ours.head.stage1, mine_out["stage1"])
        _capture_stage2(ours.head, mine_out["stage2"])
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = _targets(size)
    result = official(SSSegInputStructure(mode="TRAIN", images=x, seg_targets=target))
    result.loss.backward()
    losses = ours(x, target)
    sum(losses.values()).backward()
    for official_name, value in result.losses_log_dict.items():
        if official_name != "loss_total":
            assert abs(value - losses[_LOSS_NAMES[official_name]].item()) <= TOL * abs(value), official_name
    assert abs(_grad_norm(official) - _grad_norm(ours)) <= TOL * _grad_norm(official)
    for name, theirs in theirs_out.items():  # the anchor pass (and, for stage 2, the deletion pass)
        assert len(theirs) == len(mine_out[name])
        for a, b in zip(theirs, mine_out[name]):
            assert _relative(a, b) < TOL, name
    if idr:
        for official_name, our_name in _BUFFERS.items():
            a, b = getattr(official, official_name).data, getattr(ours.head, our_name)
            assert _relative(a.double(), b.double()) < TOL, official_name


# (framework, dataset, idr): every framework with and without IDR, and every switch value:
# coarse_refine after (PSPNet Cityscapes, UPerNet ADE20K ASPP), before (DeepLabV3 COCO-Stuff),
# none (UPerNet LIP, PPM); stage1_input feats (PSPNet Cityscapes, C=1024); FCN+IDR C=1024.
NUMERIC_CASES = [
    ("fcn", "ade20k", False),
    ("fcn", "ade20k", True),
    ("pspnet", "ade20k", False),
    ("pspnet", "cityscapes", True),
    ("deeplabv3", "ade20k", False),
    ("deeplabv3", "coco_stuff10k", True),
    ("upernet", "ade20k", False),
    ("upernet", "ade20k", True),
    ("upernet", "lip", True),
]


@pytest.mark.parametrize(("framework", "dataset", "idr"), NUMERIC_CASES)
def test_same_eval_logits_and_training_step(tmp_path, monkeypatch, framework, dataset, idr):
    official, ours = build_pair(tmp_path, framework, dataset, idr)
    _check_eval(official, ours)
    _check_train_step(official, ours, idr, monkeypatch)


@pytest.mark.slow
def test_swin_large_upernet_idr(tmp_path, monkeypatch, shrunken_swin):
    official, ours = build_pair(tmp_path, "upernet", "ade20k", True, SWIN_L)
    _check_eval(official, ours, size=80)  # sides that are no multiple of the window: padded attention
    _check_train_step(official, ours, True, monkeypatch, size=64)


# millions of trainable parameters at 150 classes, R50-D8 V1c, aux head, BatchNorm (issue 11)
OFFICIAL_PARAMS = [
    ("fcn", "ade20k", False, 40.20),
    ("pspnet", "ade20k", False, 51.47),
    ("deeplabv3", "ade20k", False, 70.61),
    ("upernet", "ade20k", False, 68.91),
    ("fcn", "ade20k", True, 55.77),
    ("pspnet", "ade20k", True, 55.10),
    ("deeplabv3", "ade20k", True, 61.66),
    ("upernet", "ade20k", True, 70.44),
    ("upernet", "lip", True, 63.23),
]


def _trainable_millions(model: nn.Module) -> float:
    return round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2)


@pytest.mark.parametrize(("framework", "dataset", "idr", "millions"), OFFICIAL_PARAMS)
def test_parameter_counts(framework, dataset, idr, millions):
    official = BuildSegmentor(official_segmentor_cfg(framework, dataset, idr, num_classes=150), mode="TRAIN")
    ours, _ = build_official_model(framework, idr, dataset, R50, 150)
    assert _trainable_millions(official) == millions
    assert _trainable_millions(ours) == millions


def _convert_random_init(framework, dataset, idr, backbone) -> None:
    depths = SHRUNKEN_SWIN if backbone == SWIN_L else None
    official = BuildSegmentor(official_segmentor_cfg(framework, dataset, idr, backbone, num_classes=K,
                                                     swin_depths=depths), mode="TRAIN")
    ours, _ = build_official_model(framework, idr, dataset, backbone, K)
    convert_state_dict(official.state_dict(), ours, framework, idr, backbone)  # raises on any misfit
    assert _trainable_millions(official) == _trainable_millions(ours)


@pytest.mark.parametrize(("framework", "dataset", "backbone"), released_pairs())
def test_released_configuration_has_the_same_tree(framework, dataset, backbone, shrunken_swin):
    _convert_random_init(framework, dataset, True, backbone)


@pytest.mark.parametrize("framework", ["fcn", "pspnet", "deeplabv3", "upernet"])
def test_baseline_has_the_same_tree(framework):
    # the official baseline configs differ across datasets only in the class count
    _convert_random_init(framework, "cityscapes", False, R50)


def test_converter_names_every_misfit(tmp_path):
    official = BuildSegmentor(official_segmentor_cfg("pspnet", "lip", True, num_classes=K), mode="TRAIN")
    state = official.state_dict()
    state["decoder_stage2.4.weight"] = torch.zeros(K + 1, 512, 1, 1)
    state["extra.weight"] = torch.zeros(3)
    del state["bottleneck.0.weight"]
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError) as err:
        convert_file(tmp_path / "bad.pth", tmp_path / "model.pt", framework="pspnet", idr=True, dataset="lip",
                     num_classes=K)
    text = "\n".join(err.value.problems)
    assert "decoder_stage2.4.weight" in text and "extra.weight" in text and "head.bottleneck.0.weight" in text
    assert not (tmp_path / "model.pt").exists()


def test_converter_refuses_pickled_objects(tmp_path):
    torch.save({"model": {}, "extra": Fraction(1, 3)}, tmp_path / "odd.pth")  # any non-tensor class
    with pytest.raises(ConversionError, match="weights_only"):
        convert_file(tmp_path / "odd.pth", tmp_path / "model.pt", framework="fcn", idr=False, dataset="lip")
    assert not (tmp_path / "model.pt").exists()


def test_convert_cli_one_line_per_problem_exit_2(tmp_path, capsys):
    from harness.convert import main

    official = BuildSegmentor(official_segmentor_cfg("fcn", "lip", False, num_classes=K), mode="TRAIN")
    state = official.state_dict()
    del state["decoder.7.bias"]
    torch.save({"model": state}, tmp_path / "fcn.pth")
    argv = [str(tmp_path / "fcn.pth"), "--framework", "fcn", "--dataset", "lip", "--out", str(tmp_path / "m.pt")]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # K=5 in the file, 20 classes officially on LIP: both classifiers misfit, and the bias is missing
    assert all(line.startswith("error: ") for line in lines)
    assert any("head.classifier.bias" in line for line in lines)
    assert any("auxiliary_decoder.4.weight" in line for line in lines)
    assert not (tmp_path / "m.pt").exists()
