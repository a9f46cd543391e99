"""CCNet's criss-cross attention (plain tensor ops) against the per-pixel reference."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from models.heads.ccnet import CrissCrossAttention, criss_cross_attention

ROOT = Path(__file__).resolve().parents[1]


def _load_reference():
    spec = importlib.util.spec_from_file_location("criss_cross_reference", ROOT / "benchmarks" / "criss_cross_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ref = _load_reference()


@pytest.mark.parametrize(("h", "w"), [(5, 7), (1, 4), (6, 1), (3, 3)])
def test_matches_the_per_pixel_reference_values_and_gradients(h, w):
    gen = torch.Generator().manual_seed(h * 10 + w)
    inputs = [torch.randn(2, d, h, w, generator=gen, dtype=torch.float64, requires_grad=True) for d in (4, 4, 6)]
    fast = criss_cross_attention(*inputs)
    slow = ref.ref_criss_cross_attention(*inputs)
    assert torch.allclose(fast, slow, atol=1e-12, rtol=1e-10)
    weights = torch.randn(fast.shape, generator=gen, dtype=torch.float64)
    fast_grads = torch.autograd.grad((fast * weights).sum(), inputs)
    slow_grads = torch.autograd.grad((slow * weights).sum(), inputs)
    for a, b in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)


def test_own_position_counts_once():
    # one position whose key matches only its own query: with the column diagonal kept it would weigh double
    query = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    key = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    query[0, 0, 1, 1] = key[0, 0, 1, 1] = 3.0
    value = torch.arange(9, dtype=torch.float64).reshape(1, 1, 3, 3)
    out = criss_cross_attention(query, key, value)
    # candidates of (1, 1): column rows 0 and 2, then row columns 0, 1, 2 -> logits 0, 0, 0, 9, 0
    logits = torch.tensor([0.0, 0.0, 0.0, 9.0, 0.0], dtype=torch.float64)
    candidates = torch.tensor([1.0, 7.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    assert out[0, 0, 1, 1].item() == pytest.approx(float(logits.softmax(0) @ candidates))


def test_module_matches_the_reference_module_with_the_same_weights():
    torch.manual_seed(0)
    ours, theirs = CrissCrossAttention(16), ref.ReferenceCrissCrossAttention(16)
    ours.gamma.scale.data.fill_(0.7)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 4, 5)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
