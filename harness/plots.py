"""`python -m harness.plots results/<experiment> [--checkpoint PATH ...]`: figures from the records.

Writes PNG and SVG into `results/<experiment>/plots/` (matplotlib, Agg backend):

* `miou_vs_gflops`: mIoU against GFLOPs (records' `complexity.gflops`), one panel per dataset,
  an arrow from each baseline to its +IDR model;
* `gain`: mIoU gain of +IDR per framework and dataset (bars; error bars = std of the gain
  paired by seed when there are two or more seeds; the paper's gain as a black cross);
* `per_class_<cell>`: the change of each class's IoU with IDR, sorted (class names are the
  records' `per_class_iou` keys);
* `curves_<framework>_<dataset>_<backbone>`: learning curves (records' `learning_curve`, from
  `train.eval_interval`): mIoU and each focus class's IoU against iterations, baseline and
  every +IDR setting of a framework on one axis, the mean over seeds as a line and their
  range as a band;
* `relation_recovery_<name>`: on context scenes, the learned `relations_mean` beside the
  generator's true dependencies (R[context, object]), with each true context class's rank;
* `relations_<name>`: the learned relation matrices (`head.relations_mean`,
  `head.relations_var`) of a checkpoint (`model.pt` as harness/train.py saves it) as heatmaps
  with class names. Checkpoints are the `--checkpoint` files plus the `model.pt` of every +IDR cell.

Records of different settings are never averaged together (see harness.tables); when one
framework x dataset x backbone has several settings they are plotted apart, labelled S1, S2, ...
"""
from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import warnings
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness import reference as ref  # noqa: E402
from harness.cli import Parser, parse_or_exit  # noqa: E402
from harness.fileio import atomic_target
from harness.records import find_records, read_record  # noqa: E402
from harness.tables import (  # noqa: E402
    gflops_of,
    group_runs,
    load_index,
    mean_or_none,
    metric_values,
    paired,
    setting_labels,
)

