"""Mask2Former (transformers) with and without IDR; the AdamW optimiser groups and lr schedule.

Tiny models (ResNet 16-128 channels, one block per stage, hidden 32, 8 queries, 2 decoder
layers, 64x64 inputs, batch 2, K = 5) so the file runs in well under a minute on a CPU.
"""
from __future__ import annotations

import io
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built from local configs

import pytest
import torch
import torch.nn as nn

from harness.config import ModelConfig, TrainConfig
from harness.optim import build_optimizer, lr_at, param_groups
from models.backbones import PretrainedWeightsError
from models.hf_backbones import OUT_FEATURES
from models.heads.mask2former import (
    Mask2FormerSegmentor,
    load_backbone_weights,
    mask2former_config,
    semantic_inference,
    semantic_to_instances,
)
from models.registry import all_framework_names, build_segmentor, check_backbone, framework_names

K, B, SIZE, QUERIES, DEC_LAYERS = 5, 2, 64, 8, 3  # DEC_LAYERS 3 = two masked-attention layers + the query prediction
BUFFERS = ("relations_mean", "relations_var", "pick_counts", "dataset_reps")


def _config():
    from transformers import ResNetConfig

    backbone = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], out_features=list(OUT_FEATURES)
    )
    return mask2former_config(
        K,
        backbone,
        num_queries=QUERIES,
        dec_layers=DEC_LAYERS,
        hidden_dim=32,
        num_attention_heads=4,
        dim_feedforward=64,
        encoder_layers=1,
        encoder_feedforward_dim=64,
        train_num_points=256,
    )


def _model(idr: bool, seed: int = 0) -> Mask2FormerSegmentor:
    torch.manual_seed(seed)
    return Mask2FormerSegmentor(_config(), idr, refine_channels=16)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(B, 3, SIZE, SIZE, generator=g)
    blocks = torch.randint(0, K, (B, 4, 4), generator=g)
    target = blocks.repeat_interleave(SIZE // 4, 1).repeat_interleave(SIZE // 4, 2)
    target[:, :5, :] = 255
    return images, target


def test_config_matches_detectron2():
    cfg = _config()
    assert (cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.no_object_weight) == (2.0, 5.0, 5.0, 0.1)
    assert cfg.dropout == 0.0 and not cfg.pre_norm and cfg.use_auxiliary_loss and cfg.common_stride == 4
    full = mask2former_config(150, _config().backbone_config)
    assert (full.num_queries, full.decoder_layers, full.hidden_dim, full.mask_feature_size) == (100, 10, 256, 256)
    assert (full.train_num_points, full.oversample_ratio, full.importance_sample_ratio) == (12544, 3.0, 0.75)
    assert (full.encoder_layers, full.encoder_feedforward_dim, full.dim_feedforward) == (6, 1024, 2048)
    model = _model(False)
    assert len(model.head.transformer.decoder.layers) == DEC_LAYERS - 1  # detectron2 counting
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())  # frozen BN


def test_target_conversion_excludes_ignore():
    target = torch.tensor(
        [
            [[0, 0, 255, 3], [0, 2, 2, 3], [255, 255, 2, 3]],
            [[255, 255, 255, 255], [255, 255, 255, 255], [255, 255, 255, 255]],
        ]
    )
    masks, classes = semantic_to_instances(target, 255)
    assert classes[0].tolist() == [0, 2, 3] and classes[0].dtype == torch.long
    expected = torch.tensor(
        [
            [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]],
            [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]],
            [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]],
        ],
        dtype=torch.float,
    )
    assert torch.equal(masks[0], expected)
    assert masks[1].shape == (0, 3, 4) and classes[1].numel() == 0


def test_semantic_inference_against_a_loop():
    g = torch.Generator().manual_seed(0)
    classes = torch.randn(2, 3, K + 1, generator=g)
    masks = torch.randn(2, 3, 4, 4, generator=g)
    scores = semantic_inference(classes, masks, (8, 8))
    up = torch.nn.functional.interpolate(masks, size=(8, 8), mode="bilinear", align_corners=False).sigmoid()
    probs = classes.softmax(-1)
    expected = torch.zeros(2, K, 8, 8)
    for b in range(2):
        for q in range(3):
            for k in range(K):
                expected[b, k] += probs[b, q, k] * up[b, q]
    torch.testing.assert_close(scores, expected)


@pytest.mark.parametrize("idr", [False, True], ids=["baseline", "idr"])
def test_train_step_and_eval(idr):
    model = _model(idr)
    images, target = _batch()
    model.train()
    losses = model(images, target)
    expected = {"mask_cls", "mask_bce", "mask_dice"} | ({"stage1"} if idr else set())
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    stem = model.backbone.embedder.embedder.convolution.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0  # gradients reach the backbone
    assert model.head.class_predictor.weight.grad.abs().sum() > 0
    if idr:
        assert model.idr.stage1[-1].weight.grad.abs().sum() > 0
        assert model.idr.fuse[0].weight.grad.abs().sum() > 0
        assert model.idr.pick_counts.sum() >= B  # one deletion per image
        assert model.idr.dataset_reps.abs().sum() > 0
        assert not torch.equal(model.idr.relations_mean, torch.eye(K))

    model.eval()
    before = {n: getattr(model.idr, n).clone() for n in BUFFERS} if idr else {}
    with torch.no_grad():
        scores = model(images)
    assert scores.shape == (B, K, SIZE, SIZE)
    assert torch.isfinite(scores).all() and (scores >= 0).all()
    assert (scores.sum(1) <= QUERIES + 1e-4).all()  # sum_k p_q(k) <= 1 and sigmoid <= 1 per query
    pred = scores.argmax(1)
    assert pred.min() >= 0 and pred.max() < K
    for name, value in before.items():
        assert torch.equal(value, getattr(model.idr, name))  # inference leaves the buffers alone


