"""The similarity-driven context schemes as frameworks: building, experiment files, measure.

Their equality with the official models is tests/test_scheme_parity_similarity.py; here they are
built on a tiny backbone, from experiment files and measured; tests/test_schemes_run.py trains every
scheme a few iterations through harness.run.
"""
from __future__ import annotations

import json

import pytest
import torch

from harness import measure as M
from harness.config import ConfigError, ModelConfig, expand_cells, load_experiment
from harness.official_schemes import SIMILARITY_SCHEMES
from models.registry import all_framework_names, build_segmentor, carries_plugin
from tests.conftest import tiny_experiment

TINY = ModelConfig(backbone="resnet18", feats_channels=16, head_channels=16, aux_channels=8, sync_bn=False)
#: the logit maps each scheme trains on (the auxiliary one included)
LOSSES = {"nonlocalnet": {"decode", "aux"}, "dnlnet": {"decode", "aux"}, "ocrnet": {"decode", "aux"},
          "danet": {"decode", "pam", "cam", "aux"}, "ccnet": {"decode", "aux"}}


@pytest.mark.parametrize("scheme", SIMILARITY_SCHEMES)
def test_scheme_trains_and_predicts_at_image_size(scheme):
    torch.manual_seed(0)
    model = build_segmentor(scheme, False, 4, TINY)
    images, target = torch.randn(2, 3, 48, 40), torch.randint(0, 4, (2, 48, 40))
    losses = model(images, target)
    assert set(losses) == LOSSES[scheme] and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.head.parameters())
    model.eval()
    with torch.no_grad():
        assert model(images).shape == (2, 4, 48, 40)


def test_schemes_are_frameworks_without_idr():
    assert set(SIMILARITY_SCHEMES) <= set(all_framework_names())
    assert all(carries_plugin(s) for s in SIMILARITY_SCHEMES) and not carries_plugin("fcn")
    with pytest.raises(ValueError, match="cannot take IDR"):
        build_segmentor("ocrnet", True, 4, TINY)


def test_experiment_gives_schemes_only_baseline_cells(write_experiment):
    exp = tiny_experiment("mixed", grid={"frameworks": ["fcn", "danet"], "idr": [False, True]})
    cells = expand_cells(load_experiment(write_experiment(exp)))
    assert [c.cell_id for c in cells] == ["fcn_context_scenes_resnet18_s0", "fcn+idr_context_scenes_resnet18_s0",
                                          "danet_context_scenes_resnet18_s0"]


def test_experiment_asking_only_idr_of_a_scheme_is_one_line_error(write_experiment):
    path = write_experiment(tiny_experiment("bad", grid={"frameworks": ["ccnet"], "idr": [True]}))
    with pytest.raises(ConfigError, match="'ccnet' carries its own context module") as err:
        load_experiment(path)
    assert "\n" not in str(err.value)


def test_measure_reports_the_context_module(tmp_path, capsys):
    out = tmp_path / "m.json"
    argv = ["--framework", "danet", "--dataset", "none", "--backbone", "resnet18", "--size", "64x64",
            "--num-classes", "5", "--head-channels", "16", "--aux-channels", "8", "--json", str(out)]
    assert M.main(argv) == 0  # --idr both: the baseline only
    assert "context GFLOPs" in capsys.readouterr().out
    (result,) = json.loads(out.read_text())
    context = result["context_module"]
    assert context["modules"] == ["head.pam", "head.cam"]
    # PAM: 16->2, 16->2, 16->16 convs and the gain; CAM: the gain
    assert context["params"] == 16 * 2 * 2 + 16 * 16 + 1 + 1
    n = 8 * 8  # positions at output stride 8
    convs = n * 16 * (2 + 2 + 16)
    attention = n * n * 2 + n * n * 16 + 16 * 16 * n * 2  # PAM affinity and sum, CAM energy and sum
    assert context["flops"] == convs + attention


def test_measure_refuses_idr_on_for_a_scheme(capsys):
    assert M.main(["--framework", "nonlocalnet", "--idr", "on"]) == 2
    assert "takes no IDR" in capsys.readouterr().err