PLOTS_DIR = "plots"
FORMATS = ("png", "svg")
COLOURS = plt.get_cmap("tab10").colors


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        with atomic_target(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _groups(records: list[dict]) -> list[tuple[str, str, str, str, dict[bool, list[dict]]]]:
    """(framework, dataset, backbone, setting label, runs) for every setting group."""
    groups = group_runs(records)
    labels, _ = setting_labels(groups)
    return [(fw, ds, bb, labels.get(key, ""), runs) for key, runs in groups.items() for fw, ds, bb, _s in [key]]


def _name(framework: str, backbone: str, label: str) -> str:
    text = f"{ref.label('framework', framework)} {backbone}"
    return f"{text} {label}" if label else text


# ----------------------------------------------------------------------- mIoU vs GFLOPs


def plot_miou_vs_gflops(records: list[dict], out_dir: Path) -> list[Path]:
    points: dict[str, list[tuple[str, float | None, float | None, float | None, float | None]]] = {}
    for framework, dataset, backbone, label, runs in _groups(records):
        gb, gi = mean_or_none(metric_values(runs[False], gflops_of)), mean_or_none(metric_values(runs[True], gflops_of))
        mb, mi = mean_or_none(metric_values(runs[False])), mean_or_none(metric_values(runs[True]))
        if (gb is None or mb is None) and (gi is None or mi is None):
            continue
        points.setdefault(dataset, []).append((_name(framework, backbone, label), gb, mb, gi, mi))
    if not points:
        return []
    datasets = sorted(points)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for k, (name, gb, mb, gi, mi) in enumerate(points[dataset]):
            colour = COLOURS[k % len(COLOURS)]
            if gb is not None and mb is not None:
                ax.scatter([gb], [mb], color=colour, marker="o", s=40, label=f"{name}")
            if gi is not None and mi is not None:
                ax.scatter([gi], [mi], color=colour, marker="*", s=110,
                           label=None if gb is not None and mb is not None else f"{name} + IDR")
            if None not in (gb, mb, gi, mi):
                ax.annotate("", xy=(gi, mi), xytext=(gb, mb),
                            arrowprops=dict(arrowstyle="->", color=colour, lw=1.4, shrinkA=4, shrinkB=6))
        ax.set_title(ref.label("dataset", dataset))
        ax.set_xlabel("GFLOPs (fvcore, at the training crop)")
        ax.set_ylabel("mIoU (%)")
        ax.grid(alpha=0.3)
        ax.margins(0.15)
        ax.legend(fontsize=7, title="o baseline, * +IDR", title_fontsize=7)
    fig.suptitle("mIoU vs GFLOPs, baseline → +IDR")
    return _save(fig, out_dir, "miou_vs_gflops")


# ------------------------------------------------------------------------------- gains


def plot_gains(records: list[dict], out_dir: Path, index: dict | None = None) -> list[Path]:
    index = load_index() if index is None else index
    bars: dict[str, dict[str, tuple[float, float | None, float | None]]] = {}
    for framework, dataset, backbone, label, runs in _groups(records):
        mb, mi = mean_or_none(metric_values(runs[False])), mean_or_none(metric_values(runs[True]))
        if mb is None or mi is None:
            continue
        pair = paired(runs[False], runs[True])
        canonical = ref.canonical_backbone(backbone)
        pb = index.get((framework, canonical, dataset, "ss", "mIoU", "baseline"))
        pi = index.get((framework, canonical, dataset, "ss", "mIoU", "idr"))
        paper_gain = pi - pb if pb is not None and pi is not None else None
        bars.setdefault(_name(framework, backbone, label), {})[dataset] = (
            mi - mb, pair.std if pair.n >= 2 else None, paper_gain)
    if not bars:
        return []
    series = list(bars)
    datasets = sorted({d for v in bars.values() for d in v})
    most = max(sum(1 for name in series if d in bars[name]) for d in datasets)
    width = min(0.8 / most, 0.3)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(datasets) * most ** 0.5 + 3), 4.2))
    paper_labelled = False
    for k, name in enumerate(series):
        xs, heights, errs, paper = [], [], [], []
        for j, dataset in enumerate(datasets):
            if dataset not in bars[name]:
                continue
            present = [n for n in series if dataset in bars[n]]  # bars of one dataset sit side by side
            gain, std, paper_gain = bars[name][dataset]
            x = j + (present.index(name) - (len(present) - 1) / 2) * width
            xs.append(x)
            heights.append(gain)
            errs.append(std if std is not None else 0.0)
            if paper_gain is not None:
                paper.append((x, paper_gain))
        ax.bar(xs, heights, width * 0.9, yerr=errs if any(errs) else None, capsize=3,
               color=COLOURS[k % len(COLOURS)], label=name)
        if paper:
            ax.scatter([p[0] for p in paper], [p[1] for p in paper], marker="x", color="black", zorder=3,
                       label=None if paper_labelled else "paper gain")
            paper_labelled = True
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(datasets)), [ref.label("dataset", d) for d in datasets])
    ax.set_ylabel("mIoU gain with IDR (points)")
    ax.set_title("+IDR − baseline")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, "gain")


# --------------------------------------------------------------------------- per class


def class_changes(runs: dict[bool, list[dict]]) -> list[tuple[str, float]]:
    """(class, mean +IDR IoU − mean baseline IoU), sorted by the change; NaN IoUs skipped."""
    names: list[str] = []
    for rec in runs[False] + runs[True]:
        for name in rec.get("per_class_iou") or {}:
            if name not in names:
                names.append(name)

    def mean_iou(records: list[dict], name: str) -> float | None:
        values = [float(r["per_class_iou"][name]) for r in records
                  if name in (r.get("per_class_iou") or {}) and r["per_class_iou"][name] is not None
                  and math.isfinite(float(r["per_class_iou"][name]))]
        return statistics.fmean(values) if values else None

    changes = []
    for name in names:
        b, i = mean_iou(runs[False], name), mean_iou(runs[True], name)
        if b is not None and i is not None:
            changes.append((name, i - b))
    return sorted(changes, key=lambda item: item[1])


