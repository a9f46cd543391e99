"""The IDR head as a module: buffers, deletion diagnostics, dropout masks, DDP averaging."""
from __future__ import annotations

import copy
import dataclasses
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import models.plugins.idr_head as idr_head
from harness.config import ModelConfig
from models import build_segmentor, idr
from models.plugins.idr_head import pick_deleted_classes

K = 6
BUFFERS = ("relations_mean", "relations_var", "pick_counts", "dataset_reps")


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(backbone="resnet18", feats_channels=16, head_channels=16, aux_channels=8, refine_channels=8)
    return ModelConfig(**{**base, **kw})


def batch(seed: int = 0, b: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, size, size, generator=g)
    target = torch.randint(0, K, (b, size, size), generator=g)
    target[:, :3] = 255
    return images, target


def train_step(model, images, target):
    model.train()
    losses = model(images, target)
    sum(losses.values()).backward()
    return losses


def test_buffers_live_in_state_dict_and_survive_a_round_trip():
    torch.manual_seed(0)
    model = build_segmentor("fcn", True, K, tiny_cfg())
    train_step(model, *batch())
    state = model.state_dict()
    for name in BUFFERS:
        assert f"head.{name}" in state
    assert not torch.equal(state["head.relations_mean"], torch.eye(K))
    assert state["head.pick_counts"].sum() > K * 1e-6
    assert state["head.dataset_reps"].abs().sum() > 0
    fresh = build_segmentor("fcn", True, K, tiny_cfg())
    fresh.load_state_dict(state)
    for name in BUFFERS:
        assert torch.equal(getattr(fresh.head, name), getattr(model.head, name))


def test_eval_forward_leaves_buffers_alone():
    torch.manual_seed(0)
    model = build_segmentor("fcn", True, K, tiny_cfg()).eval()
    before = {n: getattr(model.head, n).clone() for n in BUFFERS}
    with torch.no_grad():
        logits = model(batch()[0])
    assert logits.shape == (2, K, 32, 32)
    for name in BUFFERS:
        assert torch.equal(before[name], getattr(model.head, name))


def _only_decayed(relations: torch.Tensor) -> torch.Tensor:
    allowed = torch.tensor([0.0, 1.0, 0.9, 0.81])
    return torch.isclose(relations.unsqueeze(-1), allowed).any(-1)


def _relations_after_null_deletion(monkeypatch, share_masks: bool) -> torch.Tensor:
    """Deletion that deletes nothing: the diagnostics see only dropout-mask differences."""
    monkeypatch.setattr(idr_head, "exclude_classes", lambda present, reps, exclude: (present, reps))
    if not share_masks:
        reused = idr_head.deleted_stage2

        def fresh_masks(decoder, anchor, id_context):
            mask = idr_head.feature_dropout_mask(decoder[1], anchor.pre_activation)
            return reused(decoder, dataclasses.replace(anchor, dropout_mask=mask), id_context)

        monkeypatch.setattr(idr_head, "deleted_stage2", fresh_masks)
    torch.manual_seed(0)
    model = build_segmentor("fcn", True, K, tiny_cfg(dropout=0.5))
    train_step(model, *batch())
    return model.head.relations_mean.clone()


def test_anchor_and_deleted_passes_share_dropout_masks(monkeypatch):
    relations = _relations_after_null_deletion(monkeypatch, share_masks=True)
    # zero effect everywhere: each update only decays an entry (1 -> 0.9 -> 0.81), 0 stays 0
    assert torch.all(_only_decayed(relations))
    assert torch.isclose(relations, torch.tensor(0.9)).any() or torch.isclose(relations, torch.tensor(0.81)).any()


def test_with_fresh_masks_the_deleted_pass_differs(monkeypatch):
    relations = _relations_after_null_deletion(monkeypatch, share_masks=False)
    assert not torch.all(_only_decayed(relations))


def test_picks_are_present_classes_with_inverse_frequency():
    torch.manual_seed(0)
    present = torch.tensor([[True, True, False, False]])
    hits = torch.zeros(4)
    for _ in range(4000):
        counts = torch.tensor([1.0, 3.0, 1e-6, 1e-6])
        hits[pick_deleted_classes(present, counts)] += 1
    assert hits[2] == 0 and hits[3] == 0
    assert abs(hits[0] / 4000 - 0.75) < 0.03


