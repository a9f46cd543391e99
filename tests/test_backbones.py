"""Backbones: dilated ResNet V1c strides and dilations, Swin as NCHW, local-only weights."""
from __future__ import annotations

import logging

import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file

from models import backbones
from models.backbones import PretrainedWeightsError, build_backbone, is_known_backbone


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt to reach a hub fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    import timm.models._builder as builder
    import timm.models._hub as hub

    monkeypatch.setattr(hub, "hf_hub_download", forbidden)
    monkeypatch.setattr(hub, "download_url_to_file", forbidden)
    monkeypatch.setattr(builder, "load_state_dict_from_url", forbidden)
    monkeypatch.setattr(builder, "load_state_dict_from_hf", forbidden)
    monkeypatch.setattr(builder, "download_cached_file", forbidden)
    monkeypatch.setattr(torch.hub, "download_url_to_file", forbidden)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """HF and torch hub caches pointed at empty temporary directories."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def _dilations(stage: nn.Sequential) -> list[int]:
    return [block.conv2.dilation[0] for block in stage]


def _random_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A timm state dict whose float tensors differ from any fresh initialisation."""
    torch.manual_seed(0)
    sd = timm.create_model(name).state_dict()
    return {k: (v + torch.randn_like(v) if v.is_floating_point() else v) for k, v in sd.items()}


def _assert_loaded(backbone, sd: dict[str, torch.Tensor]) -> None:
    body = backbone.body.state_dict()
    expected = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    assert set(body) == set(expected)
    for key, value in expected.items():
        assert torch.equal(body[key], value), key


# ------------------------------------------------------------------------------ ResNet V1c


def test_resnet50c_is_v1c_and_dilated_to_os8():
    bb = build_backbone("resnet50c", None, 8)
    assert bb.channels == [256, 512, 1024, 2048]
    assert bb.strides == [4, 8, 8, 8]
    # deep 3x3 stem (3 -> 32 -> 32 -> 64, stride 2 first), strided 1x1 downsampling (no avg-pool: V1c, not V1d)
    stem = [m for m in bb.body.conv1 if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in stem] == [
        (3, 32, (3, 3), (2, 2)),
        (32, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
    ]
    down = bb.body.layer2[0].downsample
    assert not any(isinstance(m, nn.AvgPool2d) for m in down.modules())
    assert down[0].stride == (2, 2) and down[0].kernel_size == (1, 1)
    # layer3 at dilation 2, layer4 at 4; the first block of each runs at half (contract_dilation)
    assert _dilations(bb.body.layer3) == [1] + [2] * 5
    assert _dilations(bb.body.layer4) == [2, 4, 4]
    assert [b.conv2.stride for b in (bb.body.layer3[0], bb.body.layer4[0])] == [(1, 1), (1, 1)]
    with torch.no_grad():
        feats = bb.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 8, 8), (1, 2048, 8, 8)]


def test_resnet50c_os16():
    bb = build_backbone("resnet50c", None, 16)
    assert bb.strides == [4, 8, 16, 16]
    assert _dilations(bb.body.layer3) == [1] * 6
    assert _dilations(bb.body.layer4) == [1, 2, 2]
    with torch.no_grad():
        feats = bb.eval()(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 4]


def test_resnet101c_depth_and_aliases():
    assert is_known_backbone("resnet101c") and is_known_backbone("resnet50_v1c") and is_known_backbone("swin_l")
    assert not is_known_backbone("resnet50_typo")
    assert not is_known_backbone("hf-hub:timm/resnet18.a1_in1k")
    bb = build_backbone("resnet101_v1c", None, 8)
    assert bb.name == "resnet101c" and len(bb.body.layer3) == 23 and bb.strides == [4, 8, 8, 8]


