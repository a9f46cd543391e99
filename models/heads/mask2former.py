"""Mask2Former (Hugging Face transformers) as a benchmark segmentor, with and without IDR.

The model is ``transformers.Mask2FormerForUniversalSegmentation`` built from a
``Mask2FormerConfig`` written here (never fetched from the hub), with its backbone from
transformers' own ``ResNetConfig`` / ``SwinConfig``. Its parts are re-hung as the segmentor's
children so that parameters and FLOPs split into ``backbone`` and ``head`` like every other
framework: ``backbone`` is the transformers backbone (``pixel_level_module.encoder``) and
``head`` (:class:`Mask2FormerHead`) holds the pixel decoder (deformable-attention encoder + FPN),
the masked-attention transformer decoder, the class predictor, the set criterion and, with IDR,
the IDR module. The forward calls these transformers submodules step by step.

Settings (detectron2's ``maskformer2`` semantic-segmentation configs, all set explicitly in
:func:`mask2former_config`): 100 queries, hidden 256, 8 heads, decoder FFN 2048, no dropout,
post-norm; ``dec_layers`` 10 in detectron2 counting, i.e. 9 masked-attention layers plus the
prediction from the learnable queries, each of the 10 predictions supervised (transformers'
``decoder_layers`` counts the same way: it builds ``decoder_layers - 1`` layers); pixel decoder
with 6 deformable encoder layers (FFN 1024) on strides 8/16/32, FPN to stride 4, mask features
256; losses after Hungarian matching: class cross-entropy 2.0 (no-object weight 0.1), mask
binary cross-entropy 5.0 and dice 5.0 on 12544 points (oversample 3, importance ratio 0.75);
the number of masks used for normalisation is averaged over DDP ranks as in detectron2. The
matching costs use the same 2 / 5 / 5 weights. ResNet backbones keep their BatchNorm frozen
(detectron2's ``FrozenBN``; mmsegmentation's ``requires_grad=False, norm_eval=True``).
Training returns ``{"mask_cls", "mask_bce", "mask_dice"}`` (each summed over the 10 predictions
and already multiplied by 2 / 5 / 5, then by ``loss_weights["decode"]``, or ``["stage2"]`` with
IDR, both 1.0 by default) plus ``"stage1"`` with IDR. There is no FCN auxiliary head (the
decoder's deep supervision plays that role, as in Mask2Former).

Semantic inference (Mask2Former paper / detectron2 ``semantic_inference``): upsample each
query's mask logits bilinearly to the image size, then
``scores[b,k] = sum_q softmax(class_logits[b,q])[k] * sigmoid(mask[b,q])``, the no-object class
dropped. Scores are non-negative and at most the number of queries; their argmax is the
prediction.

Where IDR sits (our choice: the paper reports Mask2Former+IDR but neither the paper nor the
official code digest says where it is attached):

* F = the pixel decoder's per-pixel features, ``mask_features`` (its last output, 256 channels
  at stride 4), so IDR's C is the pixel decoder width, not ``ModelConfig.feats_channels``;
* stage 1: an auxiliary per-pixel classifier on F (1x1 conv-BN-ReLU, Dropout2d, 1x1 conv to K,
  as :class:`models.layers.PixelClassifier`), trained with cross-entropy at the label size,
  weight ``loss_weights["stage1"]`` (0.4); its argmax gives the pseudo labels;
* steps 2-6 (dataset-level class representations, grouping, relation-guided interaction,
  self-attention refinement at ``refine_channels``) as every other framework, giving Z at 1/4;
* Z goes back into the mask features: ``mask_features <- ConvBNReLU1x1([F, Z])`` (2C -> C), so
  every query's mask (and the decoder's attention masks) is computed on the IDR-enhanced
  features; the multi-scale features the queries attend to are unchanged;
* stage 2 = the Mask2Former semantic inference above on the final decoder prediction; the
  deletion diagnostics re-run fuse + decoder with one class deleted per image (same dropout
  state) and compare the two semantic predictions at the label size, using
  ``log(scores)`` as the logits (so the per-pixel loss is ``-log(s_c / sum_k s_k)``, the NLL
  of the normalised semantic scores);
* the dataset-level representations are updated from F (before the concatenation).

The IDR buffers and steps are :class:`models.plugins.idr_head.IDRCore`'s, shared with the other
frameworks. Note the refinement's self-attention runs over all (H/4)x(W/4) positions, so its
cost grows with the 4th power of the side (about 16x that of the frameworks with IDR at 1/8).

Backbones (names as in ``ModelConfig.backbone``; all strides 4/8/16/32, ``output_stride`` is
ignored): ``resnet18``/``resnet34``/``resnet50``/``resnet101`` (transformers ResNet: 7x7 stem,
stride in the 3x3 conv, i.e. torchvision's ResNet, which detectron2's Mask2Former uses) and
``swin_t``/``swin_b``/``swin_l`` (or their timm names ``swin_tiny_patch4_window7_224``,
``swin_base_patch4_window12_384``, ``swin_large_patch4_window12_384``; drop path 0.3, with the
LayerNorm on every output level). Pretrained backbone weights come only from a local
transformers-format state dict (``ResNetModel`` / ``SwinModel`` / their image-classification
checkpoints; ``.safetensors``, ``.bin``, ``.pth``, ``.pt``), or with ``pretrained: cache`` from
the local Hugging Face cache of the matching ``microsoft/...`` checkpoint. Nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import FrozenBatchNorm2d
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss
from transformers.utils import logging as hf_logging

from models.hf_backbones import backbone_spec, resolve_backbone_weights
from models.idr import exclude_classes
from models.plugins.idr_head import IDRCore, _rng_state, _set_rng_state, pick_deleted_classes
from models.layers import ConvBNReLU, PixelClassifier, SelfAttentionBlock

logger = logging.getLogger(__name__)

SCORE_FLOOR = 1e-12  # log of the semantic scores for the deletion diagnostics


# ----------------------------------------------------------------------------------- backbones
# (their configs and weight files: models/hf_backbones.py)

_CHECKPOINT_PREFIXES = ("model.pixel_level_module.encoder.", "backbone.", "resnet.", "swin.")
_NOT_BACKBONE = ("classifier.", "pooler.", "layernorm.")  # image-classification head, final norm
_FRESH_IN_BACKBONE = ("hidden_states_norms.",)  # Swin's per-level output norms are not in ImageNet checkpoints


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_backbone_weights(backbone: nn.Module, path: Path, name: str) -> None:
    """Load a transformers-format checkpoint into the backbone; one-line RuntimeError if it does not fit."""
    state = {}
    for key, value in _read_state_dict(path).items():
        for prefix in _CHECKPOINT_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if not key.startswith(_NOT_BACKBONE):
            state[key] = value
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else "")
        raise RuntimeError(
            f"model.pretrained: {path} does not fit the mask2former backbone {name!r}: {detail}"
        ) from None
    missing = [k for k in result.missing_keys if not k.startswith(_FRESH_IN_BACKBONE)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} backbone tensors missing from the file (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} file tensors not in the backbone (e.g. {', '.join(unexpected[:3])})")
        raise RuntimeError(
            f"model.pretrained: {path} does not fit the mask2former backbone {name!r}: {'; '.join(parts)}"
        )


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below `module` by a FrozenBatchNorm2d with its statistics and affine."""
    for child_name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, child_name, frozen)
        else:
            freeze_batch_norm(child)
    return module


