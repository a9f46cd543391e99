"""The IDR module as one plug-in head around any framework's context module.

A framework supplies a *wiring* object (:mod:`models.plugins.wiring`, built for :func:`idr_site`)
that says which tensor feeds stage 1 (its coarse context, or the bottleneck features F when it
has none), how that context is refined, and what stage 2 reads besides F and the IDR context Z. The
algorithm itself lives once, in :mod:`models.idr`.

Buffers (in `state_dict`, averaged across DDP ranks after every update):
`relations_mean`, `relations_var` [K,K] (start as identity), `pick_counts` [K] (start 1e-6),
`dataset_reps` [K,C] (start zero).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.class_memory import average_across_ranks
from models.idr import (
    class_means,
    deletion_effect,
    exclude_classes,
    group_by_class,
    project_joint,
    relation_context,
    relations_for_mode,
    update_relations,
)
from models.layers import ConvBNReLU, PixelClassifier, SelfAttentionBlock
from models.losses import pixel_cross_entropy
from models.plugins.wiring import PluginSite, PluginWiring

STAGE1_INPUTS = ("context", "feats")


IDRWiring = PluginWiring  # the framework side of the contract (models/plugins/wiring.py)


def idr_site(feats_channels: int) -> PluginSite:
    """IDR's place in a framework: the context module reads F; stage 2 reads [F, Z] beside the context."""
    return PluginSite(context_reads="feats", plugin_channels=2 * feats_channels, plugin_at="beside")