def plot_per_class(records: list[dict], out_dir: Path) -> list[Path]:
    paths = []
    for framework, dataset, backbone, label, runs in _groups(records):
        if not runs[False] or not runs[True]:
            continue
        changes = class_changes(runs)
        if not changes:
            continue
        n = len(changes)
        fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.2 * n + 1.2)))
        values = [c for _, c in changes]
        ax.barh(range(n), values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
        ax.set_yticks(range(n), [name for name, _ in changes], fontsize=8 if n <= 60 else 6)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel("IoU change with IDR (points)")
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_title(f"{_name(framework, backbone, label)} on {ref.label('dataset', dataset)}: per-class IoU, "
                     f"+IDR − baseline", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        stem = _safe(f"per_class_{framework}_{dataset}_{backbone}" + (f"_{label}" if label else ""))
        paths += _save(fig, out_dir, stem)
    return paths


# ------------------------------------------------------------------------ learning curves


def curve_series(records: list[dict], metric: Callable[[dict], float | None]) -> tuple[list[int], list[list[float]]]:
    """Iterations every record's curve has, and per iteration the records' values (NaN where missing)."""
    curves = [{p["iteration"]: p for p in (r.get("learning_curve") or {}).get("points", [])} for r in records]
    shared = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    values = []
    for it in shared:
        row = [metric(c[it]) for c in curves]
        values.append([math.nan if v is None else float(v) for v in row])
    return shared, values


def _curve_variants(records: list[dict]) -> dict[tuple[str, str, str], list[tuple[str, list[dict]]]]:
    """(framework, dataset, backbone) -> [(label, records)]: the baseline once, each +IDR setting."""
    out: dict[tuple[str, str, str], list[tuple[str, list[dict]]]] = {}
    seen_baselines: set[str] = set()
    for framework, dataset, backbone, label, runs in _groups(records):
        variants = out.setdefault((framework, dataset, backbone), [])
        base = [r for r in runs[False] if r.get("learning_curve") and r.get("cell_id") not in seen_baselines]
        if base:
            seen_baselines.update(r.get("cell_id") for r in base)
            variants.insert(0, ("baseline", base))
        idr = [r for r in runs[True] if r.get("learning_curve")]
        if idr:
            variants.append((f"+IDR {label}".strip(), idr))
    return {key: value for key, value in out.items() if value}


def _band(ax, iterations: list[int], values: list[list[float]], label: str, colour) -> None:
    """Mean over seeds as a line, their range as a band (an iteration where all are NaN is a gap)."""
    data = np.array(values, dtype=float)
    if data.size == 0 or np.isnan(data).all():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN iterations
        mean, low, high = np.nanmean(data, 1), np.nanmin(data, 1), np.nanmax(data, 1)
    ax.plot(iterations, mean, color=colour, label=f"{label} (n={data.shape[1]})")
    if data.shape[1] > 1:
        ax.fill_between(iterations, low, high, color=colour, alpha=0.2, linewidth=0)


def plot_learning_curves(records: list[dict], out_dir: Path) -> list[Path]:
    paths = []
    for (framework, dataset, backbone), variants in _curve_variants(records).items():
        focus = list(variants[0][1][0].get("focus_classes") or [])
        panels = [("mIoU", lambda p: p.get("mIoU"))] + [
            (f"IoU {name}", lambda p, name=name: (p.get("focus_iou") or {}).get(name)) for name in focus
        ]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False, layout="constrained")
        for ax, (title, metric) in zip(axes[0], panels):
            for k, (label, runs) in enumerate(variants):
                iterations, values = curve_series(runs, metric)
                _band(ax, iterations, values, label, COLOURS[k % len(COLOURS)])
            ax.set_title(title)
            ax.set_xlabel("iteration")
            ax.set_ylabel("%")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        images = variants[0][1][0]["learning_curve"].get("images", "")
        fig.suptitle(f"Learning curves: {_name(framework, backbone, '')} on {ref.label('dataset', dataset)} "
                     f"({images}; line: mean over seeds, band: their range)")
        paths += _save(fig, out_dir, _safe(f"curves_{framework}_{dataset}_{backbone}"))
    return paths


# ---------------------------------------------------------------------- relation matrices


def class_names_for(checkpoint: Path, records: list[dict], k: int, dataset: str | None = None) -> list[str]:
    """Class names of a checkpoint: --dataset's card, else the record of the cell holding the
    checkpoint, else a record with K classes; indices as a last resort."""
    if dataset:
        from harness.data import dataset_card

        names = list(dataset_card(dataset).class_names)
        if len(names) == k:
            return names
    for parent in checkpoint.resolve().parents:
        record = parent / "record.json"
        if record.is_file():
            names = list(read_record(record).get("per_class_iou") or {})
            if len(names) == k:
                return names
        match = [r for r in records if r.get("cell_id") == parent.name]
        if match and len(match[0].get("per_class_iou") or {}) == k:
            return list(match[0]["per_class_iou"])
    candidates = {tuple(r.get("per_class_iou") or {}) for r in records if r.get("idr")}
    candidates = {c for c in candidates if len(c) == k}
    if len(candidates) == 1:
        return list(candidates.pop())
    return [str(i) for i in range(k)]


def plot_relations(checkpoint: Path, out_dir: Path, records: list[dict], name: str | None = None,
                   dataset: str | None = None) -> list[Path]:
    from harness import context_probe

    relations = context_probe.load_relations(checkpoint)
    k = relations["relations_mean"].shape[0]
    names = class_names_for(checkpoint, records, k, dataset)
    side = min(22.0, max(4.0, 0.16 * k + 2.0))
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.0, side * 0.9), layout="constrained")
    step = max(1, math.ceil(k / 80))
    fontsize = 8 if k <= 30 else 6 if k <= 80 else 5
    for ax, key, title, cmap in ((axes[0], "relations_mean", "relations (mean)", "viridis"),
                                 (axes[1], "relations_var", "relations (variance)", "magma")):
        image = ax.imshow(relations[key].numpy(), cmap=cmap, interpolation="nearest")
        ticks = list(range(0, k, step))
        ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=fontsize)
        ax.set_title(title)
        ax.set_xlabel("class j")
        ax.set_ylabel("class i")
        fig.colorbar(image, ax=ax, shrink=0.8)
    label = name or _checkpoint_name(checkpoint)
    fig.suptitle(f"Learned IDR relation matrices: {label}")
    return _save(fig, out_dir, _safe(f"relations_{label}"))


