"""The official IDRNet settings (sssegmentation 1.7.0) as plain data, and their config dicts.

The values are read from the official repository SegmentationBLWX/sssegmentation
(`ssseg/configs/idrnet/*.py`, the baselines in `ssseg/configs/{fcn,pspnet,deeplabv3,upernet}/`,
and `ssseg/configs/_base_/segmentors/*.py`); the pip wheel lacks that folder, so the dicts are
written here. :func:`official_segmentor_cfg` gives the dict `BuildSegmentor(cfg, mode)` builds
(used by the parity tests and the benchmarks); :func:`official_model_settings` gives the same
choices as our `ModelConfig` keys, and :func:`official_schedule` the training schedule.

Names: frameworks are ours (fcn, pspnet, deeplabv3, upernet; the official IDRNet names them
fcn, ppm, aspp, upernet; the context schemes' settings are in harness/official_schemes.py),
datasets are ours (ade20k, cityscapes, coco_stuff10k, lip, pascal_context59), backbones
`resnet50c` (ResNet-50 V1c, output stride 8) or `swin_large`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from harness import official_schemes as schemes

R50 = "resnet50c"
SWIN_L = "swin_large"
R50_DATASETS = ("ade20k", "cityscapes", "coco_stuff10k", "lip")
SWIN_DATASETS = ("ade20k", "coco_stuff10k", "lip", "pascal_context59")
FRAMEWORKS = ("fcn", "pspnet", "deeplabv3", "upernet")

#: Class counts of the official dataset classes (COCO-Stuff-10k: 182-way, raw id - 1).
OFFICIAL_NUM_CLASSES: dict[str, int] = {
    "ade20k": 150,
    "cityscapes": 19,
    "coco_stuff10k": 182,
    "lip": 20,
    "pascal_context59": 59,
}

#: The official model-zoo file stem of each IDRNet framework.
OFFICIAL_IDR_NAMES = {"fcn": "fcn", "pspnet": "ppm", "deeplabv3": "aspp", "upernet": "upernet"}
OFFICIAL_DATASET_NAMES = {
    "ade20k": "ade20k",
    "cityscapes": "cityscapes",
    "coco_stuff10k": "cocostuff10k",
    "lip": "lip",
    "pascal_context59": "pascalcontext59",
}
ASPP_DILATIONS_OS8 = (1, 12, 24, 36)
PPM_POOL_SCALES = (1, 2, 3, 6)


@dataclass(frozen=True)
class IDRSwitches:
    """The per-config wiring of the official IDRNet head, in our `ModelConfig` terms.

    coarse_context: "aspp" / "ppm" / None (FCN: none); coarse_refine: use_sa_on_coarsecontext_
    before / after / neither; stage1_input "feats" is force_stage1_use_oripr.
    """

    coarse_context: str | None
    coarse_refine: str
    stage1_input: str = "context"
    feats_channels: int = 512


def idr_switches(framework: str, dataset: str, backbone: str = R50) -> IDRSwitches:
    """The switches of the official IDRNet config of (framework, dataset, backbone)."""
    check_pair(framework, dataset, backbone, idr=True)
    if framework == "fcn":
        return IDRSwitches(None, "none", feats_channels=1024 if dataset == "ade20k" else 512)
    refine = {"coco_stuff10k": "before", "lip": "none"}.get(dataset, "after")
    if backbone == SWIN_L:
        # the Swin-L configs refine after stage 1 on COCO-Stuff-10k too (only the R50 ones refine before)
        refine = "none" if dataset == "lip" else "after"
        return IDRSwitches("ppm" if dataset == "lip" else "aspp", refine)
    if framework == "pspnet":
        if dataset == "cityscapes":
            return IDRSwitches("ppm", refine, stage1_input="feats", feats_channels=1024)
        return IDRSwitches("ppm", refine)
    if framework == "deeplabv3":
        return IDRSwitches("aspp", refine)
    return IDRSwitches("aspp" if dataset in ("ade20k", "cityscapes") else "ppm", refine)


def check_pair(framework: str, dataset: str, backbone: str = R50, idr: bool = True) -> None:
    """ValueError (one line) unless an official config exists for this combination."""
    if schemes.is_scheme(framework):
        if idr:
            raise ValueError(f"{framework} carries its own context module: no official config with IDR")
        schemes.check_scheme_pair(framework, dataset, backbone)
        return
    if backbone == R50 and framework in schemes.SIMILARITY_SCHEMES:
        schemes.check_similarity_pair(framework, dataset, idr)
    elif backbone == R50:
        if framework not in FRAMEWORKS or dataset not in R50_DATASETS:
            raise ValueError(
                f"no official R50 config for {framework}/{dataset}; frameworks: {', '.join(FRAMEWORKS)}; "
                f"datasets: {', '.join(R50_DATASETS)}"
            )
    elif backbone == SWIN_L:
        if framework != "upernet" or not idr or dataset not in SWIN_DATASETS:
            raise ValueError(
                f"no official Swin-L config for {framework}{'+idr' if idr else ''}/{dataset}; "
                f"only upernet+idr on {', '.join(SWIN_DATASETS)}"
            )
    else:
        raise ValueError(f"unknown official backbone {backbone!r}; allowed: {R50}, {SWIN_L}")


def released_pairs() -> list[tuple[str, str, str]]:
    """The 20 released IDRNet configurations as (framework, dataset, backbone)."""
    pairs = [(f, d, R50) for f in FRAMEWORKS for d in R50_DATASETS]
    return pairs + [("upernet", d, SWIN_L) for d in SWIN_DATASETS]


def official_checkpoint_name(framework: str, dataset: str, backbone: str = R50, idr: bool = True) -> str:
    """The model-zoo file name, e.g. idrnet_upernet_resnet50os8_ade20k.pth."""
    check_pair(framework, dataset, backbone, idr)
    if schemes.is_scheme(framework):
        return f"{schemes.scheme_checkpoint_stem(framework, dataset, backbone)}_{OFFICIAL_DATASET_NAMES[dataset]}.pth"
    net = "swinlarge" if backbone == SWIN_L else "resnet50os8"
    data = OFFICIAL_DATASET_NAMES[dataset]
    if idr:
        return f"idrnet_{OFFICIAL_IDR_NAMES[framework]}_{net}_{data}.pth"
    return f"{framework}_{net}_{data}.pth"


# ------------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class Schedule:
    """Official training schedule: optimizer, lr, its poly floor, warm-up, crop, batch, epochs."""

    optimizer: str
    lr: float
    weight_decay: float
    min_lr: float
    poly_power: float
    warmup_iterations: int
    crop_size: tuple[int, int]
    batch_size: int
    epochs: int
    #: AdamW: weight decay x0 for parameter names containing these (the official params_rules)
    no_decay_names: tuple[str, ...] = ()


_R50_EPOCHS_BATCH = {"ade20k": (130, 16), "cityscapes": (220, 8), "coco_stuff10k": (110, 16), "lip": (150, 32)}
_R50_CROP = {"ade20k": (512, 512), "cityscapes": (512, 1024), "coco_stuff10k": (512, 512), "lip": (473, 473)}
_SWIN_EPOCHS = {"ade20k": 130, "coco_stuff10k": 110, "lip": 110, "pascal_context59": 260}
_SWIN_CROP = {"ade20k": (640, 640), "coco_stuff10k": (640, 640), "lip": (473, 473), "pascal_context59": (640, 640)}


#: Training images of each dataset's train split (the official epochs are over these).
OFFICIAL_TRAIN_IMAGES = {"ade20k": 20210, "cityscapes": 2975, "coco_stuff10k": 9000, "lip": 30462,
                         "pascal_context59": 4998}


def official_iterations(schedule: Schedule, dataset: str) -> int:
    """The official epochs as iterations at the official batch size (rounded half up)."""
    return int(schedule.epochs * OFFICIAL_TRAIN_IMAGES[dataset] / schedule.batch_size + 0.5)


def official_schedule(framework: str, dataset: str, backbone: str = R50, idr: bool = True) -> Schedule:
    """The schedule of the official config. The PolyScheduler's floor defaults to 1% of the lr."""
    check_pair(framework, dataset, backbone, idr)
    if backbone == SWIN_L:
        return Schedule(
            "adamw", 6e-5, 0.01, 0.0, 1.0, 1500, _SWIN_CROP[dataset], 16, _SWIN_EPOCHS[dataset],
            no_decay_names=("absolute_pos_embed", "relative_position_bias_table", "norm"),
        )
    epochs, batch = schemes.SCHEME_SCHEDULES.get((framework, dataset), _R50_EPOCHS_BATCH[dataset])
    lr, wd = (0.001, 1e-4) if dataset == "coco_stuff10k" else (0.01, 5e-4)
    return Schedule("sgd", lr, wd, lr * 0.01, 0.9, 0, _R50_CROP[dataset], batch, epochs)


