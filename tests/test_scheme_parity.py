"""The context schemes beside IDR against the official sssegmentation 1.7.0 models, module for module.

As tests/test_official_parity.py does for IDRNet (whose helpers it reuses): the official model
is built at random init, saved as the official trainer saves it, converted with
`harness.convert`, and both run on the same input: eval logits, then one float64 training step
with dropout off (every loss term, the gradient norm, the memory buffers after the step).
Parameter counts are checked at 150 classes against the figures measured on the official
builder; a one-layer change must make the check fail.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytest.importorskip("ssseg", reason="sssegmentation==1.7.0 is not installed (pip install '.[parity]')")

from ssseg.modules.models.segmentors.builder import BuildSegmentor
from ssseg.modules.utils import SSSegInputStructure

from harness.convert import build_official_model
from harness.measure import context_module_names, count_module_params
from harness.official import R50, SWIN_L, official_segmentor_cfg
from tests.test_official_parity import (
    K,
    SHRUNKEN_SWIN,
    TOL,
    TRAIN_SIZE,
    _check_eval,
    _grad_norm,
    _no_dropout,
    _relative,
    _targets,
    _trainable_millions,
    build_pair,
    shrunken_swin,  # noqa: F401  (fixture)
)

_MCIBIPP_LOSSES = {"loss_aux": "aux", "loss_pr": "stage1", "loss_cwi": "context", "loss_cls": "decode"}


def _check_mcibipp_train_step(official: nn.Module, ours: nn.Module, size: int = TRAIN_SIZE) -> None:
    """One training forward + backward in float64, dropout off: losses, grad norm, memory after."""
    for model in (official, ours):
        model.double().train()
        _no_dropout(model)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = _targets(size)
    result = official(SSSegInputStructure(mode="TRAIN", images=x, seg_targets=target), epoch=1, learning_rate=0.01)
    result.loss.backward()
    losses = ours(x, target)
    sum(losses.values()).backward()
    official_losses = {k: v for k, v in result.losses_log_dict.items() if k != "loss_total"}
    assert {_MCIBIPP_LOSSES[k] for k in official_losses} == set(losses)
    for official_name, value in official_losses.items():
        assert abs(value - losses[_MCIBIPP_LOSSES[official_name]].item()) <= TOL * abs(value), official_name
    assert abs(_grad_norm(official) - _grad_norm(ours)) <= TOL * _grad_norm(official)
    theirs, mine = official.memory_module.memory.data.double(), ours.head.memory.memory.double()
    assert not torch.equal(mine, torch.cat([torch.zeros(K, 1), torch.ones(K, 1)], 1).double())  # it moved
    assert _relative(theirs, mine) < TOL, "memory"


def _randomize_memory(official: nn.Module, ours: nn.Module) -> None:
    """A non-trivial memory on both sides (random init holds (0, 1) for every class)."""
    gen = torch.Generator().manual_seed(5)
    memory = torch.stack([torch.rand(K, generator=gen) - 0.5, torch.rand(K, generator=gen) + 0.5], dim=1)
    official.memory_module.memory.data.copy_(memory)
    ours.head.memory.memory.copy_(memory)


# every framework on ADE20K (PSPNet: memory read by stage 1's logits, self-attention on the
# context; DeepLabV3 / UPerNet: 3x3 decoder), and every value of the other datasets' switches
# once: PSPNet Cityscapes (3x3 stage-1 and context decoders, memory read by the context's logits),
# DeepLabV3 Cityscapes (self-attention on ASPP, 1x1 decoder), UPerNet Cityscapes (FPN 1024 wide,
# 1x1 decoder). COCO-Stuff-10k and LIP combine these values (test_every_official_config_has_the_same_tree).
MCIBIPP_CASES = [
    ("fcn_mcibipp", "ade20k"),
    ("pspnet_mcibipp", "ade20k"),
    ("deeplabv3_mcibipp", "ade20k"),
    ("upernet_mcibipp", "ade20k"),
    ("pspnet_mcibipp", "cityscapes"),
    ("deeplabv3_mcibipp", "cityscapes"),
    ("upernet_mcibipp", "cityscapes"),
]


@pytest.mark.parametrize(("framework", "dataset"), MCIBIPP_CASES)
def test_mcibipp_same_eval_logits_and_training_step(tmp_path, framework, dataset):
    official, ours = build_pair(tmp_path, framework, dataset, False)
    _randomize_memory(official, ours)
    _check_eval(official, ours)
    _check_mcibipp_train_step(official, ours)


@pytest.mark.slow
def test_mcibipp_swin_large_upernet(tmp_path, shrunken_swin):  # noqa: F811
    official, ours = build_pair(tmp_path, "upernet_mcibipp", "ade20k", False, SWIN_L)
    _randomize_memory(official, ours)
    _check_eval(official, ours, size=80)
    _check_mcibipp_train_step(official, ours, size=64)


# millions of trainable parameters at 150 classes, R50-D8 V1c, aux head, BatchNorm: (whole
# model, context scheme = everything but backbone and auxiliary head), measured on the official
# builder (issue 23)
SCHEME_PARAMS = [
    ("fcn_mcibipp", 43.82),
    ("pspnet_mcibipp", 68.16),
    ("deeplabv3_mcibipp", 90.83),
    ("upernet_mcibipp", 94.77),
]


def _context_millions(official: nn.Module) -> float:
    rest = [official.backbone_net, official.auxiliary_decoder]
    total = sum(p.numel() for p in official.parameters() if p.requires_grad)
    return round((total - sum(p.numel() for m in rest for p in m.parameters() if p.requires_grad)) / 1e6, 2)


@pytest.mark.parametrize(("framework", "millions"), SCHEME_PARAMS)
def test_scheme_parameter_counts(framework, millions):
    official = BuildSegmentor(official_segmentor_cfg(framework, "ade20k", False, num_classes=150), mode="TRAIN")
    ours, _ = build_official_model(framework, False, "ade20k", R50, 150)
    assert _trainable_millions(official) == millions
    assert _trainable_millions(ours) == millions
    assert _trainable_millions(ours.head) == _context_millions(official)
    # the context module: the memory with the coarse-prediction conv that reads it, and PSPNet's attention
    official_context = ["memory_module", "decoder_pr"] + (["self_attention"] if framework == "pspnet_mcibipp" else [])
    assert _trainable_context(ours) == count_module_params(official, official_context, trainable_only=True)


def _trainable_context(ours: nn.Module) -> int:
    """What harness.measure reports as our context module, trainable parameters only."""
    return count_module_params(ours, context_module_names(ours), trainable_only=True)


def test_a_one_layer_change_fails_the_parity_check(tmp_path, monkeypatch):
    """The memory's fusion conv 3x3 -> 1x1 on our side only: the converter names the misfit; with
    the layer's weight cut to fit (its centre tap), the logits differ."""
    from models.plugins import mcibipp
    from tests.memory_cases import check_a_one_by_one_fuse_fails

    check_a_one_by_one_fuse_fails(tmp_path, monkeypatch, "pspnet_mcibipp", mcibipp.FeatureMemory, "fuse",
                                  "memory_module.bottleneck.0.weight")


