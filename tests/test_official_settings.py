"""The official settings (harness/official.py) and the experiment files that follow them."""
from __future__ import annotations

import pytest
from torch import nn

from harness import measure
from harness.config import TrainConfig, expand_cells, load_experiment
from harness.official import (
    FRAMEWORKS,
    OFFICIAL_NUM_CLASSES,
    R50,
    SWIN_L,
    official_iterations,
    official_model_settings,
    official_schedule,
    official_segmentor_cfg,
    released_pairs,
)
from harness.optim import param_groups

# Read off ssseg/configs/idrnet/*.py: (framework, dataset, backbone) ->
# (coarse context, use_sa_on_coarsecontext_before, _after, force_stage1_use_oripr, feats_channels)
OFFICIAL_HEADS = {
    ("fcn", "ade20k", R50): (None, False, False, False, 1024),
    ("fcn", "cityscapes", R50): (None, False, False, False, 512),
    ("fcn", "coco_stuff10k", R50): (None, False, False, False, 512),
    ("fcn", "lip", R50): (None, False, False, False, 512),
    ("pspnet", "ade20k", R50): ("ppm", False, True, False, 512),
    ("pspnet", "cityscapes", R50): ("ppm", False, True, True, 1024),
    ("pspnet", "coco_stuff10k", R50): ("ppm", True, False, False, 512),
    ("pspnet", "lip", R50): ("ppm", False, False, False, 512),
    ("deeplabv3", "ade20k", R50): ("aspp", False, True, False, 512),
    ("deeplabv3", "cityscapes", R50): ("aspp", False, True, False, 512),
    ("deeplabv3", "coco_stuff10k", R50): ("aspp", True, False, False, 512),
    ("deeplabv3", "lip", R50): ("aspp", False, False, False, 512),
    ("upernet", "ade20k", R50): ("aspp", False, True, False, 512),
    ("upernet", "cityscapes", R50): ("aspp", False, True, False, 512),
    ("upernet", "coco_stuff10k", R50): ("ppm", True, False, False, 512),
    ("upernet", "lip", R50): ("ppm", False, False, False, 512),
    ("upernet", "ade20k", SWIN_L): ("aspp", False, True, False, 512),
    ("upernet", "coco_stuff10k", SWIN_L): ("aspp", False, True, False, 512),
    ("upernet", "lip", SWIN_L): ("ppm", False, False, False, 512),
    ("upernet", "pascal_context59", SWIN_L): ("aspp", False, True, False, 512),
}


def test_twenty_released_configurations():
    assert sorted(released_pairs()) == sorted(OFFICIAL_HEADS)


@pytest.mark.parametrize(("framework", "dataset", "backbone"), sorted(OFFICIAL_HEADS))
def test_official_head_dict(framework, dataset, backbone):
    context, before, after, oripr, channels = OFFICIAL_HEADS[(framework, dataset, backbone)]
    cfg = official_segmentor_cfg(framework, dataset, True, backbone)
    head = cfg["head"]
    assert head.get("coarse_context", {}).get("type") == context
    assert (head["use_sa_on_coarsecontext_before"], head["use_sa_on_coarsecontext_after"]) == (before, after)
    assert head["force_stage1_use_oripr"] == oripr and head["feats_channels"] == channels
    assert head["use_fpn_after"] and not head["use_fpn_before"]
    assert cfg["num_classes"] == OFFICIAL_NUM_CLASSES[dataset]
    assert ("fpn" in head) == (framework == "upernet")
    if backbone == SWIN_L:
        assert head["fpn"]["feats_channels"] == 1024 and cfg["auxiliary"]["in_channels"] == 768


def test_official_class_counts():
    assert OFFICIAL_NUM_CLASSES == {"ade20k": 150, "cityscapes": 19, "coco_stuff10k": 182, "lip": 20,
                                    "pascal_context59": 59}