# --------------------------------------------------------------------- our ModelConfig keys


def official_model_settings(framework: str, dataset: str, idr: bool, backbone: str = R50) -> dict[str, Any]:
    """`ModelConfig` keys that make our model the official one for this combination."""
    check_pair(framework, dataset, backbone, idr)
    if schemes.is_scheme(framework):
        return schemes.scheme_model_settings(framework, dataset, backbone)
    out: dict[str, Any] = {"feats_channels": 512, "head_channels": 512, "aux_channels": 512, "refine_channels": 256}
    if backbone == SWIN_L:
        out["head_channels"] = 1024  # the FPN width of the Swin-L configs
    if framework in schemes.NO_DROPOUT_SCHEMES:
        out["dropout"] = 0.0
    if idr:
        sw = idr_switches(framework, dataset, backbone)
        out.update(feats_channels=sw.feats_channels, stage1_input=sw.stage1_input)
        if sw.coarse_context is not None:  # FCN has no coarse context to refine
            out["coarse_refine"] = sw.coarse_refine
        if framework == "upernet":
            out["upernet_context"] = sw.coarse_context
    return out


# --------------------------------------------------------------------- sssegmentation dicts


def _backbone_cfg(backbone: str, framework: str, norm: str, swin_depths: tuple[int, ...] | None) -> dict[str, Any]:
    if backbone == SWIN_L:
        return {
            "type": "SwinTransformer", "pretrained": False,
            # the official builder asserts the depths of a named structure: a shrunken one goes unnamed
            "structure_type": "swin_large_patch4_window12_384_22k" if swin_depths is None else "swin_large_shrunken",
            "selected_indices": (0, 1, 2, 3), "norm_cfg": {"type": "LayerNorm"}, "pretrain_img_size": 384,
            "in_channels": 3, "embed_dims": 192, "patch_size": 4, "window_size": 12, "mlp_ratio": 4,
            "depths": list(swin_depths or (2, 2, 18, 2)), "num_heads": [6, 12, 24, 48], "qkv_bias": True,
            "qk_scale": None, "patch_norm": True, "drop_rate": 0.0, "attn_drop_rate": 0.0, "drop_path_rate": 0.3,
            "use_abs_pos_embed": False,
        }
    indices = (0, 1, 2, 3) if framework == "upernet" else (2, 3)
    return {
        "type": "ResNet", "depth": 50, "structure_type": "resnet50conv3x3stem", "pretrained": False,
        "outstride": 8, "use_conv3x3_stem": True, "selected_indices": indices, "norm_cfg": {"type": norm},
    }