# ------------------------------------------------------------------------------------ config


@contextlib.contextmanager
def _quiet_transformers():
    """transformers warns that a ResNet backbone is 'not supported' by Mask2Former: it is (detectron2's R-50)."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def mask2former_config(
    num_classes: int,
    backbone_config,
    *,
    num_queries: int = 100,
    dec_layers: int = 10,
    hidden_dim: int = 256,
    num_attention_heads: int = 8,
    dim_feedforward: int = 2048,
    encoder_layers: int = 6,
    encoder_feedforward_dim: int = 1024,
    train_num_points: int = 12544,
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    no_object_weight: float = 0.1,
    ignore_index: int = 255,
) -> Mask2FormerConfig:
    """detectron2's Mask2Former semantic-segmentation settings, every value set explicitly.

    `dec_layers` counts as detectron2's DEC_LAYERS (and transformers' `decoder_layers`): the
    number of supervised predictions, i.e. masked-attention layers + 1. The pixel decoder and
    the mask features are `hidden_dim` wide (detectron2: CONVS_DIM = MASK_DIM = HIDDEN_DIM = 256).
    """
    if dec_layers < 1:
        raise ValueError(f"dec_layers must be >= 1 (got {dec_layers})")
    with _quiet_transformers():
        return Mask2FormerConfig(
            backbone_config=backbone_config,
            num_labels=num_classes,
            num_queries=num_queries,
            decoder_layers=dec_layers,
            hidden_dim=hidden_dim,
            feature_size=hidden_dim,
            mask_feature_size=hidden_dim,
            num_attention_heads=num_attention_heads,
            dim_feedforward=dim_feedforward,
            encoder_layers=encoder_layers,
            encoder_feedforward_dim=encoder_feedforward_dim,
            activation_function="relu",
            dropout=0.0,
            pre_norm=False,
            enforce_input_projection=False,
            common_stride=4,
            feature_strides=[4, 8, 16, 32],
            ignore_value=ignore_index,
            class_weight=class_weight,
            mask_weight=mask_weight,
            dice_weight=dice_weight,
            no_object_weight=no_object_weight,
            train_num_points=train_num_points,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            use_auxiliary_loss=True,
            output_auxiliary_logits=False,
        )


# --------------------------------------------------------------------------- targets, inference


def semantic_to_instances(
    target: torch.Tensor, ignore_index: int = 255
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """[B,H,W] semantic labels -> per image one binary mask per present class (float [n,H,W]) and
    the classes (long [n], ascending). Ignored pixels belong to no mask (detectron2's
    MaskFormerSemanticDatasetMapper)."""
    mask_labels, class_labels = [], []
    for label in target:  # the batch only
        classes = torch.unique(label[label != ignore_index])
        mask_labels.append((label.unsqueeze(0) == classes.view(-1, 1, 1)).float())
        class_labels.append(classes.long())
    return mask_labels, class_labels


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor, size) -> torch.Tensor:
    """[B,Q,K+1] class logits and [B,Q,h,w] mask logits -> [B,K,H,W] semantic scores at `size`."""
    probs = class_logits.softmax(-1)[..., :-1]
    masks = F.interpolate(mask_logits, size=tuple(size), mode="bilinear", align_corners=False).sigmoid()
    return torch.einsum("bqk,bqhw->bkhw", probs, masks)


class SetCriterion(Mask2FormerLoss):
    """transformers' Mask2Former loss with detectron2's normalisation: the number of target masks
    averaged over DDP ranks (torch.distributed, not accelerate), at least 1."""

    def get_num_masks(self, class_labels, device) -> torch.Tensor:
        num_masks = torch.as_tensor(float(sum(len(c) for c in class_labels)), device=device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        return torch.clamp(num_masks, min=1)


# ------------------------------------------------------------------------------------ modules


class Mask2FormerIDR(IDRCore, nn.Module):
    """IDR on Mask2Former's mask features: stage-1 classifier, refiner, fuse, and the buffers."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        refine_channels: int = 256,
        dropout: float = 0.1,
        relation_momentum: float = 0.1,
        reps_momentum: float = 0.1,
        ignore_index: int = 255,
    ):
        super().__init__()
        c = channels
        self.stage1 = PixelClassifier(c, c, num_classes, dropout)
        self.refiner = SelfAttentionBlock(6 * c, 6 * c, refine_channels, c)
        self.fuse = ConvBNReLU(2 * c, c, 1)
        self.relation_momentum = relation_momentum
        self.reps_momentum = reps_momentum
        self.ignore_index = ignore_index
        self.register_idr_buffers(num_classes, c)

    def fused(self, feats: torch.Tensor, id_context: torch.Tensor) -> torch.Tensor:
        """The IDR-enhanced mask features: 1x1 conv-BN-ReLU on [F, Z]."""
        return self.fuse(torch.cat([feats, id_context], dim=1))


