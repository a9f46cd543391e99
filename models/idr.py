"""The IDR algorithm as pure tensor functions, one per step of the paper.

Each function is loop-free over classes and pixels (scatter/gather and batched matmuls);
`tests/test_idr_core.py` holds every one against a slow per-class reference. The module
that uses them inside a segmentation head is :mod:`models.plugins.idr_head`.

Notation: B images, C channels, K classes, (h, w) feature size, (H, W) label size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.losses import pixel_cross_entropy

NEGATIVE_RELATION_FILL = -1e16


def group_by_class(
    feats: torch.Tensor, logits: torch.Tensor, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic-level representations: softmax-weighted feature sums over argmax regions.

    Returns reps [B,K,C] and present [B,K] (class is the argmax of some pixel and not excluded).
    """
    b, c, h, w = feats.shape
    k = logits.shape[1]
    flat_logits = logits.flatten(2)  # [B,K,N]
    winner = flat_logits.argmax(1)  # [B,N]
    own_logit = flat_logits.gather(1, winner.unsqueeze(1)).squeeze(1)  # [B,N]
    region_max = torch.full((b, k), float("-inf"), dtype=own_logit.dtype, device=feats.device)
    region_max = region_max.scatter_reduce(1, winner, own_logit.detach(), reduce="amax", include_self=True)
    exp = torch.exp(own_logit - region_max.gather(1, winner))
    denom = torch.zeros(b, k, dtype=exp.dtype, device=feats.device).scatter_add(1, winner, exp)
    weight = exp / denom.gather(1, winner)  # softmax within each argmax region
    weighted = feats.flatten(2).transpose(1, 2) * weight.unsqueeze(-1)  # [B,N,C]
    reps = torch.zeros(b, k, c, dtype=feats.dtype, device=feats.device)
    reps = reps.scatter_add(1, winner.unsqueeze(-1).expand(-1, -1, c), weighted)
    present = torch.zeros(b, k, dtype=torch.bool, device=feats.device)
    present[torch.arange(b, device=feats.device).unsqueeze(1), winner] = True
    if exclude is not None:
        present, reps = exclude_classes(present, reps, exclude)
    return reps, present