def plot_relations_vs_truth(checkpoint: Path, out_dir: Path, records: list[dict], dataset: str | None = None) -> list[Path]:
    """Context scenes: the learned mean relations beside the generator's true dependencies."""
    from harness import context_probe

    relations = context_probe.load_relations(checkpoint)["relations_mean"]
    names = class_names_for(checkpoint, records, relations.shape[0], dataset)
    if sorted(names) != sorted(context_probe.scenes.CLASS_NAMES):
        return []
    recovery = context_probe.relation_recovery(relations, names)
    truth = context_probe.true_relations(names)
    off_diagonal = relations.clone().fill_diagonal_(float("nan")).numpy()  # the ranks leave the diagonal out
    limit = float(np.nanmax(np.abs(off_diagonal))) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.8), layout="constrained")
    for ax, matrix, title, cmap, vmin in ((axes[0], off_diagonal, "learned R (mean), diagonal left out", "RdBu_r", -limit),
                                          (axes[1], truth.numpy(), "true dependencies", "Greys", 0.0)):
        image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=limit if vmin < 0 else 1.0, interpolation="nearest")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("class whose loss rises (column)")
        ax.set_ylabel("deleted class (row)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    ranks = ", ".join(f"{obj}: {rank}" for obj, rank in recovery["ranks"].items())
    label = _checkpoint_name(checkpoint)
    fig.suptitle(f"{label}: rank of the true context class in each column (of {recovery['candidates']}): {ranks}; "
                 f"MRR {recovery['mean_reciprocal_rank']:.2f}", fontsize=9)
    return _save(fig, out_dir, _safe(f"relation_recovery_{label}"))


def _checkpoint_name(path: Path) -> str:
    parent = path.resolve().parent
    return parent.name if path.name == "model.pt" else path.stem


def find_checkpoints(results_dir: Path, records: list[dict]) -> list[Path]:
    """The saved models of the +IDR cells (baselines have no relation matrices)."""
    paths = [Path(results_dir) / "cells" / r["cell_id"] / "model.pt" for r in records
             if r.get("idr") and not r.get("evaluated_from") and "cell_id" in r]
    return sorted(p for p in paths if p.is_file())


# ---------------------------------------------------------------------------------- all


def plot_all(results_dir: Path, checkpoints: list[Path] | None = None, dataset: str | None = None,
             index: dict | None = None, log=print) -> list[Path]:
    """Every plot for one results folder; returns the files written."""
    results_dir = Path(results_dir)
    out_dir = results_dir / PLOTS_DIR
    records = find_records(results_dir)
    paths = plot_miou_vs_gflops(records, out_dir)
    if not paths:
        log("no record with both mIoU and GFLOPs: miou_vs_gflops skipped")
    paths += plot_gains(records, out_dir, index)
    paths += plot_per_class(records, out_dir)
    paths += plot_learning_curves(records, out_dir)
    seen = set()
    for checkpoint in list(checkpoints or []) + find_checkpoints(results_dir, records):
        checkpoint = Path(checkpoint)
        if checkpoint.resolve() in seen:
            continue
        seen.add(checkpoint.resolve())
        try:
            paths += plot_relations(checkpoint, out_dir, records, dataset=dataset)
            paths += plot_relations_vs_truth(checkpoint, out_dir, records, dataset=dataset)
        except (KeyError, OSError, RuntimeError) as err:
            log(f"relations of {checkpoint} skipped: {err}")
    return paths


def parse_results_cli(prog: str, description: str, argv: list[str] | None) -> argparse.Namespace | None:
    """Arguments shared by `harness.plots` and `harness.report`; None after a one-line error."""
    parser = Parser(prog=prog, description=description)
    parser.add_argument("results_dir", help="results/<experiment>, or its s3:// URI (see docs/cluster.md)")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[],
                        help="a model.pt with IDR relation buffers (repeatable)")
    parser.add_argument("--dataset", default=None, help="dataset whose class names label the relation heatmaps")
    args = parse_or_exit(parser, argv)
    from harness.storage import StorageError, results_folder

    try:
        args.results_dir = results_folder(args.results_dir)
    except StorageError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    for checkpoint in args.checkpoint:
        if not checkpoint.is_file():
            print(f"error: --checkpoint {checkpoint}: no such file", file=sys.stderr)
            return None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_results_cli("python -m harness.plots", __doc__.splitlines()[0], argv)
    if args is None:
        return 2
    from harness.storage import is_result_file, staged

    with staged(args.results_dir, is_result_file) as folder:
        paths = plot_all(folder, args.checkpoint, args.dataset, log=lambda m: print(m, file=sys.stderr))
        for path in paths:
            print(args.results_dir / path.relative_to(folder).as_posix() if not args.results_dir.is_local else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
