"""The similarity-driven context schemes against the official sssegmentation 1.7.0 models.

Non-local, DNL, OCRNet, DANet and CCNet (official ADE20K R50-D8 configs): each official model is
built at random init (`BuildSegmentor`), its BatchNorm statistics and its learnable attention
gains (DANet's and CCNet's `gamma`, 0 at init, which would hide the attention) made non-trivial,
saved as the official trainer saves it, converted with `harness.convert` and compared with ours:
eval logits, one float64 training step with dropout off (every loss term and the gradient norm),
trainable parameter counts at 150 classes, whole model and context module (the figures of issue
23). The official CCNet takes its attention from mmcv (not installed): the per-pixel reference
(benchmarks/criss_cross_reference.py) stands in for it, so ours is held against a loop written
from mmcv's definition.
A one-layer change of ours must fail the comparison.
"""
from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("ssseg", reason="sssegmentation==1.7.0 is not installed (pip install '.[parity]')")

import ssseg.modules.models.segmentors.ccnet.ccnet as official_ccnet  # noqa: E402
from ssseg.modules.models.segmentors.builder import BuildSegmentor  # noqa: E402
from ssseg.modules.utils import SSSegInputStructure  # noqa: E402

from harness.convert import build_official_model, convert_file, convert_state_dict  # noqa: E402
from harness.measure import context_module_names, count_module_params  # noqa: E402
from harness.official import R50, official_segmentor_cfg  # noqa: E402
from harness.official_schemes import SIMILARITY_SCHEMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 5
SIZE = 64  # eval input: 8x8 features
TRAIN_SIZE = 32
TOL = 1e-5
LOSS_NAMES = {"loss_aux": "aux", "loss_cls": "decode", "loss_cls_pamcam": "decode", "loss_cls_pam": "pam",
              "loss_cls_cam": "cam"}


def _load_reference():
    spec = importlib.util.spec_from_file_location("criss_cross_reference", ROOT / "benchmarks" / "criss_cross_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def reference_criss_cross(monkeypatch):
    """The official CCNet builds with the per-pixel reference in place of mmcv's op."""
    monkeypatch.setattr(official_ccnet, "CrissCrossAttention", _load_reference().ReferenceCrissCrossAttention)


def _randomize_statistics(model: nn.Module, seed: int = 0) -> None:
    """Random BatchNorm statistics and affine parameters, and random attention gains (official: 0)."""
    gen = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=gen) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(module.bias.shape, generator=gen) * 0.2 - 0.1)
    for name, param in model.named_parameters():
        if name.endswith("gamma.scale"):
            param.data.fill_(float(torch.rand((), generator=gen)) + 0.5)


def build_official(scheme: str, num_classes: int = K, dataset: str = "ade20k") -> nn.Module:
    return BuildSegmentor(official_segmentor_cfg(scheme, dataset, False, num_classes=num_classes), mode="TRAIN")


def build_pair(tmp_path: Path, scheme: str, dataset: str = "ade20k") -> tuple[nn.Module, nn.Module]:
    """(official, ours): the official model at random init, saved and converted through files."""
    torch.manual_seed(0)
    official = build_official(scheme, dataset=dataset)
    with torch.no_grad():
        _randomize_statistics(official)
    source, converted = tmp_path / "official.pth", tmp_path / "model.pt"
    torch.save({"model": official.state_dict(), "epoch": 1, "iter": 10}, source)
    convert_file(source, converted, framework=scheme, idr=False, dataset=dataset, num_classes=K)
    ours, _ = build_official_model(scheme, False, dataset, R50, K)
    ours.load_state_dict(torch.load(converted, map_location="cpu", weights_only=True)["model"])
    return official, ours


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp(min=1e-12)).item()


def check_eval(official: nn.Module, ours: nn.Module, size: int = SIZE) -> None:
    official.eval()
    ours.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = official(SSSegInputStructure(images=x, mode="TEST")).seg_logits
        theirs = F.interpolate(theirs, size=x.shape[-2:], mode="bilinear", align_corners=False)
        mine = ours(x)
    difference = _relative(theirs, mine)
    assert difference < TOL, f"eval logits differ from the official model: max relative difference {difference:.3g}"


def _grad_norm(model: nn.Module) -> float:
    return sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None) ** 0.5


