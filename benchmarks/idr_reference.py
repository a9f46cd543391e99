"""Slow, loop-based reference implementations of the IDR functional core.

These mirror the functions of ``models/idr.py`` one class / one image at a
time, written straight from the specification (paper digest, steps 3-5 and
8-9), so that they are easy to check by eye.  They are the single copy of the
reference code: ``tests/test_idr_core.py`` holds the vectorised functions
against them and ``benchmarks/bench_idr_core.py`` times both.

Every function is dtype-generic (the tests call them in float64) and the
grouping / relation / scatter references are differentiable with respect to
their floating-point inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "ref_group_by_class",
    "ref_relation_context",
    "ref_scatter_to_pixels",
    "ref_deletion_effect",
    "ref_update_relations",
    "ref_class_means",
    "ref_project_joint",
]

NEG_FILL = -1e16


def ref_group_by_class(feats, logits, exclude=None):
    """reps[b, k] = sum_p softmax_p(logits[b, k, p]) * feats[b, :, p] over the
    pixels p whose argmax is k; ``exclude[b]`` removes one class of image b."""
    B, C, H, W = feats.shape
    K = logits.shape[1]
    reps_rows, present = [], torch.zeros(B, K, dtype=torch.bool)
    for b in range(B):
        am = logits[b].argmax(dim=0)  # [H, W]
        rows = []
        for k in range(K):
            mask = am == k
            excluded = exclude is not None and int(exclude[b]) == k
            if excluded or not bool(mask.any()):
                rows.append(feats.new_zeros(C))
                continue
            f = feats[b][:, mask]  # [C, n]
            w = torch.softmax(logits[b, k][mask], dim=0)  # [n]
            rows.append((f * w.unsqueeze(0)).sum(dim=1))
            present[b, k] = True
        reps_rows.append(torch.stack(rows))
    return torch.stack(reps_rows), present.to(feats.device)


def ref_relation_context(reps, present, relations, drop_negative=True):
    """ctx[b, i] = sum_j softmax_j(R[i, j]) * reps[b, j] with i, j running over
    the classes present in image b; with ``drop_negative`` entries <= 0 become
    -1e16 before the softmax.  Absent classes get zero context."""
    B, K, C = reps.shape
    rel = relations.to(reps.dtype)
    out_rows = []
    for b in range(B):
        idx = [k for k in range(K) if bool(present[b, k])]
        rows = []
        for i in range(K):
            if i not in idx:
                rows.append(reps.new_zeros(C))
                continue
            scores = torch.stack([rel[i, j] for j in idx])
            if drop_negative:
                scores = torch.where(scores <= 0, torch.full_like(scores, NEG_FILL), scores)
            w = torch.softmax(scores, dim=0)
            acc = reps.new_zeros(C)
            for n, j in enumerate(idx):
                acc = acc + w[n] * reps[b, j]
            rows.append(acc)
        out_rows.append(torch.stack(rows))
    return torch.stack(out_rows)


def ref_scatter_to_pixels(ctx, logits):
    """out[b, :, p] = ctx[b, argmax_k logits[b, k, p]]."""
    B, K, C = ctx.shape
    H, W = logits.shape[2:]
    outs = []
    for b in range(B):
        am = logits[b].argmax(dim=0)
        out = ctx.new_zeros(C, H, W)
        for k in range(K):
            mask = am == k
            if not bool(mask.any()):
                continue
            out = torch.where(mask.unsqueeze(0), ctx[b, k].view(C, 1, 1), out)
        outs.append(out)
    return torch.stack(outs)


def ref_deletion_effect(logits_anchor, logits_deleted, target, ignore_index):
    """Per image b and ground-truth class c: mean (and population variance) of
    the pixel cross-entropy over c's pixels under the deleted logits minus the
    same statistic under the anchor logits."""
    B, K = logits_anchor.shape[:2]
    dtype, dev = logits_anchor.dtype, logits_anchor.device
    mean_diff = torch.zeros(B, K, dtype=dtype, device=dev)
    var_diff = torch.zeros(B, K, dtype=dtype, device=dev)
    mean_valid = torch.zeros(B, K, dtype=torch.bool, device=dev)
    var_valid = torch.zeros(B, K, dtype=torch.bool, device=dev)
    for b in range(B):
        t = target[b]
        for c in range(K):
            mask = (t == c) & (t != ignore_index)
            n = int(mask.sum())
            if n == 0:
                continue
            tgt = torch.full((n,), c, dtype=torch.long, device=dev)
            ce_del = F.cross_entropy(logits_deleted[b][:, mask].t(), tgt, reduction="none")
            ce_anc = F.cross_entropy(logits_anchor[b][:, mask].t(), tgt, reduction="none")
            mean_diff[b, c] = ce_del.mean() - ce_anc.mean()
            mean_valid[b, c] = True
            if n > 1:
                var_diff[b, c] = ce_del.var(unbiased=False) - ce_anc.var(unbiased=False)
                var_valid[b, c] = True
    return mean_diff, var_diff, mean_valid, var_valid


def ref_update_relations(relations, deleted, effect, valid, momentum):
    """EMA steps in batch order: R[deleted[b], c] <- m * effect[b, c] + (1 - m) * R[deleted[b], c]."""
    R = relations.clone()
    B, K = effect.shape
    for b in range(B):
        a = int(deleted[b])
        for c in range(K):
            if bool(valid[b, c]):
                R[a, c] = momentum * effect[b, c] + (1 - momentum) * R[a, c]
    return R


def ref_class_means(feats, target, num_classes, ignore_index):
    """Mean over every class's pixels (whole batch) of the features bilinearly
    upsampled to the label size (align_corners=False)."""
    B, C = feats.shape[:2]
    H, W = target.shape[1:]
    up = F.interpolate(feats, size=(H, W), mode="bilinear", align_corners=False)
    up = up.permute(0, 2, 3, 1)  # [B, H, W, C]
    means = feats.new_zeros(num_classes, C)
    present = torch.zeros(num_classes, dtype=torch.bool, device=feats.device)
    for k in range(num_classes):
        mask = (target == k) & (target != ignore_index)
        if not bool(mask.any()):
            continue
        means[k] = up[mask].mean(dim=0)
        present[k] = True
    return means, present


def ref_project_joint(pixel_feats, pixel_weight, class_feats, class_weight, logits):
    """The 1x1 conv of the joint map as the official code computes it: [P, class_feats[argmax]]
    materialised for every pixel, then one convolution with [W_P, W_D]."""
    joint = torch.cat([pixel_feats, ref_scatter_to_pixels(class_feats, logits)], dim=1)
    weight = torch.cat([pixel_weight, class_weight], dim=1)
    return F.conv2d(joint, weight[:, :, None, None])
