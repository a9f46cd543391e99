"""The official settings of the context schemes beside IDR (sssegmentation 1.7.0), as plain data.

Read from SegmentationBLWX/sssegmentation `ssseg/configs/<scheme>/*.py` (and `_base_/segmentors/<scheme>.py`);
the pip wheel lacks that folder, so they are written here. The similarity-driven schemes (Non-local,
DNL, OCRNet, DANet, CCNet) are baselines of their own, R50-D8 on ADE20K and Cityscapes, which
harness.official builds like the four frameworks' baselines from the head, losses and switches below.
ISNet and MCIBI (on DeepLabV3) run as the frameworks `isnet` and `mcibi` (their own heads,
models/heads/isnet.py and models/heads/mcibi.py). MCIBI++ runs as the frameworks `<framework>_mcibipp` (models/registry.py PLUGIN_FRAMEWORKS);
its per-dataset switches differ (self-attention on the context, which logits read the memory,
3x3 or 1x1 decoder convs, the FPN width), so each (framework, dataset) has its row below.

:func:`scheme_model_settings` gives our `ModelConfig` keys, :func:`scheme_segmentor_cfg` the dict
`BuildSegmentor(cfg, mode)` builds (parity tests, converter tests), :func:`check_scheme_pair`
which combinations have an official config.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

R50 = "resnet50c"
SWIN_L = "swin_large"
R50_DATASETS = ("ade20k", "cityscapes", "coco_stuff10k", "lip")
MCIBIPP_FRAMEWORKS = {f"{f}_mcibipp": f for f in ("fcn", "pspnet", "deeplabv3", "upernet")}
#: The official model-zoo file stem of each MCIBI++ framework (mcibiplusplus_<stem>resnet50os8_<data>).
MCIBIPP_ZOO_STEMS = {"fcn": "", "pspnet": "ppm_", "deeplabv3": "aspp_", "upernet": "upernet_"}
ASPP_DILATIONS_OS8 = (1, 12, 24, 36)
PPM_POOL_SCALES = (1, 2, 3, 6)


#: Similarity-driven context schemes, frameworks of their own (no IDR variant), R50-D8 on these datasets
#: (ssseg/configs/<scheme>/<scheme>_resnet50os8_<dataset>.py; the two differ only in the class count).
SIMILARITY_SCHEMES = ("nonlocalnet", "dnlnet", "ocrnet", "danet", "ccnet")
SCHEME_DATASETS = ("ade20k", "cityscapes")
SIMILARITY_TYPES = {"nonlocalnet": "NonLocalNet", "dnlnet": "DNLNet", "ocrnet": "OCRNet", "danet": "DANet", "ccnet": "CCNet"}
#: the OCRNet R50 configs: no dropout before either classifier (the auxiliary head's included)
NO_DROPOUT_SCHEMES = ("ocrnet",)
#: (framework, dataset) -> (epochs, batch size) where a scheme's official R50-D8 schedule departs from the dataset's
SCHEME_SCHEDULES = {
    ("ocrnet", "cityscapes"): (440, 8),  # ssseg/configs/ocrnet/ocrnet_resnet50os8_cityscapes.py
    ("mcibi", "cityscapes"): (440, 16),  # ssseg/configs/mcibi/mcibi_deeplabv3_resnet50os8_cityscapes.py (on trainval)
    ("isnet", "cityscapes"): (440, 16),  # ssseg/configs/isnet/isnet_resnet50os8_cityscapes.py (DATALOADER_CFG_BS16)
}

#: Schemes with a head of their own -> the datasets of their official R50-D8 configs we build.
#: On LIP both use LeakyReLU (slope 0.01) in the head and auxiliary head, and ISNet a shortcut decoder.
OWN_HEAD_DATASETS = {"isnet": R50_DATASETS, "mcibi": R50_DATASETS}
LEAKY_RELU_DATASETS = ("lip",)


@dataclass(frozen=True)
class MCIBISwitches:
    """One official MCIBI (DeepLabV3) config: the memory loss (`use_loss`) and the learning rate at
    which the memory momentum is its base 0.9 (`momentum_cfg.base_lr`)."""

    memory_loss: bool
    momentum_lr: float

    def plugin_options(self) -> dict[str, Any]:
        return {"memory_momentum": 0.9, "momentum_lr": self.momentum_lr, "memory_loss": self.memory_loss}


_MCIBI_R50 = {
    "ade20k": MCIBISwitches(memory_loss=True, momentum_lr=0.01),
    "cityscapes": MCIBISwitches(memory_loss=False, momentum_lr=0.01 * 0.9),
    "coco_stuff10k": MCIBISwitches(memory_loss=False, momentum_lr=0.001 * 0.9),
    "lip": MCIBISwitches(memory_loss=False, momentum_lr=0.01),
}


def is_scheme(framework: str) -> bool:
    """MCIBI++, ISNet, MCIBI: the schemes whose configs this module builds whole (harness.official
    builds the similarity schemes as baselines, from :func:`similarity_head`)."""
    return framework in MCIBIPP_FRAMEWORKS or framework in OWN_HEAD_DATASETS


@dataclass(frozen=True)
class MCIBIPPSwitches:
    """One official MCIBI++ config in our terms (see models.plugins.mcibipp.MCIBIPPOptions)."""

    context: str | None  # "ppm" / "aspp" / None (FCN: context_within_image off)
    self_attention: bool = False
    gather_from: str = "context"  # "feats": force_use_preds_pr
    stage1_kernel: int = 1
    context_kernel: int = 1
    decode_kernel: int = 1
    fpn_channels: int = 512  # UPerNet: the FPN's 3x3 output convs (its laterals are 2C wide)

    def plugin_options(self) -> dict[str, Any]:
        return {"self_attention": self.self_attention, "gather_from": self.gather_from,
                "stage1_kernel": self.stage1_kernel, "context_kernel": self.context_kernel,
                "decode_kernel": self.decode_kernel}


_MCIBIPP_R50: dict[tuple[str, str], MCIBIPPSwitches] = {
    **{("fcn", d): MCIBIPPSwitches(None) for d in R50_DATASETS},
    ("pspnet", "ade20k"): MCIBIPPSwitches("ppm", self_attention=True, gather_from="feats"),
    ("pspnet", "cityscapes"): MCIBIPPSwitches("ppm", stage1_kernel=3, context_kernel=3, decode_kernel=3),
    ("pspnet", "coco_stuff10k"): MCIBIPPSwitches("ppm", self_attention=True, decode_kernel=3),
    ("pspnet", "lip"): MCIBIPPSwitches("ppm", self_attention=True),
    ("deeplabv3", "ade20k"): MCIBIPPSwitches("aspp", decode_kernel=3),
    ("deeplabv3", "cityscapes"): MCIBIPPSwitches("aspp", self_attention=True),
    ("deeplabv3", "coco_stuff10k"): MCIBIPPSwitches("aspp", self_attention=True, decode_kernel=3),
    ("deeplabv3", "lip"): MCIBIPPSwitches("aspp", self_attention=True),
    ("upernet", "ade20k"): MCIBIPPSwitches("ppm", decode_kernel=3),
    ("upernet", "cityscapes"): MCIBIPPSwitches("ppm", fpn_channels=1024),
    ("upernet", "coco_stuff10k"): MCIBIPPSwitches("ppm", decode_kernel=3),
    ("upernet", "lip"): MCIBIPPSwitches("ppm", decode_kernel=3),
}
#: mcibiplusplus_upernet_swinlarge_ade20k: the default ASPP context, with self-attention
_MCIBIPP_SWIN = {("upernet", "ade20k"): MCIBIPPSwitches("aspp", self_attention=True, decode_kernel=3)}


def check_similarity_pair(framework: str, dataset: str, idr: bool) -> None:
    """ValueError (one line) unless the similarity scheme has an official R50 config for this combination."""
    if idr or dataset not in SCHEME_DATASETS:
        raise ValueError(
            f"no official R50 config for {framework}{'+idr' if idr else ''}/{dataset}; a context scheme has "
            f"no IDR variant; datasets: {', '.join(SCHEME_DATASETS)}"
        )


def similarity_head(framework: str) -> dict[str, Any]:
    """The head of a similarity scheme's R50-D8 config (ssseg/configs/_base_/segmentors/<scheme>.py)."""
    head: dict[str, Any] = {"in_channels": 2048, "feats_channels": 512, "dropout": 0.1}
    if framework in ("nonlocalnet", "dnlnet"):
        head.update(use_scale=True, mode="embeddedgaussian", reduction=2)
    if framework == "dnlnet":
        head["temperature"] = 0.05
    if framework == "ocrnet":
        head.update(transform_channels=256, scale=1, dropout=0)
    if framework == "danet":
        head["transform_channels"] = 64
    if framework == "ccnet":
        head["num_recurrence"] = 2
    return head