class Mask2FormerHead(nn.Module):
    """Everything of Mask2Former after the backbone (transformers modules), plus IDR if any."""

    main_output = "semantic"

    def __init__(self, model: Mask2FormerForUniversalSegmentation, idr: Mask2FormerIDR | None = None):
        super().__init__()
        self.config = model.config
        self.pixel_decoder = model.model.pixel_level_module.decoder
        self.transformer = model.model.transformer_module
        self.class_predictor = model.class_predictor
        self.criterion = SetCriterion(model.config, dict(model.weight_dict))
        self.idr = idr

    def pixel_features(self, feature_maps) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Pixel decoder: (mask features [B,C,H/4,W/4], three multi-scale levels for the queries)."""
        out = self.pixel_decoder(list(feature_maps), output_hidden_states=False, return_dict=True)
        return out.mask_features, tuple(out.multi_scale_features)

    def predict(
        self, multi_scale: tuple[torch.Tensor, ...], mask_features: torch.Tensor, all_layers: bool = True
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Transformer decoder: class logits [B,Q,K+1] and mask logits [B,Q,H/4,W/4] per prediction
        (all `dec_layers` of them, or only the last)."""
        out = self.transformer(multi_scale_features=list(multi_scale), mask_features=mask_features)
        hidden = out.intermediate_hidden_states if all_layers else out.intermediate_hidden_states[-1:]
        masks = list(out.masks_queries_logits) if all_layers else [out.masks_queries_logits[-1]]
        classes = [self.class_predictor(h.transpose(0, 1)) for h in hidden]
        return classes, masks


