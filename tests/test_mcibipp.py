"""MCIBI++ and ISNet without the official package: the vectorised memory update against a
per-class loop, the per-class draws against the official seeded `torch.normal`, the options'
checks, and one CPU training step + eval of every scheme framework on tiny models."""
from __future__ import annotations

import pytest
import torch

from harness.config import ModelConfig
from models.plugins.mcibipp import MCIBIPPOptions, class_noise, updated_memory
from models.registry import PLUGIN_FRAMEWORKS, build_segmentor
from tests.memory_cases import C, IGNORE, K, assert_matches_loop, labelled_features, per_class_loop, training_batch


def _official_update(momentum: float):
    """The official FeaturesMemoryV2.update of one class: its (mean, std) towards those of its mean feature."""
    def update(stats: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        mean_feature = pixels.mean(0)
        return (1 - momentum) * stats + momentum * torch.stack([mean_feature.mean(), mean_feature.std()])

    return update


def test_memory_update_matches_the_per_class_loop():
    g = torch.Generator().manual_seed(0)
    memory = torch.rand(K, 2, generator=g, dtype=torch.float64)
    feats, target = labelled_features(g)
    ours = updated_memory(memory, feats, target, IGNORE, 0.1)
    assert_matches_loop(ours, per_class_loop(memory, feats, target, _official_update(0.1)), memory)


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
    images, target = training_batch()
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