def _check_isnet_train_step(official: nn.Module, ours: nn.Module, size: int = TRAIN_SIZE) -> None:
    for model in (official, ours):
        model.double().train()
        _no_dropout(model)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = _targets(size)
    result = official(SSSegInputStructure(mode="TRAIN", images=x, seg_targets=target))
    result.loss.backward()
    losses = ours(x, target)
    sum(losses.values()).backward()
    names = {"loss_aux": "aux", "loss_cls_stage1": "stage1", "loss_cls_stage2": "stage2"}
    official_losses = {k: v for k, v in result.losses_log_dict.items() if k != "loss_total"}
    assert {names[k] for k in official_losses} == set(losses)
    for official_name, value in official_losses.items():
        assert abs(value - losses[names[official_name]].item()) <= TOL * abs(value), official_name
    assert abs(_grad_norm(official) - _grad_norm(ours)) <= TOL * _grad_norm(official)


@pytest.mark.parametrize("dataset", ["ade20k", "lip"])
def test_isnet_same_eval_logits_and_training_step(tmp_path, dataset):
    # the ADE20K, Cityscapes and COCO-Stuff-10k configs differ only in the class count; LIP adds
    # the shortcut decoder and LeakyReLU in the heads
    official, ours = build_pair(tmp_path, "isnet", dataset, False)
    if dataset == "lip":
        assert ours.head.shortcut is not None and isinstance(ours.aux_head[0][2], nn.LeakyReLU)
    _check_eval(official, ours)
    changed = copy.deepcopy(ours)
    changed.head.semantic_context.fuse[2] = nn.Identity()  # one layer: the semantic-level fusion ReLU dropped
    with pytest.raises(AssertionError):
        _check_eval(official, changed)
    _check_isnet_train_step(official, ours)