class Mask2FormerSegmentor(nn.Module):
    """`forward(images)` -> [B,K,H,W] semantic scores; `forward(images, target)` in training -> losses."""

    def __init__(
        self,
        config: Mask2FormerConfig,
        idr: bool = False,
        *,
        loss_weights: dict[str, float] | None = None,
        refine_channels: int = 256,
        dropout: float = 0.1,
        relation_momentum: float = 0.1,
        reps_momentum: float = 0.1,
        ignore_index: int = 255,
        freeze_backbone_bn: bool = True,
    ):
        super().__init__()
        with _quiet_transformers():
            model = Mask2FormerForUniversalSegmentation(config)
        self.num_classes = config.num_labels
        self.ignore_index = ignore_index
        self.loss_weights = {"stage1": 0.4, "stage2": 1.0, "decode": 1.0, **(loss_weights or {})}
        self.backbone = model.model.pixel_level_module.encoder
        if freeze_backbone_bn:
            freeze_batch_norm(self.backbone)
        idr_module = None
        if idr:
            idr_module = Mask2FormerIDR(
                config.mask_feature_size,
                config.num_labels,
                refine_channels,
                dropout,
                relation_momentum,
                reps_momentum,
                ignore_index,
            )
        self.head = Mask2FormerHead(model, idr_module)

    @property
    def idr(self) -> Mask2FormerIDR | None:
        return self.head.idr

    def forward(self, images: torch.Tensor, target: torch.Tensor | None = None):
        training = self.training and target is not None
        feats, multi_scale = self.head.pixel_features(self.backbone(images).feature_maps)
        idr = self.head.idr
        if idr is not None:
            stage1 = idr.stage1(feats)
            feats_plus, reps, present = idr.enhance(feats, stage1)
            feats_projections = idr.feats_projections(feats)
            id_context = idr.id_context(feats_plus, reps, present, stage1, feats_projections)
            rng_before_stage2 = _rng_state(feats.device)
            pixel_embeddings = idr.fused(feats, id_context)
        else:
            pixel_embeddings = feats
        classes, masks = self.head.predict(multi_scale, pixel_embeddings, all_layers=training)
        if not training:
            return semantic_inference(classes[-1], masks[-1], images.shape[-2:])

        losses = self.set_losses(classes, masks, target, "decode" if idr is None else "stage2")
        if idr is not None:
            up = F.interpolate(stage1, size=target.shape[-2:], mode="bilinear", align_corners=False)
            losses["stage1"] = self.loss_weights["stage1"] * F.cross_entropy(up, target, ignore_index=self.ignore_index)
            with torch.no_grad():
                self._update_relations_by_deletion(
                    feats, multi_scale, feats_plus, reps, present, stage1, feats_projections, classes[-1], masks[-1],
                    target, rng_before_stage2,
                )
                idr.update_dataset_reps(feats, target)
        return losses

    def set_losses(
        self, classes: list[torch.Tensor], masks: list[torch.Tensor], target: torch.Tensor, weight_name: str
    ) -> dict[str, torch.Tensor]:
        """Hungarian-matched class / mask / dice losses of every decoder prediction, grouped by kind."""
        mask_labels, class_labels = semantic_to_instances(target, self.ignore_index)
        auxiliary = [
            {"masks_queries_logits": m, "class_queries_logits": c} for m, c in zip(masks[:-1], classes[:-1])
        ]
        raw = self.head.criterion(masks[-1], classes[-1], mask_labels, class_labels, auxiliary)
        cfg = self.head.config
        kinds = {
            "loss_cross_entropy": ("mask_cls", cfg.class_weight),
            "loss_mask": ("mask_bce", cfg.mask_weight),
            "loss_dice": ("mask_dice", cfg.dice_weight),
        }
        scale = self.loss_weights[weight_name]
        losses: dict[str, torch.Tensor] = {}
        for key, value in raw.items():
            name, weight = next(kinds[k] for k in kinds if key == k or key.startswith(k + "_"))
            losses[name] = losses.get(name, 0.0) + scale * weight * value
        return losses

    def _update_relations_by_deletion(
        self, feats, multi_scale, feats_plus, reps, present, stage1, feats_projections, anchor_classes, anchor_masks,
        target, rng_before_stage2,
    ) -> None:
        """Step 8 with stage 2 = fuse + transformer decoder + semantic inference; the refiner's
        convolutions of F are the anchor's (`feats_projections`)."""
        idr = self.head.idr
        deleted = pick_deleted_classes(present, idr.pick_counts)
        present_d, reps_d = exclude_classes(present, reps, deleted)
        id_context = idr.id_context(feats_plus, reps_d, present_d, stage1, feats_projections)
        with torch.random.fork_rng(devices=[feats.device] if feats.device.type == "cuda" else []):
            _set_rng_state(rng_before_stage2, feats.device)
            classes_d, masks_d = self.head.predict(multi_scale, idr.fused(feats, id_context), all_layers=False)
        size = target.shape[-2:]
        anchor = semantic_inference(anchor_classes.detach(), anchor_masks.detach(), size)
        deleted_scores = semantic_inference(classes_d[-1], masks_d[-1], size)
        anchor_loss = idr.anchor_pixel_loss(anchor.clamp_min(SCORE_FLOOR).log(), target)
        idr.record_deletion(anchor_loss, deleted_scores.clamp_min(SCORE_FLOOR).log(), deleted, target)