def _ce(weight: float, ignore_index: int) -> dict[str, Any]:
    return {"type": "CrossEntropyLoss", "scale_factor": weight, "ignore_index": ignore_index, "reduction": "mean"}


def _baseline_head(framework: str) -> dict[str, Any]:
    head: dict[str, Any] = {"in_channels": 2048, "feats_channels": 512, "dropout": 0.1}
    if framework == "pspnet":
        head["pool_scales"] = list(PPM_POOL_SCALES)
    elif framework == "deeplabv3":
        head["dilations"] = list(ASPP_DILATIONS_OS8)
    elif framework == "upernet":
        head = {"in_channels_list": [256, 512, 1024, 2048], "feats_channels": 512,
                "pool_scales": list(PPM_POOL_SCALES), "dropout": 0.1}
    return head


def _idr_head(framework: str, dataset: str, backbone: str, ignore_index: int) -> dict[str, Any]:
    sw = idr_switches(framework, dataset, backbone)
    head: dict[str, Any] = {
        "in_channels": 1536 if backbone == SWIN_L else 2048, "feats_channels": sw.feats_channels,
        "refine_idcontext_channels": 256, "refine_coarsecontext_channels": 256,
        "use_sa_on_coarsecontext_before": sw.coarse_refine == "before",
        "use_sa_on_coarsecontext_after": sw.coarse_refine == "after",
        "use_fpn_before": False, "use_fpn_after": True, "force_stage1_use_oripr": sw.stage1_input == "feats",
        "clsrelation_momentum": 0.1, "dlclsreps_momentum": 0.1, "ignore_index": ignore_index, "dropout": 0.1,
    }
    if sw.coarse_context == "aspp":
        head["coarse_context"] = {"type": "aspp", "dilations": ASPP_DILATIONS_OS8}
    elif sw.coarse_context == "ppm":
        head["coarse_context"] = {"type": "ppm", "pool_scales": list(PPM_POOL_SCALES)}
    if framework == "upernet":
        width = 1024 if backbone == SWIN_L else 512
        levels = [192, 384, 768, 1536] if backbone == SWIN_L else [256, 512, 1024, 2048]
        head["fpn"] = {"in_channels_list": levels, "feats_channels": width, "out_channels": width}
    return head


