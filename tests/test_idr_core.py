"""Vectorised IDR core (models/idr.py) against slow per-class loop references.

The references live in ``benchmarks/idr_reference.py`` (one copy, shared with
``benchmarks/bench_idr_core.py``).  Inputs are float32, as the model feeds the
core; the references run in float64 on the same values, and every output is
required to agree within 1e-5 (max abs difference).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load_reference():
    name = "idr_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "idr_reference.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ref = _load_reference()
from models import idr  # noqa: E402  (fail loudly, never skip, if the core does not import)
from models.losses import pixel_cross_entropy

TOL = 1e-5
IGNORE = 255


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The tensors here are small: intra-op threading only adds synchronisation
    overhead (badly so on a loaded 2-core machine).  Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _gen(seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    return g


def _maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _assert_close(actual, expected, what, tol=TOL):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    d = _maxdiff(actual, expected)
    assert d <= tol, f"{what}: max abs diff {d:.3e} > {tol:.0e}"


def _assert_mask_equal(actual, expected, what):
    assert actual.dtype == torch.bool, f"{what}: dtype {actual.dtype} is not bool"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.equal(actual, expected.to(actual.device)), f"{what}: masks differ"


def make_label_map(B, K, H, W, n_present, n_single, g):
    """Per image: n_present random classes spread over the pixels plus n_single
    further classes that own exactly one pixel each."""
    labels = torch.empty(B, H, W, dtype=torch.long)
    for b in range(B):
        perm = torch.randperm(K, generator=g)
        classes = perm[:n_present]
        lab = classes[torch.randint(n_present, (H * W,), generator=g)]
        if n_single:
            extra = perm[n_present:n_present + n_single]
            pix = torch.randperm(H * W, generator=g)[: len(extra)]
            lab[pix] = extra
        labels[b] = lab.view(H, W)
    return labels


def make_logits(B, K, H, W, n_present, n_single, g, scale=2.0):
    """Random logits whose argmax is a chosen label map (so only a subset of the
    K classes wins anywhere; n_single of them win exactly one pixel)."""
    labels = make_label_map(B, K, H, W, n_present, n_single, g)
    logits = torch.randn(B, K, H, W, generator=g) * scale
    top = logits.max(dim=1).values + 0.1 + 2.0 * torch.rand(B, H, W, generator=g)
    logits.scatter_(1, labels.unsqueeze(1), top.unsqueeze(1))
    assert torch.equal(logits.argmax(1), labels)
    return logits, labels


def make_target(B, K, H, W, n_present, n_single, n_double, ignore_frac, g):
    """Ground truth with n_present classes, n_single one-pixel classes,
    n_double two-pixel classes and a fraction of ignore pixels."""
    t = torch.empty(B, H, W, dtype=torch.long)
    for b in range(B):
        perm = torch.randperm(K, generator=g)
        classes = perm[:n_present]
        flat = classes[torch.randint(n_present, (H * W,), generator=g)]
        pix = torch.randperm(H * W, generator=g)
        n_ign = int(round(ignore_frac * H * W))
        flat[pix[:n_ign]] = IGNORE
        pos = n_ign
        extra = perm[n_present:]
        e = 0
        for _ in range(n_single):
            if pos >= H * W or e >= len(extra):
                break
            flat[pix[pos]] = extra[e]
            pos, e = pos + 1, e + 1
        for _ in range(n_double):
            if pos + 1 >= H * W or e >= len(extra):
                break
            flat[pix[pos:pos + 2]] = extra[e]
            pos, e = pos + 2, e + 1
        t[b] = flat.view(H, W)
    return t


def make_relations(K, g, kind="mixed"):
    R = torch.randn(K, K, generator=g)
    if kind == "identity":
        return torch.eye(K)
    if kind == "large":
        return R * 40.0
    # exact zeros (must count as "non-positive") and a few all-negative rows
    R[torch.rand(K, K, generator=g) < 0.1] = 0.0
    neg_rows = torch.randperm(K, generator=g)[: max(1, K // 5)]
    R[neg_rows] = -R[neg_rows].abs() - 0.01
    R[neg_rows[0]] = 0.0  # a row of exact zeros
    return R


# ----------------------------------------------------------------------------
# group_by_class
# ----------------------------------------------------------------------------
# (B, K, C, H, W, n_present, n_single, exclude_mode)
GROUP_CASES = [
    pytest.param(2, 5, 3, 6, 7, 3, 1, None, id="K5-small"),
    pytest.param(2, 19, 8, 16, 16, 6, 2, None, id="K19"),
    pytest.param(2, 19, 8, 16, 16, 6, 2, "present", id="K19-exclude"),
    pytest.param(3, 150, 16, 32, 32, 30, 3, "present", id="K150-30present-exclude"),
    pytest.param(2, 150, 8, 20, 24, 28, 2, "absent", id="K150-exclude-absent-class"),
    pytest.param(2, 12, 4, 9, 9, 4, 3, "single", id="exclude-single-pixel-class"),
    pytest.param(2, 7, 4, 5, 5, 1, 0, "present", id="one-class-excluded"),
    pytest.param(3, 10, 5, 1, 1, 1, 0, None, id="1x1-image"),
]


def _make_exclude(mode, labels, K, n_single, g):
    if mode is None:
        return None
    B = labels.shape[0]
    ex = torch.empty(B, dtype=torch.long)
    for b in range(B):
        counts = torch.bincount(labels[b].flatten(), minlength=K)
        if mode == "present":
            cands = torch.nonzero(counts > 0).flatten()
        elif mode == "single":
            cands = torch.nonzero(counts == 1).flatten()
        else:  # absent
            cands = torch.nonzero(counts == 0).flatten()
        assert len(cands) > 0
        ex[b] = cands[torch.randint(len(cands), (1,), generator=g)].item()
    return ex


@pytest.mark.parametrize("B,K,C,H,W,n_present,n_single,exclude_mode", GROUP_CASES)
def test_group_by_class(B, K, C, H, W, n_present, n_single, exclude_mode):
    g = _gen(1000 + K + H)
    logits, labels = make_logits(B, K, H, W, n_present, n_single, g)
    feats = torch.randn(B, C, H, W, generator=g)
    exclude = _make_exclude(exclude_mode, labels, K, n_single, g)
    if n_single:
        assert (torch.bincount(labels[0].flatten(), minlength=K) == 1).any()

    reps, present = idr.group_by_class(feats, logits, exclude)
    reps_r, present_r = ref.ref_group_by_class(feats.double(), logits.double(), exclude)

    _assert_mask_equal(present, present_r, "present")
    _assert_close(reps, reps_r, "reps")
    assert reps.dtype == feats.dtype
    assert (reps[~present] == 0).all(), "absent classes must have zero representation"
    if exclude is not None:
        for b in range(B):
            assert not present[b, exclude[b]]


def test_group_by_class_exclude_none_equals_no_exclude():
    g = _gen(7)
    logits, _ = make_logits(2, 19, 12, 12, 5, 1, g)
    feats = torch.randn(2, 6, 12, 12, generator=g)
    r1, p1 = idr.group_by_class(feats, logits)
    r2, p2 = idr.group_by_class(feats, logits, None)
    assert torch.equal(p1, p2) and torch.equal(r1, r2)


# ----------------------------------------------------------------------------
# relation_context
# ----------------------------------------------------------------------------
def _present_for_relation_case(B, K, n_present, g):
    present = torch.zeros(B, K, dtype=torch.bool)
    for b in range(B):
        present[b, torch.randperm(K, generator=g)[:n_present[b]]] = True
    return present


# (B, K, C, n_present per image, relation kind)
REL_CASES = [
    pytest.param(2, 6, 3, (3, 6), "mixed", id="K6"),
    pytest.param(3, 19, 8, (5, 1, 0), "mixed", id="K19-single-and-empty-image"),
    pytest.param(2, 19, 8, (7, 12), "identity", id="K19-identity"),
    pytest.param(2, 19, 8, (7, 12), "large", id="K19-large-values"),
    pytest.param(2, 150, 16, (30, 31), "mixed", id="K150-30present"),
]


@pytest.mark.parametrize("drop_negative", [True, False])
@pytest.mark.parametrize("B,K,C,n_present,kind", REL_CASES)
def test_relation_context(B, K, C, n_present, kind, drop_negative):
    g = _gen(2000 + K + sum(n_present))
    reps = torch.randn(B, K, C, generator=g)  # absent rows non-zero on purpose: they must not leak in
    present = _present_for_relation_case(B, K, n_present, g)
    R = make_relations(K, g, kind)

    ctx = idr.relation_context(reps, present, R, drop_negative=drop_negative)
    ctx_r = ref.ref_relation_context(reps.double(), present, R.double(), drop_negative=drop_negative)
    _assert_close(ctx, ctx_r, "ctx")
    assert (ctx[~present] == 0).all(), "absent classes must get zero context"


def test_relation_context_positive_only_on_absent_classes():
    """Rows whose only positive entries point at absent classes: with
    drop_negative the present classes must get uniform weights."""
    g = _gen(31)
    B, K, C = 2, 12, 5
    present = torch.zeros(B, K, dtype=torch.bool)
    present[0, [0, 3, 4, 9]] = True
    present[1, [1, 3, 7]] = True
    reps = torch.randn(B, K, C, generator=g) * present.unsqueeze(-1)
    R = -torch.rand(K, K, generator=g)  # all non-positive ...
    R[:, [2, 5, 6, 8, 10, 11]] = 1.0 + torch.rand(K, 6, generator=g)  # ... except on absent classes
    R[3, 4] = 0.0  # exact zero is dropped too
    R[9, 0] = 0.7  # one genuinely positive entry: row 9 of image 0 must pick class 0 only

    ctx = idr.relation_context(reps, present, R, drop_negative=True)
    ctx_r = ref.ref_relation_context(reps.double(), present, R.double(), drop_negative=True)
    _assert_close(ctx, ctx_r, "ctx")
    uniform0 = reps[0, [0, 3, 4, 9]].mean(0)
    _assert_close(ctx[0, 3], uniform0, "uniform row (image 0, class 3)")
    _assert_close(ctx[1, 7], reps[1, [1, 3, 7]].mean(0), "uniform row (image 1, class 7)")
    _assert_close(ctx[0, 9], reps[0, 0], "single positive entry")

    ctx_nd = idr.relation_context(reps, present, R, drop_negative=False)
    ctx_nd_r = ref.ref_relation_context(reps.double(), present, R.double(), drop_negative=False)
    _assert_close(ctx_nd, ctx_nd_r, "ctx (drop_negative=False)")


def test_relation_context_default_is_drop_negative():
    g = _gen(32)
    reps = torch.randn(2, 8, 4, generator=g)
    present = torch.rand(2, 8, generator=g) < 0.6
    present[:, 0] = True
    reps = reps * present.unsqueeze(-1)
    R = make_relations(8, g)
    assert torch.equal(idr.relation_context(reps, present, R), idr.relation_context(reps, present, R, drop_negative=True))


# ----------------------------------------------------------------------------
# scatter_to_pixels
# ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "B,K,C,H,W,n_present,n_single",
    [
        pytest.param(2, 5, 3, 6, 7, 3, 1, id="K5"),
        pytest.param(2, 19, 8, 17, 13, 6, 2, id="K19"),
        pytest.param(2, 150, 16, 32, 32, 30, 3, id="K150"),
        pytest.param(2, 4, 2, 1, 1, 1, 0, id="1x1"),
    ],
)
def test_scatter_to_pixels(B, K, C, H, W, n_present, n_single):
    g = _gen(3000 + K + H)
    logits, _ = make_logits(B, K, H, W, n_present, n_single, g)
    ctx = torch.randn(B, K, C, generator=g)
    out = idr.scatter_to_pixels(ctx, logits)
    out_r = ref.ref_scatter_to_pixels(ctx.double(), logits.double())
    _assert_close(out, out_r, "pixels")


# ----------------------------------------------------------------------------
# grouping -> relation -> scatter, end to end and gradients
# ----------------------------------------------------------------------------
def _pipeline(mod_group, mod_rel, mod_scatter, feats, logits, R, drop, exclude):
    reps, present = mod_group(feats, logits, exclude)
    ctx = mod_rel(reps, present, R, drop_negative=drop)
    return reps, mod_scatter(ctx, logits)


# (B, K, C, H, W, n_present, n_single, exclude?)
GRAD_CASES = [
    pytest.param(2, 7, 4, 8, 9, 4, 1, False, id="K7"),
    pytest.param(2, 19, 6, 12, 12, 6, 2, True, id="K19-exclude"),
    pytest.param(2, 150, 8, 16, 16, 30, 2, True, id="K150-exclude"),
]


@pytest.mark.parametrize("drop_negative", [True, False])
@pytest.mark.parametrize("B,K,C,H,W,n_present,n_single,use_exclude", GRAD_CASES)
def test_pipeline_values_and_gradients(B, K, C, H, W, n_present, n_single, use_exclude, drop_negative):
    g = _gen(4000 + K)
    logits, labels = make_logits(B, K, H, W, n_present, n_single, g)
    feats = torch.randn(B, C, H, W, generator=g)
    R = make_relations(K, g)
    exclude = _make_exclude("present", labels, K, n_single, g) if use_exclude else None
    w_out = torch.randn(B, C, H, W, generator=g)
    w_reps = torch.randn(B, K, C, generator=g)

    f32 = feats.clone().requires_grad_(True)
    l32 = logits.clone().requires_grad_(True)
    reps, out = _pipeline(idr.group_by_class, idr.relation_context, idr.scatter_to_pixels, f32, l32, R, drop_negative, exclude)
    ((out * w_out).sum() + (reps * w_reps).sum()).backward()

    f64 = feats.double().requires_grad_(True)
    l64 = logits.double().requires_grad_(True)
    reps_r, out_r = _pipeline(
        ref.ref_group_by_class, ref.ref_relation_context, ref.ref_scatter_to_pixels,
        f64, l64, R.double(), drop_negative, exclude,
    )
    ((out_r * w_out.double()).sum() + (reps_r * w_reps.double()).sum()).backward()

    _assert_close(out.detach(), out_r.detach(), "pipeline output")
    assert f32.grad is not None, "no gradient reached feats"
    assert l32.grad is not None, "no gradient reached logits"
    _assert_close(f32.grad, f64.grad, "d/d feats")
    _assert_close(l32.grad, l64.grad, "d/d logits")
    assert l64.grad.abs().max() > 0  # the check is not vacuous


def test_excluded_class_pixels_get_zero_context():
    g = _gen(41)
    logits, labels = make_logits(2, 19, 12, 12, 5, 1, g)
    feats = torch.randn(2, 6, 12, 12, generator=g)
    exclude = _make_exclude("present", labels, 19, 1, g)
    reps, present = idr.group_by_class(feats, logits, exclude)
    ctx = idr.relation_context(reps, present, torch.eye(19))
    out = idr.scatter_to_pixels(ctx, logits)
    for b in range(2):
        mask = labels[b] == exclude[b]
        assert mask.any()
        assert (out[b][:, mask] == 0).all()



# ----------------------------------------------------------------------------
# project_joint: the joint map's 1x1 conv, class part applied per class
# ----------------------------------------------------------------------------
# (B, K, P, D, O, H, W, n_present, n_single)
JOINT_CASES = [
    pytest.param(2, 7, 4, 10, 5, 8, 9, 4, 1, id="K7"),
    pytest.param(2, 150, 8, 20, 12, 16, 16, 30, 3, id="K150"),
    pytest.param(2, 4, 3, 6, 2, 1, 1, 1, 0, id="1x1"),
]


@pytest.mark.parametrize("B,K,P,D,O,H,W,n_present,n_single", JOINT_CASES)
def test_project_joint_values_and_gradients(B, K, P, D, O, H, W, n_present, n_single):
    g = _gen(4500 + K)
    logits, _ = make_logits(B, K, H, W, n_present, n_single, g)
    inputs = {
        "pixel_feats": torch.randn(B, P, H, W, generator=g),
        "pixel_weight": torch.randn(O, P, generator=g),
        "class_feats": torch.randn(B, K, D, generator=g),
        "class_weight": torch.randn(O, D, generator=g),
    }
    w_out = torch.randn(B, O, H, W, generator=g)
    f32 = {name: t.clone().requires_grad_(True) for name, t in inputs.items()}
    pixel_projection = torch.nn.functional.conv2d(f32["pixel_feats"], f32["pixel_weight"][:, :, None, None])
    out = idr.project_joint(pixel_projection, f32["class_feats"], f32["class_weight"], logits)
    (out * w_out).sum().backward()
    f64 = {name: t.double().requires_grad_(True) for name, t in inputs.items()}
    out_r = ref.ref_project_joint(
        f64["pixel_feats"], f64["pixel_weight"], f64["class_feats"], f64["class_weight"], logits.double()
    )
    (out_r * w_out.double()).sum().backward()
    scale = max(1.0, out_r.abs().max().item())
    _assert_close(out.detach() / scale, out_r.detach() / scale, "joint projection")
    for name in inputs:
        grad_scale = max(1.0, f64[name].grad.abs().max().item())
        _assert_close(f32[name].grad / grad_scale, f64[name].grad / grad_scale, f"d/d {name}")
        assert f64[name].grad.abs().max() > 0, name  # the check is not vacuous

# ----------------------------------------------------------------------------
# deletion_effect
# ----------------------------------------------------------------------------
# (B, K, H, W, n_present, n_single, n_double, ignore_frac)
DEL_CASES = [
    pytest.param(2, 5, 8, 8, 3, 1, 1, 0.1, id="K5"),
    pytest.param(2, 19, 32, 32, 8, 2, 2, 0.2, id="K19"),
    pytest.param(2, 150, 64, 64, 30, 3, 3, 0.15, id="K150-30present"),
    pytest.param(1, 3, 1, 1, 1, 0, 0, 0.0, id="1x1"),
    pytest.param(2, 6, 4, 5, 2, 2, 1, 0.0, id="no-ignore"),
    # large ground-truth regions (~8k pixels per class, as at 512x512 with ~30 classes):
    # float32 accumulation order matters here
    pytest.param(2, 150, 128, 128, 2, 1, 1, 0.05, id="K150-large-regions"),
]


@pytest.mark.parametrize("B,K,H,W,n_present,n_single,n_double,ignore_frac", DEL_CASES)
def test_deletion_effect(B, K, H, W, n_present, n_single, n_double, ignore_frac):
    g = _gen(5000 + K + H)
    target = make_target(B, K, H, W, n_present, n_single, n_double, ignore_frac, g)
    anchor = torch.randn(B, K, H, W, generator=g) * 2
    deleted = anchor + 0.7 * torch.randn(B, K, H, W, generator=g)

    out = idr.deletion_effect(pixel_cross_entropy(anchor, target, IGNORE), deleted, target, IGNORE)
    exp = ref.ref_deletion_effect(anchor.double(), deleted.double(), target, IGNORE)
    names = ("mean_diff", "var_diff", "mean_valid", "var_valid")
    assert len(out) == 4
    for name, a, e in zip(names, out, exp):
        if name.endswith("valid"):
            _assert_mask_equal(a, e, name)
        else:
            _assert_close(a, e, name)
    # invalid entries are exactly zero
    assert (out[0][~out[2]] == 0).all() and (out[1][~out[3]] == 0).all()
    if n_single:
        assert (exp[2] & ~exp[3]).any(), "test should contain one-pixel classes"


def test_deletion_effect_all_ignore_image():
    g = _gen(51)
    B, K, H, W = 2, 7, 10, 10
    target = make_target(B, K, H, W, 3, 1, 1, 0.0, g)
    target[1] = IGNORE
    anchor = torch.randn(B, K, H, W, generator=g)
    deleted = torch.randn(B, K, H, W, generator=g)
    out = idr.deletion_effect(pixel_cross_entropy(anchor, target, IGNORE), deleted, target, IGNORE)
    exp = ref.ref_deletion_effect(anchor.double(), deleted.double(), target, IGNORE)
    for a, e in zip(out, exp):
        if e.dtype == torch.bool:
            _assert_mask_equal(a, e, "valid")
        else:
            _assert_close(a, e, "diff")
    assert not out[2][1].any() and not out[3][1].any()


def test_deletion_effect_identical_logits_is_zero():
    g = _gen(52)
    target = make_target(2, 9, 12, 12, 4, 1, 1, 0.1, g)
    anchor = torch.randn(2, 9, 12, 12, generator=g)
    anchor_loss = pixel_cross_entropy(anchor, target, IGNORE)
    mean_diff, var_diff, mv, vv = idr.deletion_effect(anchor_loss, anchor.clone(), target, IGNORE)
    assert mean_diff.abs().max() <= TOL and var_diff.abs().max() <= TOL
    assert mv.any() and vv.any()


# ----------------------------------------------------------------------------
# update_relations
# ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "K,deleted,momentum",
    [
        pytest.param(5, [2, 0], 0.1, id="K5-distinct"),
        pytest.param(5, [2, 2], 0.1, id="K5-same-class-twice"),
        pytest.param(19, [3, 7, 3, 3], 0.5, id="K19-thrice"),
        pytest.param(150, [149, 0, 149, 42, 0, 149], 0.1, id="K150"),
        pytest.param(6, [1], 1.0, id="momentum-1"),
    ],
)
def test_update_relations(K, deleted, momentum):
    g = _gen(6000 + K + len(deleted))
    B = len(deleted)
    R = torch.randn(K, K, generator=g)
    R_before = R.clone()
    deleted_t = torch.tensor(deleted, dtype=torch.long)
    effect = torch.randn(B, K, generator=g)
    valid = torch.rand(B, K, generator=g) < 0.5
    valid[:, 0] = True  # column 0 always valid: duplicated rows compound on it

    new = idr.update_relations(R, deleted_t, effect, valid, momentum)
    exp = ref.ref_update_relations(R.double(), deleted_t, effect.double(), valid, momentum)
    _assert_close(new, exp, "relations")
    assert torch.equal(R, R_before), "update_relations must not modify its input"
    assert new.dtype == R.dtype


def test_update_relations_compounding_by_hand():
    R = torch.zeros(3, 3)
    new = idr.update_relations(
        R, torch.tensor([1, 1]), torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 5.0]]),
        torch.tensor([[True, True, False], [True, False, True]]), 0.5,
    )
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.5 * 3 + 0.5 * 0.5, 1.0, 2.5], [0.0, 0.0, 0.0]])
    _assert_close(new, expected, "hand-computed EMA")


# ----------------------------------------------------------------------------
# class_means
# ----------------------------------------------------------------------------
# (B, C, h, w, H, W, K, n_present, n_single, ignore_frac)
MEAN_CASES = [
    pytest.param(2, 4, 8, 8, 64, 64, 5, 4, 1, 0.1, id="8x8->64x64"),
    pytest.param(2, 3, 7, 9, 50, 61, 19, 6, 2, 0.2, id="7x9->50x61"),
    pytest.param(2, 8, 64, 64, 512, 512, 150, 30, 3, 0.05, id="64x64->512x512-K150"),
    pytest.param(1, 5, 9, 9, 9, 9, 6, 3, 1, 0.0, id="same-size"),
    pytest.param(2, 3, 16, 12, 5, 7, 8, 3, 1, 0.1, id="downsample"),
    pytest.param(2, 3, 1, 1, 5, 7, 4, 2, 1, 0.1, id="1x1->5x7"),
    pytest.param(1, 2, 1, 5, 9, 13, 4, 2, 1, 0.0, id="1x5->9x13"),
]


@pytest.mark.parametrize("B,C,h,w,H,W,K,n_present,n_single,ignore_frac", MEAN_CASES)
def test_class_means(B, C, h, w, H, W, K, n_present, n_single, ignore_frac):
    g = _gen(7000 + K + H)
    feats = torch.randn(B, C, h, w, generator=g)
    target = make_target(B, K, H, W, n_present, n_single, 0, ignore_frac, g)
    # one class only in the second image (batch-level presence)
    means, present = idr.class_means(feats, target, K, IGNORE)
    means_r, present_r = ref.ref_class_means(feats.double(), target, K, IGNORE)
    _assert_mask_equal(present, present_r, "present")
    _assert_close(means, means_r, "means")
    assert (means[~present] == 0).all()
    assert means.dtype == feats.dtype


# ----------------------------------------------------------------------------
# a different ignore index (the official code uses -100 internally)
# ----------------------------------------------------------------------------
def test_other_ignore_index():
    g = _gen(81)
    B, K, H, W = 2, 9, 24, 20
    target = make_target(B, K, H, W, 4, 1, 1, 0.2, g)
    target[target == IGNORE] = -100
    anchor = torch.randn(B, K, H, W, generator=g)
    deleted = torch.randn(B, K, H, W, generator=g)
    out = idr.deletion_effect(pixel_cross_entropy(anchor, target, -100), deleted, target, -100)
    exp = ref.ref_deletion_effect(anchor.double(), deleted.double(), target, -100)
    for a, e in zip(out, exp):
        if e.dtype == torch.bool:
            _assert_mask_equal(a, e, "valid")
        else:
            _assert_close(a, e, "diff")
    feats = torch.randn(B, 3, 6, 5, generator=g)
    means, present = idr.class_means(feats, target, K, -100)
    means_r, present_r = ref.ref_class_means(feats.double(), target, K, -100)
    _assert_mask_equal(present, present_r, "present")
    _assert_close(means, means_r, "means")
