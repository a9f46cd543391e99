"""MCIBI++ and ISNet without the official package: the vectorised memory update against a
per-class loop, the per-class draws against the official seeded `torch.normal`, the options'
checks, and one CPU training step + eval of every scheme framework on tiny models."""
from __future__ import annotations

import pytest
import torch

from harness.config import ModelConfig
from models.plugins.mcibipp import MCIBIPPOptions, class_noise, updated_memory
from models.registry import PLUGIN_FRAMEWORKS, build_segmentor

K, C = 6, 16


def _loop_update(memory, feats, target, ignore_index, momentum):
    """The official FeaturesMemoryV2.update, one class at a time."""
    memory = memory.clone()
    pixels = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
    labels = target.reshape(-1)
    for cls in labels.unique():
        if cls == ignore_index:
            continue
        mean_feature = pixels[labels == cls].mean(0)
        memory[cls, 0] = (1 - momentum) * memory[cls, 0] + momentum * mean_feature.mean()
        memory[cls, 1] = (1 - momentum) * memory[cls, 1] + momentum * mean_feature.std()
    return memory


def test_memory_update_matches_the_per_class_loop():
    g = torch.Generator().manual_seed(0)
    memory = torch.rand(K, 2, generator=g, dtype=torch.float64)
    feats = torch.randn(2, C, 8, 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, K - 1, (2, 8, 8), generator=g)  # class K-1 absent: unchanged
    target[:, :2] = 255
    ours = updated_memory(memory, feats, target, 255, 0.1)
    assert torch.allclose(ours, _loop_update(memory, feats, target, 255, 0.1), rtol=1e-12, atol=1e-12)
    assert torch.equal(ours[K - 1], memory[K - 1])


def test_class_draws_equal_the_official_seeded_normal():
    noise = class_noise(K, C)
    for k in range(K):
        torch.manual_seed(k)
        official = torch.normal(mean=torch.full((1, C), 0.3), std=torch.full((1, C), 1.7))
        assert torch.equal(official[0], 0.3 + 1.7 * noise[k])


def test_options_name_the_bad_key():
    with pytest.raises(ValueError, match="unknown key 'self_atention'"):
        MCIBIPPOptions.from_mapping({"self_atention": True})
    with pytest.raises(ValueError, match="decode_kernel"):
        MCIBIPPOptions.from_mapping({"decode_kernel": 5})


@pytest.mark.parametrize("framework", [*PLUGIN_FRAMEWORKS, "isnet"])  # the similarity schemes: test_context_schemes.py
def test_scheme_trains_one_step_and_evaluates(framework):
    cfg = ModelConfig(backbone="resnet18", feats_channels=C, head_channels=24, aux_channels=C, refine_channels=C,
                      plugin_options={"self_attention": True} if framework.endswith("_mcibipp") else {})
    model = build_segmentor(framework, False, K, cfg)
    g = torch.Generator().manual_seed(1)
    images, target = torch.randn(2, 3, 64, 64, generator=g), torch.randint(0, K, (2, 64, 64), generator=g)
    losses = model(images, target)
    expected = {"aux", "stage1", "stage2"} if framework == "isnet" else {"aux", "stage1", "decode"}
    if framework != "fcn_mcibipp" and framework.endswith("_mcibipp"):
        expected.add("context")
    assert set(losses) == expected
    sum(losses.values()).backward()
    if framework.endswith("_mcibipp"):
        assert not torch.equal(model.head.memory.memory[:, 1], torch.ones(K))
    model.eval()
    with torch.no_grad():
        assert model(images).shape == (2, K, 64, 64)
    with pytest.raises(ValueError, match="cannot take IDR"):
        build_segmentor(framework, True, K, cfg)