def test_pick_counts_increment_in_batch_order():
    present = torch.tensor([[False, True, False], [False, True, False]])
    counts = torch.full((3,), 1e-6)
    picks = pick_deleted_classes(present, counts)
    assert picks.tolist() == [1, 1]
    assert counts[1] == pytest.approx(2.0 + 1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_segmentor("fcn", True, K, tiny_cfg())
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    torch.manual_seed(100 + rank)  # different picks and dropout per rank
    ddp.train()
    losses = ddp(*batch(seed=rank))  # different data per rank
    sum(losses.values()).backward()
    # plain numpy arrays: a torch tensor would travel as a shared-memory handle that dies with this process
    out.put((rank, {n: getattr(model.head, n).detach().numpy().copy() for n in BUFFERS}))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_buffers_are_averaged_across_ddp_ranks():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {rank: {n: torch.from_numpy(a) for n, a in arrays.items()} for rank, arrays in (queue.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for name in BUFFERS:
        assert torch.allclose(results[0][name], results[1][name]), name
    # and they are not trivially equal: the ranks saw different data
    single = build_segmentor("fcn", True, K, tiny_cfg())
    torch.manual_seed(100)
    train_step(single, *batch(seed=0))
    assert not torch.allclose(single.head.dataset_reps, results[0]["dataset_reps"])


def _relations_as_before_the_reuse(model, before, anchor, deleted_logits, deleted, target):
    """Step 8 as it was computed before the anchor loss was reused: both cross-entropies here."""
    size = target.shape[-2:]
    anchor = F.interpolate(anchor.float(), size=size, mode="bilinear", align_corners=False)
    deleted_logits = F.interpolate(deleted_logits.float(), size=size, mode="bilinear", align_corners=False)
    valid = target != 255
    safe = torch.where(valid, target, torch.zeros_like(target))
    loss_a = F.cross_entropy(anchor, safe, reduction="none").double()
    loss_d = F.cross_entropy(deleted_logits, safe, reduction="none").double()
    count, mean_a, var_a = idr._per_class_stats(loss_a, target, valid, K)
    _, mean_d, var_d = idr._per_class_stats(loss_d, target, valid, K)
    mean_diff = torch.where(count > 0, mean_d - mean_a, torch.zeros_like(mean_a)).float()
    var_diff = torch.where(count > 1, var_d - var_a, torch.zeros_like(var_a)).float()
    m = model.head.relation_momentum
    return (
        idr.update_relations(before["relations_mean"], deleted, mean_diff, count > 0, m),
        idr.update_relations(before["relations_var"], deleted, var_diff, count > 1, m),
    )


def test_reusing_the_stage2_loss_is_bitwise_identical_in_float32(monkeypatch):
    picks = []
    original_pick = idr_head.pick_deleted_classes
    monkeypatch.setattr(idr_head, "pick_deleted_classes", lambda *a: picks.append(original_pick(*a)) or picks[-1])
    torch.manual_seed(0)
    model = build_segmentor("fcn", True, K, tiny_cfg())
    stage2_outputs = []

    def keep_stage2(module, args, out):
        stage2_outputs.extend([out["stage2"].detach(), out[idr_head.DELETION_OUTPUT].deleted_logits])

    model.head.register_forward_hook(keep_stage2)
    before = {n: getattr(model.head, n).clone() for n in BUFFERS}
    images, target = batch(size=40)
    losses = train_step(model, images, target)
    anchor, deleted_logits = stage2_outputs
    up = F.interpolate(anchor, size=target.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.equal(losses["stage2"], model.loss_weights["stage2"] * F.cross_entropy(up, target, ignore_index=255))
    mean, var = _relations_as_before_the_reuse(model, before, anchor, deleted_logits, picks[0], target)
    assert not torch.equal(mean, before["relations_mean"])
    assert torch.equal(model.head.relations_mean, mean)
    assert torch.equal(model.head.relations_var, var)


def test_relation_modes_map_the_relation_context_as_documented():
    g = torch.Generator().manual_seed(3)
    reps = torch.randn(2, K, 5, generator=g)
    present = torch.rand(2, K, generator=g) > 0.3
    relations = torch.randn(K, K, generator=g)
    learned = idr.relation_context(reps, *reversed(idr.relations_for_mode(relations, present, "deletion")), True)
    assert torch.equal(learned, idr.relation_context(reps, present, relations, True))
    uniform_r, uniform_p = idr.relations_for_mode(relations, present, "uniform")
    uniform = idr.relation_context(reps, uniform_p, uniform_r, True)
    mean_of_present = (reps * present.unsqueeze(-1)).sum(1) / present.sum(1, keepdim=True)
    expected = mean_of_present.unsqueeze(1).expand(-1, K, -1) * present.unsqueeze(-1)
    assert torch.allclose(uniform, expected, atol=1e-6)
    none_r, none_p = idr.relations_for_mode(relations, present, "none")
    assert torch.equal(idr.relation_context(reps, none_p, none_r, True), torch.zeros_like(reps))
    with pytest.raises(ValueError, match="unknown relation mode 'random'"):
        idr.relations_for_mode(relations, present, "random")


@pytest.mark.parametrize("mode", ["uniform", "none"])
def test_relation_controls_keep_the_parameters_and_change_the_prediction(mode):
    torch.manual_seed(0)
    learned = build_segmentor("fcn", True, K, tiny_cfg())
    control = build_segmentor("fcn", True, K, tiny_cfg(idr_relations=mode))
    control.load_state_dict(learned.state_dict())
    assert control.head.relation_mode == mode and learned.head.relation_mode == "deletion"
    assert sum(p.numel() for p in control.parameters()) == sum(p.numel() for p in learned.parameters())
    relations = torch.randn(K, K)
    for head in (learned.head, control.head):
        head.relations_mean.copy_(relations)
        head.eval()
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 16, 8, 8, generator=g)
    stage1 = torch.randn(2, K, 8, 8, generator=g)
    with torch.no_grad():
        feats_plus, reps, present = learned.head.enhance(feats, stage1)
        assert present.sum(1).min() > 1
        outputs = [head.id_context(feats_plus, reps, present, stage1) for head in (learned.head, control.head)]
    assert not torch.allclose(*outputs)


def _forward_as_before(head, pyramid, target):
    """The IDR head's training forward as it was before stage 2 was shared: the deleted pass calls
    the stage-2 decoder a second time on [F, Z', extra], after restoring the generator state the
    anchor's call started from (so that both draw the same dropout masks). Each pass convolves F
    for the refiner itself (the gradient reaches F by the same path as in the head)."""
    feats = head.bottleneck(pyramid[-1])
    coarse = head.wiring.coarse_context(feats, pyramid)
    if head.wiring.refine_at == "before":
        coarse = head.wiring.refine(coarse)
    stage1 = head.stage1(feats if coarse is None or head.stage1_reads_feats else coarse)
    if stage1.shape[2:] != feats.shape[2:]:
        stage1 = F.interpolate(stage1, size=feats.shape[2:], mode="bilinear", align_corners=False)
    if head.wiring.refine_at == "after":
        coarse = head.wiring.refine(coarse)
    feats_plus, reps, present = head.enhance(feats, stage1)
    id_context = head.id_context(feats_plus, reps, present, stage1, head.feats_projections(feats))
    extra = head.wiring.stage2_context(coarse, pyramid)
    rng_before_stage2 = torch.get_rng_state()
    stage2 = head.stage2(idr_head.stage2_input(feats, id_context, extra))
    with torch.no_grad():
        deleted = idr_head.pick_deleted_classes(present, head.pick_counts)
        present_d, reps_d = idr.exclude_classes(present, reps, deleted)
        id_context_d = head.id_context(feats_plus, reps_d, present_d, stage1, head.feats_projections(feats))
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(rng_before_stage2)
            stage2_deleted = head.stage2(idr_head.stage2_input(feats, id_context_d, extra))
        head.update_dataset_reps(feats, target)
    pending = idr_head.PendingDeletion(stage2_deleted, deleted)
    return {"stage1": stage1, "stage2": stage2, idr_head.DELETION_OUTPUT: pending}


@pytest.mark.parametrize("framework", ["fcn", "upernet"])
def test_shared_stage2_matches_the_two_pass_reference_in_float32(monkeypatch, framework):
    """The deleted pass from the anchor's first convolution and dropout masks == a second full
    stage-2 call (UPerNet: stage 2 at 1/4, Z resized), to 1e-6; everything else bit for bit."""
    torch.manual_seed(0)
    model = build_segmentor(framework, True, K, tiny_cfg(dropout=0.5))
    reference = copy.deepcopy(model)
    monkeypatch.setattr(reference.head, "forward", lambda pyramid, target=None: _forward_as_before(
        reference.head, pyramid, target))
    images, target = batch(size=48)
    outputs = {}
    for name, m in (("shared", model), ("reference", reference)):
        seen = []
        m.head.register_forward_hook(lambda module, args, out, seen=seen: seen.append(out))
        torch.manual_seed(1)
        losses = train_step(m, images, target)
        outputs[name] = (losses, seen[0], torch.rand(1))  # the generator state afterwards, too
    (losses, out, after), (losses_ref, out_ref, after_ref) = outputs["shared"], outputs["reference"]
    assert torch.equal(after, after_ref)
    assert torch.equal(out["stage2"], out_ref["stage2"])
    pending, pending_ref = out[idr_head.DELETION_OUTPUT], out_ref[idr_head.DELETION_OUTPUT]
    assert torch.equal(pending.deleted, pending_ref.deleted)
    assert (pending.deleted_logits - pending_ref.deleted_logits).abs().max() <= 1e-6
    for key in losses:
        assert torch.equal(losses[key], losses_ref[key]), key
    for (name, p), p_ref in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p.grad, p_ref.grad), name
    for (name, buf), buf_ref in zip(model.named_buffers(), reference.buffers()):
        assert torch.allclose(buf, buf_ref, rtol=0, atol=1e-6), name


def _id_context_from_the_joint_map(head, feats_plus, reps, present, stage1):
    """Steps 4-6 as the official code runs them: the 6C joint map built for every pixel, then the refiner."""
    ctx_mean = idr.scatter_to_pixels(idr.relation_context(reps, present, head.relations_mean, True), stage1)
    ctx_var = idr.scatter_to_pixels(idr.relation_context(reps, present, head.relations_var, False), stage1)
    joint = torch.cat([feats_plus, ctx_mean, ctx_var], dim=1)
    return head.refiner(joint, joint)


def test_id_context_per_class_projection_matches_the_joint_map_in_float64():
    """The refiner's first convolutions applied per class (idr.project_joint) == on the joint map:
    the context and the gradients reaching F and every refiner parameter, in a training step's BatchNorm mode."""
    torch.manual_seed(0)
    head = build_segmentor("fcn", True, K, tiny_cfg()).head.double().train()
    g = torch.Generator().manual_seed(5)
    head.dataset_reps.copy_(torch.randn(K, 16, generator=g, dtype=torch.float64))
    head.relations_mean.copy_(torch.randn(K, K, generator=g, dtype=torch.float64))
    head.relations_var.copy_(torch.randn(K, K, generator=g, dtype=torch.float64))
    feats = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    stage1 = torch.randn(2, K, 8, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    results = []
    for id_context in (head.id_context, lambda *args: _id_context_from_the_joint_map(head, *args)):
        x = feats.clone().requires_grad_()
        head.zero_grad()
        feats_plus, reps, present = head.enhance(x, stage1)
        out = id_context(feats_plus, reps, present, stage1)
        (out * weight).sum().backward()
        results.append((out.detach(), x.grad, [p.grad.clone() for p in head.refiner.parameters()]))
    (out, x_grad, grads), (out_ref, x_grad_ref, grads_ref) = results
    assert present.sum(1).min() > 1
    assert (out - out_ref).abs().max() <= 1e-10
    assert (x_grad - x_grad_ref).abs().max() <= 1e-10 * x_grad_ref.abs().max()
    for g_new, g_ref in zip(grads, grads_ref):
        assert (g_new - g_ref).abs().max() <= 1e-10 * max(1.0, g_ref.abs().max().item())
