"""Complexity measurement: fvcore's multiply-add convention, params, latency, the CLI."""
from __future__ import annotations

import json

import pytest
import torch.nn as nn

from harness import measure as M
from harness.config import ModelConfig

# ADE20K's ratio of the paper (C = 1024 for IDR, 512 for the baseline head), scaled down
TINY = dict(backbone="resnet18", feats_channels=32, head_channels=16, aux_channels=8, refine_channels=8)


class HandMade(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_fvcore_counts_one_multiply_add_as_one_flop():
    flops = M.count_flops(HandMade(), (16, 16))
    conv = 8 * 3 * 3 * 3 * 16 * 16  # out channels x (in channels x kernel) x output pixels
    linear = 8 * 16 * 16 * 10
    assert flops["by_module"] == {"conv": conv, "fc": linear}
    assert flops["total"] == conv + linear
    assert flops["gflops"] == pytest.approx((conv + linear) / 1e9)
    assert flops["unsupported_ops"] == {}


def test_count_params_total_and_trainable():
    model = HandMade()
    model.fc.requires_grad_(False)
    params = M.count_params(model)
    assert params["total"] == 8 * 3 * 9 + 2048 * 10 + 10
    assert params["trainable"] == 8 * 3 * 9
    assert params["by_module"] == {"conv": 216, "fc": 20490}
    assert params["total_m"] == pytest.approx(params["total"] / 1e6)


def test_fcn_flops_with_idr_exceed_without():
    cfg = ModelConfig(**TINY)
    base = M.measure("fcn", False, (64, 64), cfg, num_classes=5)
    idr = M.measure("fcn", True, (64, 64), cfg, num_classes=5)
    assert idr["flops"]["total"] > base["flops"]["total"]
    assert idr["flops"]["by_module"]["backbone"] == base["flops"]["by_module"]["backbone"]
    assert base["flops"]["by_module"]["aux_head"] == 0  # not run at inference
    assert idr["params"]["total"] > base["params"]["total"]
    assert "aten::scatter_add" in idr["flops"]["unsupported_ops"]  # skipped ops are reported
    assert idr["env"]["torch"] and idr["env"]["fvcore"] and idr["env"]["timm"]


def test_latency_figures_are_positive_and_ordered():
    lat = M.measure_latency(HandMade(), (16, 16), warmup=1, iters=5, device="cpu")
    assert lat["device"] == "cpu" and lat["iters"] == 5 and lat["batch_size"] == 1
    assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    assert lat["throughput_img_s"] > 0 and lat["peak_memory_mib"] > 0


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--framework", "fcn", "--size", "512by512"], "--size"),
        (["--framework", "fcn", "--size", "0x512"], "--size"),
        (["--framework", "nope"], "--framework"),
        (["--framework", "fcn", "--backbone", "resnet_nope"], "--backbone"),
        (["--framework", "fcn", "--idr", "maybe"], "--idr"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(capsys, args, flag):
    assert M.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{flag}:" in err and "allowed" in err


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "m.json"
    argv = ["--framework", "fcn", "--backbone", "resnet18", "--idr", "on", "--size", "48x64", "--num-classes", "5",
            "--feats-channels", "16", "--head-channels", "16", "--aux-channels", "8", "--refine-channels", "8",
            "--json", str(out)]
    assert M.main(argv) == 0
    printed = capsys.readouterr().out
    assert "fcn+idr" in printed and "48x64" in printed and "fvcore" in printed
    (result,) = json.loads(out.read_text())
    assert result["input_size"] == [48, 64] and result["idr"] is True and result["flops"]["total"] > 0
