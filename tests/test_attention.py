"""SelfAttentionBlock's fused attention against the explicit softmax(QK^T)V it replaced."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from harness.measure import count_flops
from models.layers import SelfAttentionBlock, _positions


def attention_as_before(block: SelfAttentionBlock, query_feats: torch.Tensor, key_feats: torch.Tensor) -> torch.Tensor:
    """The block with the [B,N,M] attention matrix formed by bmm + softmax (the slow reference)."""
    b, _, h, w = query_feats.shape
    query = block.query_project(query_feats).flatten(2).transpose(1, 2)
    key = block.key_project(key_feats).flatten(2)
    value = block.value_project(key_feats).flatten(2).transpose(1, 2)
    attention = torch.softmax(torch.bmm(query, key) * block.scale, dim=-1)
    context = torch.bmm(attention, value).transpose(1, 2).reshape(b, -1, h, w)
    return block.out_project(context)


def _block_and_input(dtype: torch.dtype):
    torch.manual_seed(0)
    block = SelfAttentionBlock(24, 24, 16, 12).to(dtype).train()
    feats = torch.randn(2, 24, 12, 10, dtype=dtype)
    return block, feats


def test_the_attended_values_agree_to_float32_rounding():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 1, 300, 16) for _ in range(3))
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.25)
    explicit = torch.softmax(q @ k.transpose(-1, -2) * 0.25, dim=-1) @ v
    assert (fused - explicit).abs().max() <= 1e-6


# the block ends in a training-mode BatchNorm, whose division by the batch's spread of the
# attended values (a weighted mean, so of small spread) magnifies float32 rounding ~10x
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 3e-5), (torch.float64, 1e-12)])
def test_fused_attention_matches_the_explicit_matrix_forward_and_backward(dtype, tol):
    block, feats = _block_and_input(dtype)
    results = []
    for forward in (block, lambda q, k: attention_as_before(block, q, k)):
        x = feats.clone().requires_grad_()
        block.zero_grad()
        out = forward(x, x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        grads = [p.grad.clone() for p in block.parameters()]
        results.append((out.detach(), x.grad, grads))
    (out, x_grad, grads), (out_ref, x_grad_ref, grads_ref) = results
    assert (out - out_ref).abs().max() <= tol
    assert (x_grad - x_grad_ref).abs().max() <= tol * max(1.0, x_grad_ref.abs().max().item())
    for g, g_ref in zip(grads, grads_ref):
        assert (g - g_ref).abs().max() <= tol * max(1.0, g_ref.abs().max().item())


@pytest.mark.skipif(not hasattr(torch, "_fused_sdp_choice"), reason="this torch does not expose its kernel choice")
def test_cpu_picks_the_fused_kernel_for_the_block_layout():
    block, feats = _block_and_input(torch.float32)
    q = _positions(block.query_project(feats))
    k = _positions(block.key_project(feats))
    v = _positions(block.value_project(feats))
    flash = int(torch.nn.attention.SDPBackend.FLASH_ATTENTION)
    assert torch._fused_sdp_choice(q, k, v) == flash  # not the math fallback (0)


class _Net(nn.Module):
    def __init__(self, explicit: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.attend = SelfAttentionBlock(8, 8, 16, 8)
        self.explicit = explicit

    def forward(self, x):
        x = self.stem(x)
        return attention_as_before(self.attend, x, x) if self.explicit else self.attend(x, x)


def test_fvcore_counts_the_fused_attention_as_its_two_matmuls():
    fused, explicit = count_flops(_Net(False), (32, 40)), count_flops(_Net(True), (32, 40))
    assert fused["total"] == explicit["total"]
    n = (32 // 4) * (40 // 4)
    assert fused["total"] - count_flops(_Net(False), (4, 4))["total"] > 2 * n * n * 16 - 2 * 16
