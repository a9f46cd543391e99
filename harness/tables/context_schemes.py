"""The context-schemes table: IDR beside the context modules it was built to beat, grouped by paradigm.

Rows: none (FCN), multi-scale (PSPNet's PPM, DeepLabV3's ASPP, UPerNet), similarity (Non-local, DNL,
OCRNet, DANet, CCNet), the authors' earlier modules (ISNet, MCIBI, MCIBI++ on each framework) and
intervention (IDR on each framework); a last block sets MCIBI++ and IDR on the same framework side by
side with their difference. Columns, each from one named source, "—" where it has nothing:

* complexity at 512x512 — params and GFLOPs of the whole model and of its context module alone, and
  batch-1 latency with its device — from `harness.measure --json` results saved under
  `<results>/measure/*.json`, else (whole model only) from trained records whose crop is 512x512;
* per dataset: mIoU of our trained cells (mean ± std over seeds; records of different settings are
  never averaged, each setting is shown), of released checkpoints evaluated here (harness.released)
  and the model-zoo figure (results/reference/modelzoo.csv for the schemes, paper.csv's model-zoo
  figures for the four frameworks with and without IDR); all single scale;
* the context flip rate (%) of the context-scenes records.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness import reference as ref
from harness.records import is_released
from harness.tables.layout import MISSING, Block, Table
from harness.tables.settings import protocol_of, record_values, setting_key
from harness.tables.stats import fmt_delta, fmt_gain, fmt_stats, mean_or_none, metric_values, paired

TABLE_NAME = "context_schemes"
MEASURE_DIR = "measure"
INPUT_SIZE = (512, 512)
DATASETS = ("ade20k", "cityscapes", "coco_stuff10k", "lip")
BASES = ("fcn", "pspnet", "deeplabv3", "upernet")
BASE_LABELS = {"fcn": "FCN", "pspnet": "PSPNet", "deeplabv3": "DeepLabV3", "upernet": "UPerNet"}


@dataclass(frozen=True)
class SchemeRow:
    label: str
    framework: str
    idr: bool = False


PARADIGMS: tuple[tuple[str, tuple[SchemeRow, ...]], ...] = (
    ("none", (SchemeRow("FCN", "fcn"),)),
    ("multi-scale", (SchemeRow("PSPNet (PPM)", "pspnet"), SchemeRow("DeepLabV3 (ASPP)", "deeplabv3"),
                     SchemeRow("UPerNet", "upernet"))),
    ("similarity", (SchemeRow("Non-local", "nonlocalnet"), SchemeRow("DNL", "dnlnet"), SchemeRow("OCRNet", "ocrnet"),
                    SchemeRow("DANet", "danet"), SchemeRow("CCNet", "ccnet"))),
    ("authors' earlier modules", (SchemeRow("ISNet", "isnet"), SchemeRow("MCIBI (DeepLabV3)", "mcibi"),
                                  *(SchemeRow(f"MCIBI++ on {BASE_LABELS[b]}", f"{b}_mcibipp") for b in BASES))),
    ("intervention", tuple(SchemeRow(f"IDR on {BASE_LABELS[b]}", b, True) for b in BASES)),
)

#: numeric columns before the per-dataset ones
COMPLEXITY_COLUMNS = ["params (M)", "GFLOPs", "context params (M)", "context GFLOPs", "latency (ms)"]


# ----------------------------------------------------------------------------- sources


def load_measurements(results_dir: Path) -> list[dict]:
    """The harness.measure results saved under `<results>/measure/*.json` (each a list of results)."""
    out: list[dict] = []
    for path in sorted((Path(results_dir) / MEASURE_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ref.ReferenceError(f"{path}: not JSON ({err.msg}, line {err.lineno}); expected harness.measure "
                                     "--json output") from None
        results = data if isinstance(data, list) else [data]
        if not all(isinstance(r, dict) and {"framework", "idr", "input_size", "params", "flops"} <= r.keys()
                   for r in results):
            raise ref.ReferenceError(f"{path}: expected harness.measure --json output (a list of results with "
                                     "framework, idr, input_size, params, flops)")
        out += results
    return out


def _load_zoo() -> dict:
    try:
        return ref.load_zoo()
    except FileNotFoundError:
        return {}


def _backbone(record: dict) -> str:
    return ref.canonical_backbone(str(record.get("backbone") or (record.get("model") or {}).get("backbone")))


@dataclass
class Complexity:
    params_m: float | None = None
    gflops: float | None = None
    context_params_m: float | None = None
    context_gflops: float | None = None
    latency: str = MISSING


def _from_measure(result: dict) -> Complexity:
    ctx = result.get("context_module") or None
    lat = result.get("latency") or None
    return Complexity(
        params_m=float(result["params"]["total_m"]),
        gflops=float(result["flops"]["gflops"]),
        context_params_m=ctx["params"] / 1e6 if ctx else None,
        context_gflops=ctx["flops"] / 1e9 if ctx else None,
        latency=f"{lat['median_ms']:.1f} ({lat['device'].split(':')[0]})" if lat else MISSING,
    )


def _from_records(records: list[dict]) -> Complexity:
    """Whole-model params and GFLOPs of trained records measured at 512x512 (their training crop)."""
    at_size = [r for r in records if list((r.get("complexity") or {}).get("input_size") or []) == list(INPUT_SIZE)]
    params = [r["params"]["total"] / 1e6 if isinstance(r.get("params"), dict) else r["params"] / 1e6
              for r in at_size if r.get("params")]
    gflops = [float(r["complexity"]["gflops"]) for r in at_size if r["complexity"].get("gflops") is not None]
    return Complexity(params_m=mean_or_none(params), gflops=mean_or_none(gflops))


def complexity_of(row: SchemeRow, backbone: str, measured: list[dict], records: list[dict]) -> Complexity:
    """A measurement at 512x512 of this row's model if there is one, else what its 512x512 records hold."""
    for result in measured:
        if (result.get("framework") == row.framework and bool(result.get("idr")) == row.idr
                and tuple(result.get("input_size") or ()) == INPUT_SIZE
                and ref.canonical_backbone(str(result.get("backbone"))) == backbone):
            return _from_measure(result)
    return _from_records([r for r in records if not is_released(r)])