@pytest.mark.parametrize(("dataset", "lr", "min_lr", "wd"), [
    ("ade20k", 0.01, 1e-4, 5e-4), ("cityscapes", 0.01, 1e-4, 5e-4), ("lip", 0.01, 1e-4, 5e-4),
    ("coco_stuff10k", 0.001, 1e-5, 1e-4),
])
def test_r50_schedule_floor_is_one_percent(dataset, lr, min_lr, wd):
    s = official_schedule("pspnet", dataset)
    assert (s.optimizer, s.lr, s.weight_decay, s.poly_power) == ("sgd", lr, wd, 0.9)
    assert s.min_lr == pytest.approx(min_lr)


def test_swin_schedule():
    s = official_schedule("upernet", "ade20k", SWIN_L)
    assert (s.optimizer, s.lr, s.weight_decay, s.min_lr, s.poly_power, s.warmup_iterations) == (
        "adamw", 6e-5, 0.01, 0.0, 1.0, 1500)
    assert official_iterations(s, "ade20k") == 164206


def _official_backbone(cell) -> str:
    return SWIN_L if cell.model.backbone.startswith("swin_large") else R50


@pytest.mark.parametrize("path", ["experiments/full_table.yaml", "experiments/sota.yaml"])
def test_experiment_cells_follow_the_official_configs(path):
    cells = [c for c in expand_cells(load_experiment(path)) if c.framework in FRAMEWORKS]
    assert cells
    for cell in cells:
        backbone = _official_backbone(cell)
        expected = official_model_settings(cell.framework, cell.dataset, cell.idr, backbone)
        if not (cell.idr and cell.framework == "upernet"):
            expected.pop("upernet_context", None)
        got = {key: getattr(cell.model, key) for key in expected}
        assert got == expected, cell.cell_id
        s = official_schedule(cell.framework, cell.dataset, backbone, cell.idr)
        train = cell.train
        assert (train.optimizer, train.lr, train.weight_decay, train.poly_power, train.warmup_iterations,
                train.batch_size) == (s.optimizer, s.lr, s.weight_decay, s.poly_power, s.warmup_iterations,
                                      s.batch_size), cell.cell_id
        assert train.min_lr == pytest.approx(s.min_lr), cell.cell_id
        assert train.iterations == official_iterations(s, cell.dataset), cell.cell_id
        if s.no_decay_names:
            assert tuple(train.no_decay_names) == s.no_decay_names


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.ModuleDict({"norm1": nn.LayerNorm(4), "qkv": nn.Linear(4, 4)})
        self.head = nn.ModuleDict({"conv": nn.Conv2d(4, 4, 1), "bn": nn.BatchNorm2d(4)})


def test_official_adamw_exempts_only_named_parameters():
    train = TrainConfig(iterations=10, optimizer="adamw", lr=6e-5, weight_decay=0.01,
                        no_decay_names=["absolute_pos_embed", "relative_position_bias_table", "norm"])
    model = _Toy()
    exempt = {id(p) for g in param_groups(model, train) if g["weight_decay"] == 0.0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in exempt}
    assert names == {"backbone.norm1.weight", "backbone.norm1.bias"}


@pytest.mark.parametrize(("framework", "dataset", "idr", "key", "value"), [
    ("fcn", "ade20k", True, "feats_channels", 1024),
    ("fcn", "ade20k", False, "feats_channels", 512),
    ("upernet", "ade20k", True, "upernet_context", "aspp"),
    ("upernet", "lip", True, "coarse_refine", "none"),
    ("pspnet", "cityscapes", True, "stage1_input", "feats"),
])
def test_measure_builds_the_official_configuration(framework, dataset, idr, key, value):
    args = measure.build_parser().parse_args(["--framework", framework, "--dataset", dataset])
    _, _, cfgs, _ = measure._validate(args)
    assert getattr(cfgs[idr], key) == value
    assert args.num_classes == OFFICIAL_NUM_CLASSES[dataset]


def test_measure_explicit_flag_overrides_the_official_value():
    args = measure.build_parser().parse_args(["--framework", "fcn", "--feats-channels", "256", "--num-classes", "7"])
    _, _, cfgs, _ = measure._validate(args)
    assert cfgs[True].feats_channels == 256 and args.num_classes == 7