def test_other_timm_model_gives_last_four_levels():
    bb = build_backbone("efficientnet_b0", None, 32)  # five levels in timm; the last four kept
    assert bb.channels == [24, 40, 112, 320] and bb.strides == [4, 8, 16, 32]
    with torch.no_grad():
        feats = bb.eval()(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == bb.channels


# ------------------------------------------------------------------------------------ Swin


def test_swin_tiny_returns_nchw_at_other_sizes(caplog):
    with caplog.at_level(logging.INFO, logger="models.backbones"):
        bb = build_backbone("swin_tiny_patch4_window7_224", None, 8)
    assert "output_stride=8 ignored" in caplog.text
    assert bb.channels == [96, 192, 384, 768] and bb.strides == [4, 8, 16, 32]
    # windows and shifts kept in every stage whatever the input size (segmentation Swin)
    blocks = [m for m in bb.modules() if type(m).__name__ == "SwinTransformerBlock"]
    assert all(b.window_size == (7, 7) for b in blocks) and blocks[-1].shift_size == (3, 3)
    bb.eval()
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 64, 64))
        odd = bb(torch.randn(1, 3, 70, 66))  # padded to a multiple of the patch size
    assert [tuple(f.shape) for f in feats] == [(1, 96, 16, 16), (1, 192, 8, 8), (1, 384, 4, 4), (1, 768, 2, 2)]
    assert all(f.is_contiguous() for f in feats)
    assert [tuple(f.shape[-2:]) for f in odd] == [(18, 17), (9, 9), (5, 5), (3, 3)]
    # window attention pads before the cyclic shift (official / mmseg Swin); where no padding is
    # needed that is timm's own attention, elsewhere it is not (the official side: test_official_parity)
    block = blocks[-3]  # a shifted block of stage 3 (384 channels)
    assert any(block.shift_size)
    with torch.no_grad():
        whole, padded = torch.randn(1, 14, 14, 384), torch.randn(1, 16, 16, 384)
        assert torch.allclose(block._attn(whole), type(block)._attn(block, whole), atol=1e-5)
        assert not torch.allclose(block._attn(padded), type(block)._attn(block, padded), atol=1e-3)
    # drop_path_rate 0 (the default) means no stochastic depth, not timm's own default (0.1 for Swin)
    drop_probs = {getattr(m, "drop_prob", 0.0) for m in bb.modules() if type(m).__name__ == "DropPath"}
    assert drop_probs <= {0.0}
    deeper = build_backbone("swin_tiny_patch4_window7_224", None, 8, drop_path_rate=0.3)
    assert max(getattr(m, "drop_prob", 0.0) for m in deeper.modules()) == pytest.approx(0.3)


# ---------------------------------------------------------------------------------- weights


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_state_dict_loads(tmp_path, no_downloads, suffix):
    sd = _random_state_dict("resnet18")
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    bb = build_backbone("resnet18", str(path), 8)
    _assert_loaded(bb, sd)


def test_weights_of_another_model_are_rejected(tmp_path, no_downloads):
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34").state_dict(), path)
    with pytest.raises(RuntimeError, match="does not fit 'resnet18'"):
        build_backbone("resnet18", str(path), 8)


def test_missing_file_is_a_clear_error(tmp_path, no_downloads):
    missing = tmp_path / "nope.pth"
    with pytest.raises(PretrainedWeightsError) as info:
        build_backbone("resnet18", str(missing), 8)
    msg = str(info.value)
    assert str(missing) in msg and "never downloaded" in msg and "\n" not in msg


def test_empty_cache_is_a_clear_error(empty_caches, no_downloads):
    with pytest.raises(PretrainedWeightsError) as info:
        build_backbone("resnet18", "cache", 8)
    msg = str(info.value)
    assert "\n" not in msg and "nothing is downloaded" in msg and "resnet18.a1_in1k" in msg
    assert str(empty_caches / "hf" / "hub" / "models--timm--resnet18.a1_in1k") in msg
    assert str(empty_caches / "torch" / "hub" / "checkpoints") in msg


def test_cache_finds_hf_snapshot(empty_caches, no_downloads):
    sd = _random_state_dict("resnet18")
    repo = empty_caches / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(sd, str(repo / "snapshots" / "0123abcd" / "model.safetensors"))
    assert backbones.resolve_pretrained("resnet18", "cache") == repo / "snapshots" / "0123abcd" / "model.safetensors"
    _assert_loaded(build_backbone("resnet18", "cache", 8), sd)


def test_cache_finds_torch_hub_checkpoint(empty_caches, no_downloads):
    sd = _random_state_dict("resnet18")
    ckpt = empty_caches / "torch" / "hub" / "checkpoints" / "resnet18_a1_0-d63eafa0.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(sd, ckpt)
    _assert_loaded(build_backbone("resnet18", "cache", 8), sd)