def similarity_loss_names(framework: str) -> tuple[str, ...]:
    """The official loss terms besides the auxiliary one (each at weight 1.0)."""
    return ("loss_cls_pam", "loss_cls_cam", "loss_cls_pamcam") if framework == "danet" else ("loss_cls",)


def check_scheme_pair(framework: str, dataset: str, backbone: str = R50) -> None:
    """ValueError (one line) unless the scheme has an official config for this combination."""
    if framework in OWN_HEAD_DATASETS:
        if backbone != R50 or dataset not in OWN_HEAD_DATASETS[framework]:
            raise ValueError(f"no official {backbone} config for {framework}/{dataset} that we build; "
                             f"datasets: {', '.join(OWN_HEAD_DATASETS[framework])} (resnet50c)")
        return
    base = MCIBIPP_FRAMEWORKS.get(framework)
    table = _MCIBIPP_SWIN if backbone == SWIN_L else _MCIBIPP_R50
    if base is None or (base, dataset) not in table:
        pairs = ", ".join(sorted(f"{f}_mcibipp/{d}" for f, d in table))
        raise ValueError(f"no official {backbone} config for {framework}/{dataset}; official: {pairs}")


def mcibipp_switches(framework: str, dataset: str, backbone: str = R50) -> MCIBIPPSwitches:
    check_scheme_pair(framework, dataset, backbone)
    table = _MCIBIPP_SWIN if backbone == SWIN_L else _MCIBIPP_R50
    return table[(MCIBIPP_FRAMEWORKS[framework], dataset)]


