"""Time the vectorised IDR core (models/idr.py) against the loop references.

    python benchmarks/bench_idr_core.py [--repeats N] [--ref-repeats N]

Single-threaded CPU (torch.set_num_threads(1)) at the ADE20K training shape:
K=150 classes, B=2 images, C=512 channels, 64x64 features, 512x512 labels,
about 30 classes present per image.  Each row is the median over a few
repetitions (after one warm-up call); the last row is the sum of the rows.
The "max diff" column is the max abs difference between the two outputs
(both in float32 here; the tests compare against float64 references).

deletion_effect takes the anchor's per-pixel cross-entropy, which the training
step's stage-2 loss has already computed (models/losses.py), so its row times
only the deleted prediction's cross-entropy and the per-class statistics; the
reference computes both cross-entropies, as a loop implementation would.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load_reference():
    name = "idr_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "idr_reference.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ref = _load_reference()
from models import idr  # noqa: E402
from models.losses import pixel_cross_entropy

K, B, C = 150, 2, 512
h, w = 64, 64
H, W = 512, 512
N_PRESENT = 30
IGNORE = 255
TARGET_SPEEDUP = 10.0


def _blocky_labels(g, size, block, n_present):
    """Per image: n_present random classes on a grid of block x block regions
    (every chosen class gets at least one region)."""
    gh, gw = size[0] // block, size[1] // block
    out = torch.empty(B, *size, dtype=torch.long)
    for b in range(B):
        classes = torch.randperm(K, generator=g)[:n_present]
        cells = classes[torch.randint(n_present, (gh * gw,), generator=g)]
        cells[torch.randperm(gh * gw, generator=g)[:n_present]] = classes
        grid = cells.view(gh, gw)
        out[b] = grid.repeat_interleave(block, 0).repeat_interleave(block, 1)
    return out


def make_inputs(seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    # stage-1 logits at feature size whose argmax is a blocky map of ~30 classes
    labels_lr = _blocky_labels(g, (h, w), 4, N_PRESENT)
    logits = torch.randn(B, K, h, w, generator=g) * 2
    top = logits.max(dim=1).values + 0.1 + 2 * torch.rand(B, h, w, generator=g)
    logits.scatter_(1, labels_lr.unsqueeze(1), top.unsqueeze(1))
    feats = torch.randn(B, C, h, w, generator=g)
    relations = torch.randn(K, K, generator=g)
    # ground truth at label size: the low-res map upsampled (8x8 blocks), a few pixels relabelled, 5% ignore
    target = labels_lr.repeat_interleave(H // h, 1).repeat_interleave(W // w, 2).clone()
    for b in range(B):  # 2% of the pixels relabelled to another class of the same image
        classes = torch.unique(labels_lr[b])
        flip = torch.rand(H, W, generator=g) < 0.02
        target[b][flip] = classes[torch.randint(len(classes), (int(flip.sum()),), generator=g)]
    target[torch.rand(B, H, W, generator=g) < 0.05] = IGNORE
    logits_anchor = torch.randn(B, K, H, W, generator=g)
    logits_deleted = logits_anchor + 0.5 * torch.randn(B, K, H, W, generator=g)
    return dict(feats=feats, logits=logits, relations=relations, target=target,
                logits_anchor=logits_anchor, logits_deleted=logits_deleted)


def _median_ms(fn, repeats):
    out = fn()  # warm-up (and the result for the agreement check)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def _maxdiff(a, b):
    if isinstance(a, (tuple, list)):
        return max(_maxdiff(x, y) for x, y in zip(a, b))
    if a.dtype == torch.bool:
        return 0.0 if torch.equal(a, b.to(a.device)) else float("inf")
    return (a.double() - b.double()).abs().max().item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed repetitions of the vectorised functions")
    ap.add_argument("--ref-repeats", type=int, default=3, help="timed repetitions of the references")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    x = make_inputs()
    feats, logits, R, target = x["feats"], x["logits"], x["relations"], x["target"]
    la, ld = x["logits_anchor"], x["logits_deleted"]
    anchor_loss = pixel_cross_entropy(la, target, IGNORE)  # the stage-2 training loss, per pixel

    reps, present = idr.group_by_class(feats, logits)
    n_present = present.sum(1).tolist()
    n_gt = [int(torch.unique(t[t != IGNORE]).numel()) for t in target]

    cases = [
        ("group_by_class",
         lambda: ref.ref_group_by_class(feats, logits),
         lambda: idr.group_by_class(feats, logits)),
        ("relation_context+scatter",
         lambda: ref.ref_scatter_to_pixels(ref.ref_relation_context(reps, present, R), logits),
         lambda: idr.scatter_to_pixels(idr.relation_context(reps, present, R), logits)),
        ("deletion_effect",
         lambda: ref.ref_deletion_effect(la, ld, target, IGNORE),
         lambda: idr.deletion_effect(anchor_loss, ld, target, IGNORE)),
        ("class_means",
         lambda: ref.ref_class_means(feats, target, K, IGNORE),
         lambda: idr.class_means(feats, target, K, IGNORE)),
    ]

    print(f"IDR core, CPU, torch {torch.__version__}, threads={torch.get_num_threads()}")
    print(f"K={K} B={B} C={C} features {h}x{w} labels {H}x{W}; argmax classes per image {n_present}, "
          f"ground-truth classes per image {n_gt}; median of {args.ref_repeats} (reference) / "
          f"{args.repeats} (vectorised) runs")
    header = f"{'function':<26} {'reference ms':>13} {'vectorised ms':>14} {'speed-up':>9} {'max diff':>10}"
    print(header)
    print("-" * len(header))
    tot_ref = tot_vec = 0.0
    rows = {}
    for name, f_ref, f_vec in cases:
        t_ref, o_ref = _median_ms(f_ref, args.ref_repeats)
        t_vec, o_vec = _median_ms(f_vec, args.repeats)
        rows[name] = (t_ref, t_vec)
        tot_ref += t_ref
        tot_vec += t_vec
        print(f"{name:<26} {t_ref:>13.2f} {t_vec:>14.2f} {t_ref / t_vec:>8.1f}x {_maxdiff(o_vec, o_ref):>10.2e}")
    print("-" * len(header))
    overall = tot_ref / tot_vec
    print(f"{'overall (sum)':<26} {tot_ref:>13.2f} {tot_vec:>14.2f} {overall:>8.1f}x")
    # deletion_effect is bound by the pixel cross-entropy of the deleted prediction
    # (a log-sum-exp over K for every labelled pixel), which the reference computes too
    ex_ref = tot_ref - rows["deletion_effect"][0]
    ex_vec = tot_vec - rows["deletion_effect"][1]
    print(f"{'(without deletion_effect)':<26} {ex_ref:>13.2f} {ex_vec:>14.2f} {ex_ref / ex_vec:>8.1f}x")
    verdict = "meets" if overall >= TARGET_SPEEDUP else "MISSES"
    print(f"overall speed-up {overall:.1f}x {verdict} the {TARGET_SPEEDUP:.0f}x target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