_OFFICIAL_TYPES = {
    "fcn": "FCN", "pspnet": "PSPNet", "deeplabv3": "Deeplabv3", "upernet": "UPerNet", **schemes.SIMILARITY_TYPES,
}


def official_segmentor_cfg(
    framework: str,
    dataset: str,
    idr: bool,
    backbone: str = R50,
    *,
    num_classes: int | None = None,
    norm: str = "BatchNorm2d",
    ignore_index: int = 255,
    swin_depths: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The sssegmentation segmentor config dict of the official model (for `BuildSegmentor`).

    `num_classes` defaults to the dataset's official count; `norm` is SyncBatchNorm in the
    official runs (BatchNorm2d here: the same parameters, buildable on one CPU process);
    `swin_depths` shrinks Swin-L's block counts for fast numerical tests (shapes per block kept).
    """
    check_pair(framework, dataset, backbone, idr)
    k = OFFICIAL_NUM_CLASSES[dataset] if num_classes is None else num_classes
    if schemes.is_scheme(framework):
        return schemes.scheme_segmentor_cfg(
            framework, dataset, backbone, k, backbone_cfg=_backbone_cfg(backbone, "upernet", norm, swin_depths),
            loss=_ce, norm=norm, ignore_index=ignore_index,
        )
    losses = {"loss_aux": _ce(0.4, ignore_index)}
    if idr:
        head = _idr_head(framework, dataset, backbone, ignore_index)
        losses.update(loss_cls_stage1=_ce(0.4, ignore_index), loss_cls_stage2=_ce(1.0, ignore_index))
    elif framework in schemes.SIMILARITY_SCHEMES:
        head = schemes.similarity_head(framework)
        losses.update({name: _ce(1.0, ignore_index) for name in schemes.similarity_loss_names(framework)})
    else:
        head = _baseline_head(framework)
        losses["loss_cls"] = _ce(1.0, ignore_index)
    return copy.deepcopy({
        "type": "IDRNet" if idr else _OFFICIAL_TYPES[framework],
        "num_classes": k, "benchmark": True, "align_corners": False,
        "norm_cfg": {"type": norm}, "act_cfg": {"type": "ReLU", "inplace": True},
        "backbone": _backbone_cfg(backbone, framework, norm, swin_depths),
        "head": head,
        "auxiliary": {"in_channels": 768 if backbone == SWIN_L else 1024, "out_channels": 512,
                      "dropout": 0 if framework in schemes.NO_DROPOUT_SCHEMES else 0.1},
        "losses": losses,
        "inference": {"forward": {"mode": "whole", "cropsize": None, "stride": None},
                      "tta": {"multiscale": [1], "flip": False, "use_probs_before_resize": False},
                      "evaluate": {"metric_list": ["iou", "miou"]}},
    })


#: Our timm backbone name of each official backbone.
OUR_BACKBONES = {R50: "resnet50c", SWIN_L: "swin_large_patch4_window12_384"}


def our_model_config(framework: str, dataset: str, idr: bool, backbone: str = R50, **extra: Any):
    """Our `ModelConfig` of the official model (random init; `extra` overrides any key)."""
    from harness.config import ModelConfig

    settings = official_model_settings(framework, dataset, idr, backbone)
    settings.update(backbone=OUR_BACKBONES[backbone], pretrained=None, output_stride=8, sync_bn=False)
    if backbone == SWIN_L:
        settings["drop_path_rate"] = 0.3
    settings.update(extra)
    return ModelConfig(**settings)