# ----------------------------------------------------------------------------- figures per dataset


def trained_miou(records: list[dict]) -> str:
    """mIoU of trained single-scale records: mean ± std per setting, settings never averaged together."""
    by_setting: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        if not is_released(rec) and protocol_of((rec.get("config") or {}).get("eval")) == "ss":
            by_setting[setting_key(record_values(rec), lambda key: key != "seed")].append(rec)
    texts = [fmt_stats(metric_values(group)) for _, group in sorted(by_setting.items())]
    texts = [t for t in texts if t != MISSING]
    return " / ".join(texts) if texts else MISSING


def released_miou(records: list[dict]) -> float | None:
    values = [r["metrics"]["mIoU"] for r in records if is_released(r) and (r.get("metrics") or {}).get("mIoU") is not None
              and protocol_of((r.get("config") or {}).get("eval")) == "ss"]
    return mean_or_none(values)


def zoo_miou(row: SchemeRow, backbone: str, dataset: str, zoo: dict, index: dict) -> float | None:
    """The model-zoo single-scale figure: modelzoo.csv for the schemes, paper.csv's for the four frameworks."""
    if row.framework in BASES:
        return index.get((row.framework, backbone, dataset, "ss", "mIoU", "idr" if row.idr else "baseline"))
    found = zoo.get((row.framework, backbone, dataset, "ss", "mIoU"))
    return found[0] if found else None


def flip_rate(records: list[dict]) -> float | None:
    values = [float(r["context_flip"]["flip_rate"]) for r in records
              if isinstance(r.get("context_flip"), dict) and r["context_flip"].get("flip_rate") is not None]
    return mean_or_none(values)


# ----------------------------------------------------------------------------- the table