def scheme_model_settings(framework: str, dataset: str, backbone: str = R50) -> dict[str, Any]:
    """`ModelConfig` keys that make our model the official one."""
    if framework in OWN_HEAD_DATASETS:
        check_scheme_pair(framework, dataset, backbone)
        out = {"feats_channels": 512, "aux_channels": 512, "refine_channels": 256}
        if framework == "mcibi":
            out["plugin_options"] = _MCIBI_R50[dataset].plugin_options()
        if framework == "isnet" and dataset == "lip":
            out["plugin_options"] = {"shortcut": True}
        if dataset in LEAKY_RELU_DATASETS:
            out["head_activation"] = "leaky_relu"
        return out
    sw = mcibipp_switches(framework, dataset, backbone)
    out: dict[str, Any] = {"feats_channels": 512, "head_channels": sw.fpn_channels, "aux_channels": 512,
                           "refine_channels": 256, "plugin_options": sw.plugin_options()}
    if MCIBIPP_FRAMEWORKS[framework] == "upernet":
        out["upernet_context"] = sw.context
    return out


def _decoder(in_channels: int, kernel: int) -> dict[str, Any]:
    out: dict[str, Any] = {"in_channels": in_channels, "out_channels": 512, "dropout": 0.1}
    if kernel == 3:
        out.update(kernel_size=3, padding=1)
    return out


def _mcibipp_head(framework: str, dataset: str, backbone: str, ignore_index: int) -> dict[str, Any]:
    sw = mcibipp_switches(framework, dataset, backbone)
    base = MCIBIPP_FRAMEWORKS[framework]
    if base == "upernet":
        decode_in = 3 * sw.fpn_channels + 1024
    else:
        decode_in = 512 if sw.context is None else 1024
    head: dict[str, Any] = {
        "context_within_image": {
            "is_on": sw.context is not None, "type": sw.context or "aspp", "use_self_attention": sw.self_attention,
            "cfg": {"pool_scales": list(PPM_POOL_SCALES), "dilations": list(ASPP_DILATIONS_OS8)},
        },
        "warmup_epoch": 0, "use_hard_aggregate": False, "downsample_before_sa": False,
        "force_use_preds_pr": sw.gather_from == "feats", "fuse_memory_cwi_before_fpn": True,
        "in_channels": 1536 if backbone == SWIN_L else 2048, "feats_channels": 512, "transform_channels": 256,
        "out_channels": 512,
        # the official datasets mark unlabelled pixels -100; ours 255: the same switch at our value
        "update_cfg": {"ignore_index": ignore_index,
                       "momentum_cfg": {"base_momentum": 0.1, "base_lr": None, "adjust_by_learning_rate": False}},
        "decoder": {"pr": _decoder(512, sw.stage1_kernel), "cwi": _decoder(512, sw.context_kernel),
                    "cls": _decoder(decode_in, sw.decode_kernel)},
    }
    if base == "upernet":
        levels = [192, 384, 768, 1536] if backbone == SWIN_L else [256, 512, 1024, 2048]
        head["fpn"] = {"in_channels_list": levels, "feats_channels": 1024, "out_channels": sw.fpn_channels}
    return head