def exclude_classes(
    present: torch.Tensor, reps: torch.Tensor, exclude: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Delete class exclude[b] from image b: not present and zero representation.

    A class's representation does not depend on the others, so deleting after grouping
    equals grouping without it (the official code re-groups; this reuses the result).
    """
    keep = ~F.one_hot(exclude, present.shape[1]).bool()
    return present & keep, reps * keep.unsqueeze(-1).to(reps.dtype)


def relation_context(
    reps: torch.Tensor, present: torch.Tensor, relations: torch.Tensor, drop_negative: bool = True
) -> torch.Tensor:
    """ctx[b,i] = sum_j softmax_j(R[i,j]) reps[b,j] over the present classes j of image b."""
    # at least float32: the -1e16 fill overflows float16 (fp16 autocast)
    scores = relations.to(torch.promote_types(reps.dtype, torch.float32)).unsqueeze(0).expand(reps.shape[0], -1, -1)
    if drop_negative:
        scores = scores.masked_fill(scores <= 0, NEGATIVE_RELATION_FILL)
    scores = scores.masked_fill(~present.unsqueeze(1), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0).to(reps.dtype)  # images with no present class at all
    ctx = torch.bmm(weights, reps)
    return ctx * present.unsqueeze(-1).to(ctx.dtype)


RELATION_MODES = ("deletion", "uniform", "none")


def relations_for_mode(
    relations: torch.Tensor, present: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (relations, present) that :func:`relation_context` reads under a control mode.

    deletion: unchanged (the paper's method); uniform: every present class weighs the same
    (a constant positive matrix); none: no class is present, so the relation context is zero.
    """
    if mode == "deletion":
        return relations, present
    if mode == "uniform":
        return torch.ones_like(relations), present
    if mode == "none":
        return relations, torch.zeros_like(present)
    raise ValueError(f"unknown relation mode {mode!r}; allowed: {', '.join(RELATION_MODES)}")


def scatter_to_pixels(ctx: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Each pixel takes the context of its argmax class: [B,K,C] -> [B,C,H,W]."""
    b, k, c = ctx.shape
    h, w = logits.shape[2:]
    winner = logits.argmax(1).flatten(1)  # [B,N]
    pixels = ctx.gather(1, winner.unsqueeze(-1).expand(-1, -1, c))  # [B,N,C]
    return pixels.transpose(1, 2).reshape(b, c, h, w)


def project_joint(
    pixel_projection: torch.Tensor, class_feats: torch.Tensor, class_weight: torch.Tensor, logits: torch.Tensor
) -> torch.Tensor:
    """A bias-free 1x1 conv W = [W_P, W_D] of the joint map [P, D[argmax]]: [B,O,h,w].

    The joint map of step 6 is per-pixel features P (F) beside vectors each pixel takes from its
    argmax class (the dataset representation and the two relation contexts). The conv is linear,
    so W_D is applied to the K class vectors and the result scattered to the pixels, instead of
    W_D to every pixel; `pixel_projection` is W_P P (shared by the anchor and deleted passes).
    class_feats [B,K,D], class_weight W_D [O,D].
    """
    return pixel_projection + scatter_to_pixels(class_feats @ class_weight.t(), logits)


def _per_class_stats(
    values: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per (image, class) pixel count, mean and population variance (two-pass)."""
    b = values.shape[0]
    cls = torch.where(valid, target, torch.zeros_like(target)).flatten(1)
    vals = torch.where(valid, values, torch.zeros_like(values)).flatten(1)
    ones = valid.flatten(1).to(values.dtype)
    count = torch.zeros(b, k, dtype=values.dtype, device=values.device).scatter_add(1, cls, ones)
    total = torch.zeros_like(count).scatter_add(1, cls, vals)
    mean = total / count.clamp(min=1)
    centred = (vals - mean.gather(1, cls)) * ones
    var = torch.zeros_like(count).scatter_add(1, cls, centred * centred) / count.clamp(min=1)
    return count, mean, var


def deletion_effect(
    loss_anchor: torch.Tensor, logits_deleted: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """How much deleting a class raised the loss of each ground-truth class (mean and variance).

    `loss_anchor` is the anchor's per-pixel cross-entropy [B,H,W] at label size, which the
    training loss has already computed (:func:`models.losses.cross_entropy_and_pixels`); only
    the deleted prediction's is computed here.
    """
    k = logits_deleted.shape[1]
    valid = target != ignore_index
    loss_deleted = pixel_cross_entropy(logits_deleted, target, ignore_index)
    # float64 sums: a float32 running sum over a large class drifts by ~1e-5
    count, mean_a, var_a = _per_class_stats(loss_anchor.double(), target, valid, k)
    _, mean_d, var_d = _per_class_stats(loss_deleted.double(), target, valid, k)
    mean_valid = count > 0
    var_valid = count > 1
    mean_diff = torch.where(mean_valid, mean_d - mean_a, torch.zeros_like(mean_a))
    var_diff = torch.where(var_valid, var_d - var_a, torch.zeros_like(var_a))
    return mean_diff.to(loss_anchor.dtype), var_diff.to(loss_anchor.dtype), mean_valid, var_valid


def update_relations(
    relations: torch.Tensor, deleted: torch.Tensor, effect: torch.Tensor, valid: torch.Tensor, momentum: float
) -> torch.Tensor:
    """Successive EMA steps R[d_b, c] <- m*effect[b,c] + (1-m)*R[d_b, c] in batch order b.

    Unrolled in closed form: an update is later decayed by (1-m) once per later valid update
    of the same entry, and each entry decays by (1-m)^(number of its valid updates).
    """
    b = deleted.shape[0]
    dtype = relations.dtype
    validf = valid.to(dtype)
    order = torch.arange(b, device=deleted.device)
    later_same_row = (deleted.unsqueeze(1) == deleted.unsqueeze(0)) & (order.unsqueeze(0) > order.unsqueeze(1))
    later_updates = later_same_row.to(dtype) @ validf  # [B,K]: later valid updates of the same entry
    weight = momentum * (1.0 - momentum) ** later_updates * validf
    contributions = torch.zeros_like(relations).index_add(0, deleted, weight * effect.to(dtype))
    n_updates = torch.zeros_like(relations).index_add(0, deleted, validf)
    return relations * (1.0 - momentum) ** n_updates + contributions


def _bilinear_taps(out_size: int, in_size: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The two source indices and weights of each output position of a 1-D bilinear resize.

    Read off F.interpolate itself (resizing an identity), so it matches PyTorch exactly.
    """
    eye = torch.eye(in_size, device=device, dtype=dtype).unsqueeze(0).unsqueeze(0)  # [1,1,in,in]
    matrix = F.interpolate(eye, size=(out_size, in_size), mode="bilinear", align_corners=False)[0, 0]
    k = min(2, in_size)
    weights, index = matrix.topk(k, dim=1)  # [out,k]
    return index, weights


def class_means(
    feats: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean over the batch of feats bilinearly upsampled to the label size.

    Upsampling is linear, so the sum over a class's pixels of the upsampled features equals
    sum_ij A[k,i,j] feats[:, :, i, j] with A = Wy^T 1[target==k] Wx: A is built by scattering
    each label pixel into its (at most 2x2) source taps, on the compact set of classes present.
    """
    b, c, h, w = feats.shape
    H, W = target.shape[1:]
    dev, dtype = feats.device, feats.dtype
    valid = target != ignore_index
    classes, compact = torch.unique(torch.where(valid, target, torch.zeros_like(target)), return_inverse=True)
    counts = torch.zeros(num_classes, dtype=dtype, device=dev)
    counts.index_add_(0, target[valid], torch.ones((), dtype=dtype, device=dev).expand(int(valid.sum())))
    n = classes.numel()
    y_idx, y_w = _bilinear_taps(H, h, dev, dtype)  # [H,ty]
    x_idx, x_w = _bilinear_taps(W, w, dev, dtype)  # [W,tx]
    # x-step: T[b, k, y, j] = sum_x 1[target[b,y,x]==k] Wx[x, j]
    base = (torch.arange(b, device=dev).view(b, 1, 1) * n + compact) * H + torch.arange(H, device=dev).view(1, H, 1)
    row_valid = valid.to(dtype)
    taps_x = torch.zeros(b * n * H * w, dtype=dtype, device=dev)
    for t in range(x_idx.shape[1]):  # the (at most two) taps of the bilinear kernel
        index = (base * w + x_idx[:, t].view(1, 1, W)).flatten()
        taps_x.index_add_(0, index, (row_valid * x_w[:, t].view(1, 1, W)).flatten())
    taps_x = taps_x.view(b, n, H, w)
    # y-step: A[b, k, i, j] = sum_y Wy[y, i] T[b, k, y, j]
    area = torch.zeros(b, n, h, w, dtype=dtype, device=dev)
    for t in range(y_idx.shape[1]):
        area.index_add_(2, y_idx[:, t], taps_x * y_w[:, t].view(1, 1, H, 1))
    sums = torch.bmm(area.flatten(2), feats.flatten(2).transpose(1, 2)).sum(0)  # [n,C]
    means = torch.zeros(num_classes, c, dtype=dtype, device=dev)
    means[classes] = sums
    present = counts > 0
    means = means / counts.clamp(min=1).unsqueeze(1)
    return means * present.unsqueeze(1).to(dtype), present