# ----------------------------------------------------------------------------------- builder


def build_mask2former(idr: bool, num_classes: int, cfg, ignore_index: int = 255, **overrides) -> Mask2FormerSegmentor:
    """The segmentor for `ModelConfig` `cfg`; `overrides` go to :func:`mask2former_config`.

    Used by :func:`models.registry.build_segmentor`. Of `cfg` it reads the backbone, pretrained,
    refine_channels, dropout (stage-1 classifier), the two IDR momenta and the loss weights;
    feats_channels / head_channels / aux_channels / output_stride / upernet_context do not apply.
    """
    spec = backbone_spec(cfg.backbone)
    weights = resolve_backbone_weights(cfg.backbone, cfg.pretrained)
    if getattr(cfg, "output_stride", 32) != 32:
        logger.info("mask2former: output_stride=%s ignored (backbone strides 4, 8, 16, 32)", cfg.output_stride)
    config = mask2former_config(num_classes, spec.config(), ignore_index=ignore_index, **overrides)
    model = Mask2FormerSegmentor(
        config,
        idr,
        loss_weights=cfg.loss_weights,
        refine_channels=cfg.refine_channels,
        dropout=cfg.dropout,
        relation_momentum=cfg.relation_momentum,
        reps_momentum=cfg.dataset_reps_momentum,
        ignore_index=ignore_index,
        freeze_backbone_bn=spec.family == "resnet",
    )
    if weights is not None:
        load_backbone_weights(model.backbone, weights, cfg.backbone)
    return model