def stage2_input(feats: torch.Tensor, id_context: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    """[F, Z] or [F, Z, extra], F and Z resized to extra's resolution (UPerNet: 1/4)."""
    if extra is None:
        return torch.cat([feats, id_context], dim=1)
    size = extra.shape[2:]
    if feats.shape[2:] != size:
        feats = F.interpolate(feats, size=size, mode="bilinear", align_corners=False)
        id_context = F.interpolate(id_context, size=size, mode="bilinear", align_corners=False)
    return torch.cat([feats, id_context, extra], dim=1)


DELETION_OUTPUT = "idr_deletion"


@dataclass
class PendingDeletion:
    """Step 8 half done: the deleted stage-2 logits, waiting for the anchor's per-pixel loss.

    The head returns it under `DELETION_OUTPUT`; the segmentor computes the stage-2 training
    loss per pixel and hands it to :meth:`IDRCore.record_deletion`, so the anchor's
    full-resolution cross-entropy is computed once.
    """

    deleted_logits: torch.Tensor
    deleted: torch.Tensor


def pick_deleted_classes(present: torch.Tensor, pick_counts: torch.Tensor) -> torch.Tensor:
    """One present class per image, with probability proportional to 1 / (times picked before).

    Images are drawn in batch order and each pick increments `pick_counts` in place before the
    next image draws, as in the official code.
    """
    picks = []
    for image_present in present:  # loop over the batch, not over classes
        weights = image_present.to(pick_counts.dtype) / pick_counts
        pick = torch.multinomial(weights, 1)
        pick_counts[pick] += 1.0
        picks.append(pick)
    return torch.cat(picks)


def _full_precision(device: torch.device):
    """The bookkeeping of relations and dataset representations stays float32 under AMP."""
    return torch.autocast(device.type, enabled=False)


class IDRCore:
    """The framework-independent part of IDR, as a mixin for an `nn.Module`.

    It owns the four buffers (registered by :meth:`register_idr_buffers`) and steps 2-6, 8 (the
    relation update, once a framework has produced the anchor and the deleted stage-2
    predictions) and 9. The module using it must set `refiner` (a :class:`SelfAttentionBlock`
    from 6C to C channels), `relation_momentum`, `reps_momentum` and `ignore_index`.
    :class:`IDRHead` is one user; :class:`models.heads.mask2former.Mask2FormerIDR` is another.
    `relation_mode` (`model.idr_relations`): "deletion", or the controls "uniform" / "none".
    """

    relation_mode: str = "deletion"

    def register_idr_buffers(self, num_classes: int, channels: int) -> None:
        k, c = num_classes, channels
        self.register_buffer("relations_mean", torch.eye(k))
        self.register_buffer("relations_var", torch.eye(k))
        self.register_buffer("pick_counts", torch.full((k,), 1e-6))
        self.register_buffer("dataset_reps", torch.zeros(k, c))

    def enhance(
        self, feats: torch.Tensor, stage1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 2-3: F+ = [F, D[pseudo label]], then the semantic-level representations.

        Returns feats_plus [B,2C,h,w], reps [B,K,2C] and present [B,K].
        """
        pseudo = stage1.argmax(1)
        reps_of_pixels = F.embedding(pseudo, self.dataset_reps.to(feats.dtype)).permute(0, 3, 1, 2)
        feats_plus = torch.cat([feats, reps_of_pixels], dim=1)
        reps, present = group_by_class(feats_plus, stage1)
        return feats_plus, reps, present

    def feats_projections(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """The refiner's query, key and value first convolutions on the F part of the joint map
        alone: the per-pixel part of step 6, the same in the anchor and the deleted pass."""
        c = feats.shape[1]
        return [F.conv2d(feats, projection[0][0].weight[:, :c]) for projection in self.refiner.projections()]

    def id_context(
        self,
        feats_plus: torch.Tensor,
        reps: torch.Tensor,
        present: torch.Tensor,
        stage1: torch.Tensor,
        feats_projections: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Steps 4-6: relation-guided interaction, back to pixels, self-attention refinement.

        The refiner reads the joint map [F, D[pseudo], ctx_mean, ctx_var] (6C); all but F are
        vectors of the pixel's stage-1 class, so the first convolutions are applied per class
        (:func:`project_joint`) and the joint map is never built. `feats_plus` is :meth:`enhance`'s
        with the current `dataset_reps`; `feats_projections` (:meth:`feats_projections` of F) is
        computed here when not given.
        """
        mean, present_mean = relations_for_mode(self.relations_mean, present, self.relation_mode)
        var, present_var = relations_for_mode(self.relations_var, present, self.relation_mode)
        ctx_mean = relation_context(reps, present_mean, mean, True)
        ctx_var = relation_context(reps, present_var, var, False)
        c = self.dataset_reps.shape[1]
        if feats_projections is None:
            feats_projections = self.feats_projections(feats_plus[:, :c])
        dataset = self.dataset_reps.to(reps.dtype).expand(reps.shape[0], -1, -1)
        class_feats = torch.cat([dataset, ctx_mean, ctx_var], dim=-1)  # [B,K,5C]
        pre_activations = [
            project_joint(pixel_part, class_feats, projection[0][0].weight[:, c:, 0, 0], stage1)
            for pixel_part, projection in zip(feats_projections, self.refiner.projections())
        ]
        return self.refiner.attend(*pre_activations)

    def anchor_pixel_loss(self, anchor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel cross-entropy of anchor logits upsampled bilinearly to the label size."""
        with _full_precision(anchor.device):
            anchor = F.interpolate(anchor.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
            return pixel_cross_entropy(anchor, target, self.ignore_index)

    def record_deletion(
        self, anchor_loss: torch.Tensor, deleted_pred: torch.Tensor, deleted: torch.Tensor, target: torch.Tensor
    ) -> None:
        """Step 8's update: anchor per-pixel loss and logits with class deleted[b] deleted -> Rmu, Rsigma.

        `anchor_loss` [B,H,W] is at label size; the deleted prediction is upsampled bilinearly to
        it first; the relations are then averaged across ranks, with the pick counters.
        """
        size = target.shape[-2:]
        with _full_precision(deleted_pred.device):
            deleted_pred = F.interpolate(deleted_pred.float(), size=size, mode="bilinear", align_corners=False)
            mean_diff, var_diff, mean_valid, var_valid = deletion_effect(
                anchor_loss.float(), deleted_pred, target, self.ignore_index
            )
            m = self.relation_momentum
            self.relations_mean.copy_(update_relations(self.relations_mean, deleted, mean_diff, mean_valid, m))
            self.relations_var.copy_(update_relations(self.relations_var, deleted, var_diff, var_valid, m))
        average_across_ranks(self.relations_mean, self.relations_var, self.pick_counts)

    def update_dataset_reps(self, feats: torch.Tensor, target: torch.Tensor) -> None:
        """Step 9: momentum update of the dataset-level class representations."""
        with _full_precision(feats.device):
            means, present = class_means(feats.float(), target, self.dataset_reps.shape[0], self.ignore_index)
            m = self.reps_momentum
            updated = m * means + (1.0 - m) * self.dataset_reps
            self.dataset_reps.copy_(torch.where(present.unsqueeze(1), updated, self.dataset_reps))
        average_across_ranks(self.dataset_reps)


class IDRHead(IDRCore, nn.Module):
    main_output = "stage2"

    # harness.measure: IDR's own parts, the stage-1 classifier (the class probabilities the relations are
    # gathered with) and the self-attention on the relation context; the framework's coarse context is not IDR
    context_modules = ("stage1", "refiner")

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        wiring: nn.Module,
        feats_channels: int = 512,
        refine_channels: int = 256,
        dropout: float = 0.1,
        relation_momentum: float = 0.1,
        reps_momentum: float = 0.1,
        ignore_index: int = 255,
        stage1_input: str = "context",
    ):
        super().__init__()
        if stage1_input not in STAGE1_INPUTS:
            raise ValueError(f"unknown stage1_input {stage1_input!r}; allowed: {', '.join(STAGE1_INPUTS)}")
        c, k = feats_channels, num_classes
        self.bottleneck = ConvBNReLU(in_channels[-1], c, 3)
        self.wiring = wiring
        # official force_stage1_use_oripr: stage 1 reads F even when there is a coarse context
        self.stage1_reads_feats = stage1_input == "feats"
        self.stage1 = PixelClassifier(c if self.stage1_reads_feats else wiring.stage1_channels, c, k, dropout)
        self.refiner = SelfAttentionBlock(6 * c, 6 * c, refine_channels, c)
        self.stage2 = PixelClassifier(wiring.stage2_channels, c, k, dropout)
        self.relation_momentum = relation_momentum
        self.reps_momentum = reps_momentum
        self.ignore_index = ignore_index
        self.register_idr_buffers(k, c)

    def forward(self, pyramid: list[torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feats = self.bottleneck(pyramid[-1])
        coarse = self.wiring.coarse_context(feats, pyramid)
        refine_at = getattr(self.wiring, "refine_at", "after")
        if refine_at == "before":
            coarse = self.wiring.refine(coarse)
        stage1 = self.stage1(feats if coarse is None or self.stage1_reads_feats else coarse)
        if stage1.shape[2:] != feats.shape[2:]:
            stage1 = F.interpolate(stage1, size=feats.shape[2:], mode="bilinear", align_corners=False)
        if refine_at == "after":
            coarse = self.wiring.refine(coarse)
        feats_plus, reps, present = self.enhance(feats, stage1)
        feats_projections = self.feats_projections(feats)
        id_context = self.id_context(feats_plus, reps, present, stage1, feats_projections)
        extra = self.wiring.stage2_context(coarse, pyramid)
        anchor = stage2_anchor(self.stage2, feats, id_context, extra)
        outputs = {"stage1": stage1, "stage2": anchor.logits}
        if self.training and target is not None:
            with torch.no_grad():
                pending = self.update_relations_by_deletion(
                    feats_plus, reps, present, stage1, anchor, feats_projections
                )
                self.update_dataset_reps(feats, target)
            if pending is not None:
                outputs[DELETION_OUTPUT] = pending
        return outputs

    def update_relations_by_deletion(
        self, feats_plus, reps, present, stage1, anchor: Stage2Anchor, feats_projections: list[torch.Tensor]
    ) -> PendingDeletion:
        """Step 8: delete one class per image and re-run steps 4-7; the caller records the effect.

        Everything before step 4 is the anchor's (F, F+, the grouping, the refiner's convolutions
        of F); stage 2 reuses the anchor's first convolution and dropout masks (:func:`deleted_stage2`).
        """
        deleted = pick_deleted_classes(present, self.pick_counts)
        present_d, reps_d = exclude_classes(present, reps, deleted)
        id_context = self.id_context(feats_plus, reps_d, present_d, stage1, feats_projections)
        return PendingDeletion(deleted_stage2(self.stage2, anchor, id_context), deleted)


@dataclass
class Stage2Anchor:
    """The anchor's stage-2 pass, kept for the deleted pass: its input [F, Z, extra] (Z at channels
    `context`), the output of its first (linear) convolution, its Dropout2d mask (None when
    dropout is off) and its logits."""

    input: torch.Tensor
    context: slice
    pre_activation: torch.Tensor
    dropout_mask: torch.Tensor | None
    logits: torch.Tensor


def feature_dropout_mask(dropout: nn.Dropout2d, hidden: torch.Tensor) -> torch.Tensor | None:
    """The [B,C,1,1] mask (0 or 1/(1-p)) `dropout` would multiply `hidden` by; None when it is a no-op.

    Drawn as `F.dropout2d` draws it (bernoulli_ then div_ on a new [B,C,1,1] tensor), so the
    generator advances and the result is the same, bit for bit.
    """
    p = dropout.p
    if not dropout.training or p == 0.0:
        return None
    if p == 1.0:
        return hidden.new_zeros(hidden.shape[0], hidden.shape[1], 1, 1)
    return hidden.new_empty(hidden.shape[0], hidden.shape[1], 1, 1).bernoulli_(1.0 - p).div_(1.0 - p)


def _masked(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return hidden if mask is None else hidden * mask


def stage2_anchor(
    decoder: PixelClassifier, feats: torch.Tensor, id_context: torch.Tensor, extra: torch.Tensor | None
) -> Stage2Anchor:
    """`decoder(stage2_input(...))` (conv-BN-ReLU, Dropout2d, conv), keeping what the deleted pass reuses."""
    stage2_in = stage2_input(feats, id_context, extra)
    conv, norm, relu = decoder[0]
    pre_activation = conv(stage2_in)
    hidden = relu(norm(pre_activation))
    mask = feature_dropout_mask(decoder[1], hidden)
    context = slice(feats.shape[1], feats.shape[1] + id_context.shape[1])
    return Stage2Anchor(stage2_in, context, pre_activation, mask, decoder[2](_masked(hidden, mask)))


def deleted_stage2(decoder: PixelClassifier, anchor: Stage2Anchor, id_context: torch.Tensor) -> torch.Tensor:
    """Stage 2 on [F, Z', extra], where only Z' (the deleted pass's IDR context) differs from the anchor.

    The first convolution is linear (no bias), so its output is the anchor's plus W_Z (Z' - Z)
    with W_Z its input-channel slice of Z: the F and extra parts are not convolved again. Its
    BatchNorm sees the deleted batch (batch statistics and a running-statistics update, as a
    second call of the decoder would), and the anchor's Dropout2d mask is reused (the official
    code reseeds the generator so that its two passes draw the same mask).
    """
    conv, norm, relu = decoder[0]
    anchor_context = anchor.input[:, anchor.context]
    if id_context.shape[2:] != anchor_context.shape[2:]:
        id_context = F.interpolate(id_context, size=anchor_context.shape[2:], mode="bilinear", align_corners=False)
    delta = F.conv2d(id_context - anchor_context, conv.weight[:, anchor.context])
    hidden = relu(norm(anchor.pre_activation + delta))
    return decoder[2](_masked(hidden, anchor.dropout_mask))


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
