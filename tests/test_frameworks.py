"""Every registered framework, baseline and +IDR: one CPU training step and an eval forward.

Tiny models (resnet18, 16-24 channels, 64x64 inputs, batch 2) so the whole file runs in seconds.
"""
from __future__ import annotations

import pytest
import torch

from harness.config import ModelConfig
from models.context import aspp_dilations
from models.registry import build_segmentor, framework_names

K = 10
B, SIZE = 2, 64
C, HEAD, AUX, REFINE = 16, 24, 16, 16  # head != C so the stage-2 channel formulas are told apart
IDR_BUFFERS = ("relations_mean", "relations_var", "pick_counts", "dataset_reps")


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(
        backbone="resnet18", feats_channels=C, head_channels=HEAD, aux_channels=AUX, refine_channels=REFINE, **kw
    )


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(B, 3, SIZE, SIZE, generator=g)
    blocks = torch.randint(0, K, (B, 8, 8), generator=g)
    target = blocks.repeat_interleave(SIZE // 8, 1).repeat_interleave(SIZE // 8, 2)
    target[:, :3, :] = 255  # some ignored pixels
    return images, target


# (stage-2 input channels, stage-2 input side) of each framework with IDR, for a 64x64 input at OS 8
EXPECTED_STAGE2 = {
    "fcn": (2 * C, SIZE // 8),
    "pspnet": (3 * C, SIZE // 8),
    "deeplabv3": (3 * C, SIZE // 8),
    "upernet": (2 * C + HEAD + 3 * HEAD, SIZE // 4),  # [F up, Z up, coarse context, 3 FPN levels] at 1/4
}
CASES = [(name, idr, {}) for name in framework_names() for idr in (False, True)]
CASES.append(("upernet", True, {"upernet_context": "aspp"}))


def test_all_frameworks_registered():
    assert framework_names() == ["fcn", "pspnet", "deeplabv3", "upernet"]
    assert set(EXPECTED_STAGE2) == set(framework_names())


@pytest.mark.parametrize("framework, idr, extra", CASES, ids=lambda v: str(v) if not isinstance(v, dict) else "")
def test_train_step_and_eval(framework, idr, extra):
    torch.manual_seed(0)
    model = build_segmentor(framework, idr, K, _cfg(**extra))
    head = model.head
    images, target = _batch()

    seen = {}

    def record(name):
        def hook(module, args):
            seen.setdefault(name, tuple(args[0].shape))  # returns None: the input is left alone

        return hook

    if idr:
        head.stage1.register_forward_pre_hook(record("stage1"))
        head.stage2[0][0].register_forward_pre_hook(record("stage2"))  # its first conv reads stage 2's input
        before = {name: getattr(head, name).clone() for name in IDR_BUFFERS}

    model.train()
    losses = model(images, target)
    assert set(losses) == ({"stage1", "stage2", "aux"} if idr else {"decode", "aux"})
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    if idr:
        channels, side = EXPECTED_STAGE2[framework]
        assert head.wiring.stage2_channels == channels
        assert seen["stage2"] == (B, channels, side, side)
        assert seen["stage1"] == (B, head.wiring.stage1_channels, SIZE // 8, SIZE // 8)
        for name in IDR_BUFFERS:
            assert not torch.equal(getattr(head, name), before[name]), f"{name} did not change"
            assert torch.isfinite(getattr(head, name)).all()
    else:
        native = head(model.backbone(images))["decode"]
        assert native.shape[:2] == (B, K) and head.main_output == "decode"

    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (B, K, SIZE, SIZE)
    assert torch.isfinite(logits).all()


def test_upernet_idr_runs_the_fpn_statistics_once_per_step():
    """The deletion re-run of stage 2 must not count the batch twice in the FPN's BatchNorms."""
    models = []
    for with_deletion in (True, False):
        torch.manual_seed(0)
        model = build_segmentor("upernet", True, K, _cfg()).train()
        if not with_deletion:
            model.head.update_relations_by_deletion = lambda *args, **kwargs: None
        model(*_batch())
        models.append(model)
    fpn_norms = [m.head.wiring.fpn.outputs[0][1] for m in models]
    assert int(fpn_norms[0].num_batches_tracked) == 1
    assert torch.equal(fpn_norms[0].running_mean, fpn_norms[1].running_mean)
    assert torch.equal(fpn_norms[0].running_var, fpn_norms[1].running_var)
    assert fpn_norms[0].momentum == 0.1
    # stage 2 itself runs twice, as in the official code
    assert int(models[0].head.stage2[0][1].num_batches_tracked) == 2


def test_aspp_dilations_follow_output_stride():
    assert aspp_dilations(8) == (1, 12, 24, 36)
    assert aspp_dilations(16) == (1, 6, 12, 18)
    model = build_segmentor("deeplabv3", False, K, _cfg(output_stride=16))
    assert [branch[0].dilation[0] for branch in model.head.aspp.branches] == [1, 6, 12, 18]
    wiring = build_segmentor("deeplabv3", True, K, _cfg()).head.wiring
    assert [branch[0].dilation[0] for branch in wiring.context.branches] == [1, 12, 24, 36]