def _num(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


@dataclass
class RowFigures:
    """Every figure of one row, as numbers (for the differences) and as text."""

    complexity: Complexity
    trained: dict[str, list[dict]]
    released: dict[str, float | None]
    zoo: dict[str, float | None]
    flip: float | None

    def cells(self, datasets: list[str]) -> list[str]:
        c = self.complexity
        out = [_num(c.params_m), _num(c.gflops), _num(c.context_params_m), _num(c.context_gflops), c.latency]
        for dataset in datasets:
            out += [trained_miou(self.trained[dataset]), _num(self.released[dataset]), _num(self.zoo[dataset])]
        return out + [_num(self.flip, 1)]


def _difference_cells(idr: RowFigures, other: RowFigures, datasets: list[str]) -> list[str]:
    """IDR minus MCIBI++ on the same framework, column by column (— where either is missing)."""

    def delta(a: float | None, b: float | None) -> str:
        return fmt_delta(None if a is None or b is None else a - b)

    a, b = idr.complexity, other.complexity
    out = [delta(a.params_m, b.params_m), delta(a.gflops, b.gflops), delta(a.context_params_m, b.context_params_m),
           delta(a.context_gflops, b.context_gflops), MISSING]
    for dataset in datasets:
        runs_a = [r for r in idr.trained[dataset] if not is_released(r)]
        runs_b = [r for r in other.trained[dataset] if not is_released(r)]
        trained = fmt_gain(metric_values(runs_b), metric_values(runs_a), paired(runs_b, runs_a))
        out += [trained, delta(idr.released[dataset], other.released[dataset]),
                delta(idr.zoo[dataset], other.zoo[dataset])]
    return out + [delta(idr.flip, other.flip)]


def _datasets(records: list[dict]) -> list[str]:
    extra = sorted({r["dataset"] for r in records} - set(DATASETS))
    return list(DATASETS) + extra


def _backbones(records: list[dict], measured: list[dict]) -> list[str]:
    """The backbones of the trained records and of the measurements, R50 first: a folder of small-backbone
    CPU cells with R50 measurements beside them gets both blocks."""
    found = {_backbone(r) for r in records if r.get("framework") in SCHEME_FRAMEWORKS}
    found |= {ref.canonical_backbone(str(m.get("backbone"))) for m in measured if m.get("framework") in SCHEME_FRAMEWORKS}
    return sorted(found, key=lambda b: (b != ref.R50, b)) if found else [ref.R50]


SCHEME_FRAMEWORKS = {row.framework for _, rows in PARADIGMS for row in rows}


def wants_table(records: list[dict], measured: list[dict]) -> bool:
    """Whether a results folder holds a context scheme (beyond the four frameworks) to compare."""
    others = SCHEME_FRAMEWORKS - set(BASES)
    return any(r.get("framework") in others for r in records) or any(m.get("framework") in others for m in measured)


def context_schemes_table(records: list[dict], index: dict, measured: list[dict] | None = None,
                          zoo: dict | None = None) -> Table:
    measured = measured or []
    zoo = _load_zoo() if zoo is None else zoo
    datasets = _datasets(records)
    columns = ["scheme", "backbone", *COMPLEXITY_COLUMNS]
    for dataset in datasets:
        name = ref.label("dataset", dataset)
        columns += [f"{name} trained", f"{name} released", f"{name} zoo"]
    columns.append("context flip rate (%)")
    by_model: dict[tuple[str, bool, str], list[dict]] = defaultdict(list)
    for rec in records:
        by_model[(rec["framework"], bool(rec.get("idr")), _backbone(rec))].append(rec)

    def figures(row: SchemeRow, backbone: str) -> RowFigures:
        runs = by_model.get((row.framework, row.idr, backbone), [])
        per_dataset = {d: [r for r in runs if r["dataset"] == d] for d in datasets}
        return RowFigures(
            complexity=complexity_of(row, backbone, measured, runs),
            trained=per_dataset,
            released={d: released_miou(per_dataset[d]) for d in datasets},
            zoo={d: zoo_miou(row, backbone, d, zoo, index) for d in datasets},
            flip=flip_rate([r for r in runs if not is_released(r)]),
        )

    blocks = []
    for backbone in _backbones(records, measured):
        label = ref.label("backbone", backbone)
        for paradigm, rows in PARADIGMS:
            block = Block(paradigm)
            for row in rows:
                block.rows.append([row.label, label, *figures(row, backbone).cells(datasets)])
            blocks.append(block)
        versus = Block("MCIBI++ vs IDR, same framework")
        for base in BASES:
            plug = figures(SchemeRow("", f"{base}_mcibipp"), backbone)
            idr = figures(SchemeRow("", base, True), backbone)
            versus.rows += [[f"MCIBI++ on {BASE_LABELS[base]}", label, *plug.cells(datasets)],
                            [f"IDR on {BASE_LABELS[base]}", label, *idr.cells(datasets)],
                            [f"IDR − MCIBI++ ({BASE_LABELS[base]})", label, *_difference_cells(idr, plug, datasets)]]
        blocks.append(versus)
    legend = [
        "params / GFLOPs: the whole model (auxiliary head counted in params, not run) and its context module alone "
        "(a head's `context_modules`), fvcore, one fused multiply-add = one flop, at 512x512, from harness.measure "
        f"results in <results>/{MEASURE_DIR}/*.json, else (whole model) from trained records with a 512x512 crop; "
        "latency: median batch-1 inference, its device in brackets.",
        "mIoU (%), single scale. trained: our cells, mean ± std (n=seeds), one figure per setting ( / between); "
        "released: the official checkpoint evaluated here (harness.released, no training); zoo: the sssegmentation "
        "model-zoo figure (results/reference/modelzoo.csv, source: docs/modelzoo/<method>/README.md; FCN, PSPNet, "
        "DeepLabV3, UPerNet ± IDR: results/reference/paper.csv). — : not measured, not run, or no figure.",
        "IDR − MCIBI++: IDR minus MCIBI++ on the same framework, per column (trained: difference of the means; with two "
        "or more seeds run by both, the seed-paired std and t-test p after it).",
    ]
    return Table(TABLE_NAME, "Context schemes: IDR beside multi-scale, similarity and memory context", columns,
                 blocks, legend=legend, label_columns=2, block_column="paradigm")