def _mcibi_head(dataset: str, ignore_index: int) -> dict[str, Any]:
    sw = _MCIBI_R50[dataset]
    return {
        "downsample_backbone": {"kernel_size": 3, "stride": 1, "padding": 1, "bias": False},
        "context_within_image": {"is_on": True, "type": "aspp", "cfg": {"dilations": list(ASPP_DILATIONS_OS8)}},
        "use_hard_aggregate": False, "in_channels": 2048, "feats_channels": 512, "transform_channels": 256,
        "out_channels": 512, "num_feats_per_cls": 1, "use_loss": sw.memory_loss,
        "loss_cfg": {"type": "CrossEntropyLoss", "scale_factor": 1.0, "reduction": "mean"},
        # the official datasets mark unlabelled pixels -100; ours 255: the same switch at our value
        "update_cfg": {"strategy": "cosine_similarity", "ignore_index": ignore_index,
                       "momentum_cfg": {"base_momentum": 0.9, "base_lr": sw.momentum_lr, "adjust_by_learning_rate": True}},
        "dropout": 0.1,
    }


def scheme_segmentor_cfg(
    framework: str,
    dataset: str,
    backbone: str,
    num_classes: int,
    *,
    backbone_cfg: dict[str, Any],
    loss: Any,
    norm: str = "BatchNorm2d",
    ignore_index: int = 255,
) -> dict[str, Any]:
    """The sssegmentation config dict of the official model (`backbone_cfg` and `loss(weight, ignore)`
    come from harness.official, shared with IDRNet's)."""
    common = {
        "num_classes": num_classes, "benchmark": True, "align_corners": False,
        "norm_cfg": {"type": norm}, "act_cfg": {"type": "ReLU", "inplace": True}, "backbone": backbone_cfg,
        "auxiliary": {"in_channels": 768 if backbone == SWIN_L else 1024, "out_channels": 512, "dropout": 0.1},
        "inference": {"forward": {"mode": "whole", "cropsize": None, "stride": None},
                      "tta": {"multiscale": [1], "flip": False, "use_probs_before_resize": False},
                      "evaluate": {"metric_list": ["iou", "miou"]}},
    }
    if framework in OWN_HEAD_DATASETS and dataset in LEAKY_RELU_DATASETS:
        common["act_cfg"] = {"type": "LeakyReLU", "negative_slope": 0.01, "inplace": True}
    if framework == "isnet":
        check_scheme_pair(framework, dataset, backbone)
        return copy.deepcopy({
            **common, "type": "ISNet",
            "head": {"in_channels": 2048, "feats_channels": 512, "transform_channels": 256, "concat_input": True,
                     "shortcut": {"is_on": dataset == "lip", "in_channels": 256, "feats_channels": 48},
                     "dropout": 0.1},
            "losses": {"loss_aux": loss(0.4, ignore_index), "loss_cls_stage1": loss(0.4, ignore_index),
                       "loss_cls_stage2": loss(1.0, ignore_index)},
        })
    if framework == "mcibi":
        check_scheme_pair(framework, dataset, backbone)
        return copy.deepcopy({
            **common, "type": "MCIBI", "head": _mcibi_head(dataset, ignore_index),
            "losses": {"loss_aux": loss(0.4, ignore_index), "loss_cls_stage1": loss(0.4, ignore_index),
                       "loss_cls_stage2": loss(1.0, ignore_index)},
        })
    sw = mcibipp_switches(framework, dataset, backbone)
    losses = {"loss_aux": loss(0.4, ignore_index), "loss_pr": loss(0.4, ignore_index)}
    if sw.context is not None:
        losses["loss_cwi"] = loss(1.0, ignore_index)
    losses["loss_cls"] = loss(1.0, ignore_index)
    return copy.deepcopy({
        **common, "type": "MCIBIPlusPlus", "head": _mcibipp_head(framework, dataset, backbone, ignore_index),
        "losses": losses,
    })


def scheme_checkpoint_stem(framework: str, dataset: str, backbone: str = R50) -> str:
    """The model-zoo file name before the dataset, e.g. mcibiplusplus_upernet_resnet50os8."""
    check_scheme_pair(framework, dataset, backbone)
    net = "swinlarge" if backbone == SWIN_L else "resnet50os8"
    if framework == "mcibi":
        return "mcibi_deeplabv3_r50"  # docs/modelzoo/mcibi/README.md names its files mcibi_deeplabv3_r50_<data>.pth
    if framework in OWN_HEAD_DATASETS:
        return f"{framework}_{net}"
    return f"mcibiplusplus_{MCIBIPP_ZOO_STEMS[MCIBIPP_FRAMEWORKS[framework]]}{net}"
