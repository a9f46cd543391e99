"""Cases shared by the class-memory tests of MCIBI (tests/test_mcibi.py) and MCIBI++
(tests/test_mcibipp.py): a labelled float64 batch, the per-class loop that both vectorised
updates are held to, and a tiny training batch."""
from __future__ import annotations

from typing import Callable

import torch

K, C = 6, 16
IGNORE = 255


def labelled_features(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """feats [2,C,8,8] (float64) and labels in 0..K-2 (class K-1 absent), the first two rows ignored."""
    feats = torch.randn(2, C, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.randint(0, K - 1, (2, 8, 8), generator=generator)
    target[:, :2] = IGNORE
    return feats, target


def per_class_loop(
    memory: torch.Tensor, feats: torch.Tensor, target: torch.Tensor,
    update_class: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The official update, one present class at a time: row k <- update_class(row k, its pixels [n,C])."""
    memory = memory.clone()
    pixels = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
    labels = target.reshape(-1)
    for cls in labels.unique():
        if cls != IGNORE:
            memory[cls] = update_class(memory[cls], pixels[labels == cls])
    return memory


def assert_matches_loop(ours: torch.Tensor, looped: torch.Tensor, memory: torch.Tensor) -> None:
    assert torch.allclose(ours, looped, rtol=1e-12, atol=1e-12)
    assert torch.equal(ours[K - 1], memory[K - 1])  # a class with no pixel keeps its row


def training_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64x64 images and their labels in 0..K-1."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 64, 64, generator=g), torch.randint(0, K, (2, 64, 64), generator=g)


def check_a_one_by_one_fuse_fails(tmp_path, monkeypatch, framework: str, memory_class: type, layer: str,
                                  official_weight: str) -> None:
    """The memory's 3x3 fusion conv `layer` made 1x1 on our side only (ADE20K config): the converter
    names the official weight that no longer fits; with that weight cut to fit (its centre tap), the
    eval logits differ. Needs sssegmentation (the parity tests' oracle)."""
    import pytest
    from ssseg.modules.models.segmentors.builder import BuildSegmentor

    from harness.convert import ConversionError, build_official_model, convert_state_dict
    from harness.official import official_segmentor_cfg
    from models.layers import ConvBNReLU
    from tests.test_official_parity import K as PARITY_K, _check_eval, build_pair

    original = memory_class.__init__

    def one_by_one(self, num_classes, channels, transform_channels):
        original(self, num_classes, channels, transform_channels)
        setattr(self, layer, ConvBNReLU(2 * channels, channels, 1))

    monkeypatch.setattr(memory_class, "__init__", one_by_one)
    with pytest.raises(ConversionError, match=official_weight):
        build_pair(tmp_path, framework, "ade20k", False)
    official = BuildSegmentor(official_segmentor_cfg(framework, "ade20k", False, num_classes=PARITY_K), mode="TRAIN")
    ours, _ = build_official_model(framework, False, "ade20k", num_classes=PARITY_K)
    state = dict(official.state_dict())
    state[official_weight] = state[official_weight][:, :, 1:2, 1:2]
    ours.load_state_dict(convert_state_dict(state, ours, framework, False))
    with pytest.raises(AssertionError):
        _check_eval(official, ours)