def check_train_step(official: nn.Module, ours: nn.Module, size: int = TRAIN_SIZE) -> None:
    """One training forward + backward in float64 with dropout off: every loss term and the gradient norm."""
    for model in (official, ours):
        model.double().train()
        for module in model.modules():
            if isinstance(module, (nn.Dropout, nn.Dropout2d)):
                module.p = 0.0
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, size, size, generator=gen, dtype=torch.float64)
    target = torch.randint(0, K, (2, size, size), generator=gen)
    target[:, :4] = 255  # an ignored band
    result = official(SSSegInputStructure(mode="TRAIN", images=x, seg_targets=target))
    result.loss.backward()
    losses = ours(x, target)
    sum(losses.values()).backward()
    theirs = {LOSS_NAMES[n]: v for n, v in result.losses_log_dict.items() if n != "loss_total"}
    assert set(theirs) == set(losses)
    for name, value in theirs.items():
        assert abs(value - losses[name].item()) <= TOL * abs(value), name
    assert abs(_grad_norm(official) - _grad_norm(ours)) <= TOL * _grad_norm(official)


#: One layer of ours changed (kept loadable), per scheme: (module path, replacement).
ONE_LAYER_CHANGES = {
    "nonlocalnet": ("head.block.conv_out.1", nn.Identity()),  # the non-local output BN dropped
    "dnlnet": ("head.block.conv_out.1", nn.Identity()),  # the disentangled block's output BN dropped
    "ocrnet": ("head.object_context.fuse.2", nn.Identity()),  # the object-context fusion ReLU dropped
    "danet": ("head.pam.value_project", nn.Identity()),  # the position attention's value conv dropped
    "ccnet": ("head.block.attention.value_conv", nn.Identity()),  # the criss-cross value conv dropped
}


def with_one_layer_changed(model: nn.Module, scheme: str) -> nn.Module:
    changed = copy.deepcopy(model)
    path, replacement = ONE_LAYER_CHANGES[scheme]
    parent, _, name = path.rpartition(".")
    setattr(changed.get_submodule(parent), name, replacement)
    return changed


@pytest.mark.parametrize("scheme", SIMILARITY_SCHEMES)
def test_same_eval_logits_and_training_step_and_one_layer_change_fails(tmp_path, scheme):
    official, ours = build_pair(tmp_path, scheme)
    check_eval(official, ours)
    with pytest.raises(AssertionError, match="eval logits differ"):
        check_eval(official, with_one_layer_changed(ours, scheme))
    check_train_step(official, ours)


# millions of trainable parameters at 150 classes, R50-D8 V1c, aux head, BatchNorm (issue 23)
OFFICIAL_PARAMS = {"nonlocalnet": 52.52, "dnlnet": 52.52, "ocrnet": 43.22, "danet": 52.48, "ccnet": 52.33}


def _trainable_millions(model: nn.Module) -> float:
    return round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2)


# the official modules that are the context scheme (ours: the head's `context_modules`)
OFFICIAL_CONTEXT_MODULES = {"nonlocalnet": ["nl_block"], "dnlnet": ["dnl_block"], "ocrnet": ["object_context_block"],
                            "danet": ["pam_net", "cam_net"], "ccnet": ["cca"]}


@pytest.mark.parametrize("scheme", SIMILARITY_SCHEMES)
def test_parameter_counts(scheme):
    official = build_official(scheme, 150)
    ours, _ = build_official_model(scheme, False, "ade20k", R50, 150)
    assert _trainable_millions(official) == OFFICIAL_PARAMS[scheme]
    assert _trainable_millions(ours) == OFFICIAL_PARAMS[scheme]
    official_context = count_module_params(official, OFFICIAL_CONTEXT_MODULES[scheme], trainable_only=True)
    assert count_module_params(ours, context_module_names(ours), trainable_only=True) == official_context


@pytest.mark.parametrize("scheme", SIMILARITY_SCHEMES)
def test_cityscapes_configuration_has_the_same_tree(scheme):
    official = build_official(scheme, 19, "cityscapes")
    ours, _ = build_official_model(scheme, False, "cityscapes", R50)
    convert_state_dict(official.state_dict(), ours, scheme, False)  # raises on any misfit


