"""Optimiser and learning-rate schedule of a training run (`train.optimizer`, `train.lr`, ...).

`build_optimizer(model, train_cfg)` puts the parameters into up to four groups: backbone or not
x weight decay or not. Every group carries `lr_mult` (the backbone's is
`train.backbone_lr_mult`, the others' 1.0); the training loop sets
``group["lr"] = lr_at(iteration, train_cfg) * group["lr_mult"]`` before every step.

* ``sgd`` (the paper's CNN runs, mmsegmentation style): momentum `train.momentum`, weight
  decay `train.weight_decay` on **every** parameter, as the official SGD configs (and this
  harness before the AdamW option) do.
* ``adamw`` (Mask2Former; the Swin-L runs): betas (0.9, 0.999), weight decay
  `train.weight_decay` except, at 0: parameters of normalisation layers (BatchNorm, GroupNorm,
  LayerNorm, ...), biases, position / relative-position tables (``absolute_pos_embed``,
  ``pos_embed``, ``position_embeddings``, ``relative_position_bias_table``) and learned
  embeddings (``nn.Embedding`` weights and ``level_embed``: Mask2Former's query and level
  embeddings, which detectron2 and mmsegmentation also exempt). With `train.no_decay_names` set,
  exactly the parameters whose full name contains one of those strings are exempt (the official
  sssegmentation Swin-L configs: ``absolute_pos_embed``, ``relative_position_bias_table``,
  ``norm``; biases and the heads' BatchNorms then decay).

Backbone parameters are those under the model's ``backbone`` child (a ``module.`` prefix from
DDP is ignored). Parameters with ``requires_grad=False`` are left out.

`lr_at(iteration, cfg)`: mmsegmentation's poly schedule,
``(lr - min_lr) * (1 - it / iterations) ** poly_power + min_lr``, times mmcv's linear warm-up
factor ``1 - (1 - it / warmup_iterations) * (1 - 1e-6)`` during the first
`warmup_iterations` iterations (so it starts at 1e-6 of the scheduled value). With AdamW at
lr 1e-4 set `min_lr` to 0 (detectron2's WarmupPolyLR decays to 0; the default 1e-4 would hold
the lr constant).
"""
from __future__ import annotations

import torch
import torch.nn as nn

WARMUP_RATIO = 1e-6
ADAMW_BETAS = (0.9, 0.999)
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
NO_DECAY_NAMES = (
    "absolute_pos_embed",
    "pos_embed",
    "position_embedding",
    "relative_position_bias_table",
    "level_embed",
)


def _is_backbone(name: str) -> bool:
    name = name.removeprefix("module.")
    return name == "backbone" or name.startswith("backbone.")


def _no_decay(module: nn.Module, param_name: str, full_name: str) -> bool:
    if isinstance(module, NORM_LAYERS + (nn.Embedding,)):
        return True
    if param_name == "bias" or param_name.endswith("_bias"):  # includes nn.MultiheadAttention's in_proj_bias
        return True
    return any(key in full_name for key in NO_DECAY_NAMES)


def param_groups(model: nn.Module, train_cfg) -> list[dict]:
    """The optimiser's parameter groups (empty groups dropped), each with `lr_mult` and `name`."""
    exempt = train_cfg.optimizer == "adamw"
    groups: dict[tuple[bool, bool], dict] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            backbone = _is_backbone(full_name)
            if train_cfg.no_decay_names is None:
                no_decay = exempt and _no_decay(module, param_name, full_name)
            else:  # the official params_rules: a name match, nothing else (biases and head norms decay)
                no_decay = exempt and any(key in full_name for key in train_cfg.no_decay_names)
            key = (backbone, no_decay)
            if key not in groups:
                mult = train_cfg.backbone_lr_mult if backbone else 1.0
                groups[key] = {
                    "name": ("backbone" if backbone else "head") + ("_no_decay" if no_decay else ""),
                    "params": [],
                    "lr": train_cfg.lr * mult,
                    "lr_mult": mult,
                    "weight_decay": 0.0 if no_decay else train_cfg.weight_decay,
                }
            groups[key]["params"].append(param)
    order = [(True, False), (True, True), (False, False), (False, True)]
    return [groups[key] for key in order if key in groups]


def build_optimizer(model: nn.Module, train_cfg) -> torch.optim.Optimizer:
    """SGD or AdamW over :func:`param_groups` (`train_cfg` is a `harness.config.TrainConfig`)."""
    groups = param_groups(model, train_cfg)
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=train_cfg.lr, momentum=train_cfg.momentum, weight_decay=train_cfg.weight_decay
        )
    if train_cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=train_cfg.lr, betas=ADAMW_BETAS, weight_decay=train_cfg.weight_decay)
    raise ValueError(f"unknown optimizer {train_cfg.optimizer!r}; allowed: sgd, adamw")


def lr_at(iteration: int, cfg) -> float:
    """The base learning rate at `iteration` (0-based): linear warm-up from 1e-6, then poly."""
    lr = (cfg.lr - cfg.min_lr) * (1.0 - iteration / cfg.iterations) ** cfg.poly_power + cfg.min_lr
    if iteration < cfg.warmup_iterations:
        lr *= 1.0 - (1.0 - iteration / cfg.warmup_iterations) * (1.0 - WARMUP_RATIO)
    return lr