def test_state_with_idr_buffers_survives_save_and_load():
    model = _model(True)
    model.train()
    sum(model(*_batch()).values()).backward()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    for name in BUFFERS:
        assert f"head.idr.{name}" in state
    fresh = _model(True, seed=1)
    fresh.load_state_dict(state)
    for name in BUFFERS:
        assert torch.equal(getattr(fresh.idr, name), getattr(model.idr, name))
    model.eval(), fresh.eval()
    images = _batch(1)[0]
    with torch.no_grad():
        assert torch.equal(model(images), fresh(images))


def test_optimizer_groups_and_schedule():
    model = _model(True)
    cfg = TrainConfig(iterations=100, optimizer="adamw", lr=1e-4, weight_decay=0.05, backbone_lr_mult=0.1,
                      warmup_iterations=10, min_lr=0.0)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert groups["backbone"]["lr"] == pytest.approx(1e-5) and groups["backbone"]["lr_mult"] == 0.1
    assert groups["head"]["lr_mult"] == 1.0 and groups["head"]["weight_decay"] == 0.05
    assert groups["head_no_decay"]["weight_decay"] == 0.0
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(v) for v in ids.values()) == len(trainable)  # every parameter exactly once
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert backbone_ids == ids["backbone"] | ids.get("backbone_no_decay", set())
    no_decay = ids["head_no_decay"] | ids.get("backbone_no_decay", set())
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            is_norm = isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.Embedding))
            if is_norm or pname.endswith("bias") or "level_embed" in pname:
                assert id(p) in no_decay, f"{name}.{pname} is decayed"
            if isinstance(module, (nn.Conv2d, nn.Linear)) and pname == "weight":
                assert id(p) not in no_decay, f"{name}.{pname} is not decayed"
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert all(g["betas"] == (0.9, 0.999) for g in optimizer.param_groups)

    sgd = build_optimizer(model, TrainConfig(iterations=10))  # the CNN runs: decay everywhere, one lr
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["weight_decay"] == 5e-4 and g["lr_mult"] == 1.0 for g in sgd.param_groups)

    assert lr_at(0, cfg) == pytest.approx(1e-4 * 1e-6)
    assert lr_at(5, cfg) == pytest.approx(1e-4 * 0.95**0.9 * (1 - 0.5 * (1 - 1e-6)))
    assert lr_at(10, cfg) == pytest.approx(1e-4 * 0.9**0.9)
    assert lr_at(50, cfg) == pytest.approx(1e-4 * 0.5**0.9)
    assert lr_at(100, cfg) == pytest.approx(0.0)
    assert lr_at(0, TrainConfig(iterations=100)) == pytest.approx(0.01)  # no warm-up by default


def test_registry_hook_and_pretrained_weights(tmp_path):
    assert "mask2former" in all_framework_names() and "mask2former" not in framework_names()
    check_backbone("mask2former", "swin_l")
    with pytest.raises(ValueError, match="resnet50c.*not supported"):
        check_backbone("mask2former", "resnet50c")
    missing = tmp_path / "weights" / "resnet-50.safetensors"
    with pytest.raises(PretrainedWeightsError) as err:
        build_segmentor("mask2former", True, K, ModelConfig(backbone="resnet50", pretrained=str(missing)))
    assert "\n" not in str(err.value) and str(missing) in str(err.value) and "microsoft/resnet-50" in str(err.value)

    # a transformers image-classification checkpoint (prefix "resnet.", classifier) loads into the backbone
    source = _model(False, seed=3)
    state = {f"resnet.{k}": v for k, v in source.backbone.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(10, 128)
    path = tmp_path / "tiny_resnet.pth"
    torch.save(state, path)
    target = _model(False, seed=4)
    load_backbone_weights(target.backbone, path, "tiny")
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(value, target.backbone.state_dict()[key])
    torch.save({k: v for k, v in state.items() if "stages.3" not in k}, path)
    with pytest.raises(RuntimeError, match="does not fit") as err:
        load_backbone_weights(target.backbone, path, "tiny")
    assert "\n" not in str(err.value)


def test_flops_are_counted_with_idr():
    from harness.measure import count_flops, count_params

    base, idr = _model(False), _model(True)
    flops_base, flops_idr = count_flops(base, (SIZE, SIZE)), count_flops(idr, (SIZE, SIZE))
    assert flops_base["by_module"]["backbone"] > 0 and flops_base["by_module"]["head"] > 0
    assert flops_idr["by_module"]["backbone"] == flops_base["by_module"]["backbone"]
    assert flops_idr["by_module"]["head"] > flops_base["by_module"]["head"]
    # every matmul-like op is counted: convolutions, linears, attention (incl. the decoder's masked
    # cross-attention, aten::baddbmm), the deformable sampling (grid_sampler) and the semantic einsum
    counted = ("aten::_convolution", "aten::linear", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::einsum",
               "aten::grid_sampler")
    assert not set(counted) & set(flops_idr["unsupported_ops"])
    assert count_params(idr)["by_module"]["head"] > count_params(base)["by_module"]["head"]