def test_isnet_parameter_count():
    official = BuildSegmentor(official_segmentor_cfg("isnet", "ade20k", False, num_classes=150), mode="TRAIN")
    ours, _ = build_official_model("isnet", False, "ade20k", R50, 150)
    assert _trainable_millions(official) == _trainable_millions(ours) == 49.20
    assert _trainable_millions(ours.head) == _context_millions(official)
    assert _trainable_context(ours) == count_module_params(official, ["ilc_net", "slc_net"], trainable_only=True)


# every official R50-D8 config of the schemes (and MCIBI++ UPerNet Swin-L): same module tree and shapes
TREE_CASES = [(f, d, R50) for f in ("fcn_mcibipp", "pspnet_mcibipp", "deeplabv3_mcibipp", "upernet_mcibipp")
              for d in ("ade20k", "cityscapes", "coco_stuff10k", "lip")]
TREE_CASES += [("isnet", d, R50) for d in ("ade20k", "cityscapes", "coco_stuff10k", "lip")]
TREE_CASES += [("upernet_mcibipp", "ade20k", SWIN_L)]


@pytest.mark.parametrize(("framework", "dataset", "backbone"), TREE_CASES)
def test_every_official_config_has_the_same_tree(framework, dataset, backbone, shrunken_swin):  # noqa: F811
    from harness.convert import convert_state_dict

    depths = SHRUNKEN_SWIN if backbone == SWIN_L else None
    official = BuildSegmentor(official_segmentor_cfg(framework, dataset, False, backbone, num_classes=K,
                                                     swin_depths=depths), mode="TRAIN")
    ours, _ = build_official_model(framework, False, dataset, backbone, K)
    convert_state_dict(official.state_dict(), ours, framework, False, backbone)  # raises on any misfit
    assert _trainable_millions(official) == _trainable_millions(ours)


def test_convert_cli_round_trips_a_scheme_checkpoint(tmp_path):
    """An official MCIBI++ checkpoint -> `python -m harness.convert` -> our model: every tensor
    equal, the memory included, and the converted file loads into the model built for it."""
    from harness.convert import main

    official = BuildSegmentor(official_segmentor_cfg("upernet_mcibipp", "lip", False), mode="TRAIN")
    with torch.no_grad():
        official.memory_module.memory.data.uniform_(0.5, 1.5)
    torch.save({"model": official.state_dict(), "epoch": 1}, tmp_path / "mcibiplusplus.pth")
    argv = [str(tmp_path / "mcibiplusplus.pth"), "--framework", "upernet_mcibipp", "--dataset", "lip",
            "--out", str(tmp_path / "model.pt")]
    assert main(argv) == 0
    saved = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    ours, _ = build_official_model("upernet_mcibipp", False, "lip", R50)
    ours.load_state_dict(saved["model"])
    assert torch.equal(ours.head.memory.memory, official.memory_module.memory.data)
    assert torch.equal(ours.head.decoder[0][0].weight, official.decoder_cls.conv1.weight)
    assert saved["source"]["framework"] == "upernet_mcibipp"
