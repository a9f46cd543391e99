"""`python -m harness.evaluate`: the paper's test protocols, a confusion matrix summed over ranks, and the metrics."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from harness.cli import Parser, UsageError
from harness.fileio import write_text_atomic
from harness.data import DataError, build_dataset, validate_options
from harness.evaluate.cells import (
    PROTOCOLS,
    CellError,
    evaluate_cell,
    protocol_changes,
    protocol_tag,
    read_cell_record,
)
from harness.evaluate.predictions import (
    IDS_CHOICES,
    PredictionError,
    format_report,
    score_predictions,
)

if TYPE_CHECKING:
    pass


def _pair(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 640x640, got {text!r}")
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m harness.evaluate",
        description="Score a folder of prediction PNGs (pixel = class id, named after the label or image) against a "
        "dataset split, evaluate a finished cell's saved model under another test protocol (--cell), or evaluate a "
        "released model's checkpoint in our format without training (--checkpoint).",
    )
    pngs = parser.add_argument_group("scoring saved predictions")
    pngs.add_argument("--predictions", default=None,
                      help="folder of prediction PNGs named <label stem>.png or <image stem>.png; Cityscapes: any name "
                      "containing <city>_<seq>_<frame> (cityscapesscripts' rule, e.g. mmsegmentation's *_leftImg8bit.png)")
    pngs.add_argument("--ids", choices=IDS_CHOICES, default=None,
                      help="Cityscapes predictions hold labelIds (the official submission format) or trainIds "
                      "(default: detected from the values)")
    pngs.add_argument("--dataset", default=None, help="registered dataset name")
    pngs.add_argument("--split", default=None, help="split whose labels are scored, e.g. val (--cell: default the cell's)")
    pngs.add_argument("--root", default=None, help="data root (as data.root of an experiment; --cell: default the cell's)")
    pngs.add_argument("--options", default=None, help='dataset options as JSON, e.g. {"num_val": 3}')
    pngs.add_argument("--custom", default=None, metavar="EXPERIMENT",
                      help="an experiment file describing --dataset under data.custom (--root: its data.root)")
    cell = parser.add_argument_group("re-evaluating a finished cell (writes cells/<cell id>@<protocol>/record.json)")
    cell.add_argument("--cell", default=None, help="a finished cell's folder, results/<experiment>/cells/<cell id>")
    cell.add_argument("--protocol", choices=PROTOCOLS, default=None,
                      help="ss, flip, ms or ms+flip with the paper's scales (0.5-1.75; LIP 0.75-1.25); "
                      "--checkpoint: default ss")
    cell.add_argument("--scales", type=float, nargs="+", default=None, help="test-scale ratios (overrides --protocol's)")
    cell.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="average with the mirror image")
    cell.add_argument("--mode", choices=("whole", "slide"), default=None, help="whole image or sliding window")
    cell.add_argument("--crop-size", type=_pair, default=None, metavar="HxW", help="sliding-window size")
    cell.add_argument("--stride", type=_pair, default=None, metavar="HxW", help="sliding-window step")
    cell.add_argument("--probs-before-resize", action=argparse.BooleanOptionalAction, default=None,
                      help="softmax before windows/augmentations are averaged (the paper's Swin-L protocol)")
    cell.add_argument("--batch-size", type=int, default=None, help="test images per batch")
    cell.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    cell.add_argument("--workers", type=int, default=0, help="data loader workers")
    released = parser.add_argument_group(
        "evaluating a released model (writes results/<experiment>/cells/released_<cell id>@<protocol>/record.json)")
    released.add_argument("--checkpoint", default=None,
                          help="a model.pt in our format (python -m harness.convert writes one from an official file)")
    released.add_argument("--framework", default=None, help="its framework (fcn, pspnet, deeplabv3, upernet, ...)")
    released.add_argument("--idr", action="store_true", help="the model has the IDR head")
    released.add_argument("--backbone", default="resnet50c", help="resnet50c (default) or swin_large_patch4_window12_384")
    released.add_argument("--experiment", default="released", help="results/<experiment>/ (default: released)")
    released.add_argument("--results", default="results", help="results root, a path or an s3:// URI (default: results)")
    released.add_argument("--source", default=None, help="the official file it was converted from (provenance)")
    released.add_argument("--url", default=None, help="where the official file is published (provenance)")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    return parser


def cell_changes(args: argparse.Namespace, dataset: str) -> dict:
    """The `eval` keys the command line changes (a protocol first, then explicit flags)."""
    changes = protocol_changes(args.protocol, dataset) if args.protocol else {}
    flags = {"scales": args.scales, "flip": args.flip, "mode": args.mode, "crop_size": args.crop_size,
             "stride": args.stride, "probs_before_resize": args.probs_before_resize, "batch_size": args.batch_size,
             "split": args.split}
    changes.update({key: value for key, value in flags.items() if value is not None})
    return changes


def _options_json(text: str | None):
    """The parsed `--options` JSON (an empty dict when not given); ValueError naming the flag."""
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"--options: not valid JSON ({exc})") from None


def _custom_options(args: argparse.Namespace) -> dict:
    """--custom: the described dataset's options (--root defaults to the experiment's data.root)."""
    from harness.config import ConfigError, custom_dataset

    try:
        root, options = custom_dataset(args.custom, args.dataset or "")
    except ConfigError as err:
        raise ValueError(str(err)) from None
    args.root = args.root or str(root)
    return options


def _score_folder(args: argparse.Namespace) -> tuple[str, dict, dict]:
    custom = _custom_options(args) if args.custom else {}
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--split", args.split), ("--root", args.root))
               if value is None]
    if missing:
        raise ValueError(f"--predictions needs {', '.join(missing)}")
    options = _options_json(args.options)
    if not isinstance(options, dict):
        raise ValueError("--options: expected a JSON object of dataset options")
    options = {**options, **custom}
    validate_options(args.dataset, options)
    dataset = build_dataset(args.dataset, args.root, args.split, options, train=False)
    metrics = score_predictions(dataset, args.predictions, args.ids)
    title = f"{args.dataset} {args.split}: {metrics['num_images']} images, predictions {args.predictions}"
    if "ids_note" in metrics:
        title += f"\nids: {metrics.pop('ids_note')}"
    return title, metrics, {"dataset": args.dataset, "split": args.split, "predictions": str(args.predictions)}


def _evaluate_cell(args: argparse.Namespace) -> tuple[str, dict, dict]:
    """`--cell` a folder, or an object-store URI of one (staged locally; the new record goes back up)."""
    from harness.storage import is_uri, parse_location, staged

    if not is_uri(args.cell):
        return _evaluate_cell_folder(args, Path(args.cell))
    location = parse_location(args.cell)
    with staged(location.parent, lambda name: name.startswith(location.name + "/")) as cells:
        title, metrics, extra = _evaluate_cell_folder(args, cells / location.name)
    return title.replace(str(cells), location.parent.display), metrics, extra


def _evaluate_cell_folder(args: argparse.Namespace, folder: Path) -> tuple[str, dict, dict]:
    _, cell = read_cell_record(folder)
    changes = cell_changes(args, cell.dataset)
    if not changes:
        raise ValueError("--cell: give the protocol to evaluate with (--protocol, --scales, --flip, --mode, ...)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out, record = evaluate_cell(folder, changes, device, root=args.root, loader_workers=args.workers)
    metrics = {**record["metrics"], "per_class_iou": record["per_class_iou"], "per_class_acc": record["per_class_acc"],
               "num_images": record["num_eval_images"]}
    title = (f"{record['evaluated_from']} re-evaluated ({protocol_tag_of(record)}), {record['num_eval_images']} "
             f"{record['config']['eval']['split']} images on {device} in {record['eval_time_s']:.1f}s; record {out}")
    return title, metrics, {"cell": record["cell_id"], "evaluated_from": record["evaluated_from"]}


def _evaluate_checkpoint(args: argparse.Namespace) -> tuple[str, dict, dict]:
    from harness.released import evaluate_checkpoint, setting_cell, with_protocol

    missing = [flag for flag, value in (("--framework", args.framework), ("--dataset", args.dataset)) if value is None]
    if missing:
        raise ValueError(f"--checkpoint needs {', '.join(missing)}")
    options = _options_json(args.options)
    cell = setting_cell(args.framework, args.idr, args.dataset, args.backbone, args.experiment, args.root, options)
    cell = with_protocol(cell, args.protocol or "ss", args.split)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out, record = evaluate_checkpoint(args.checkpoint, cell, device, args.results,
                                      source=Path(args.source) if args.source else None, url=args.url,
                                      loader_workers=args.workers)
    metrics = {**record["metrics"], "per_class_iou": record["per_class_iou"], "per_class_acc": record["per_class_acc"],
               "num_images": record["num_eval_images"]}
    title = (f"released model {record['provenance']['source_file']} as {record['cell_id']}, {record['num_eval_images']} "
             f"{cell.eval.split} images on {device} in {record['eval_time_s']:.1f}s; record {out.display}")
    return title, metrics, {"cell": record["cell_id"], "provenance": record["provenance"]}


def protocol_tag_of(record: dict) -> str:
    from harness.config import EvalConfig

    return protocol_tag(EvalConfig.model_validate(record["config"]["eval"]))


def main(argv: list[str] | None = None) -> int:
    """0 on success, 2 (one line on stderr) on bad input: arguments, data, predictions, cell."""
    parser = build_parser()

    def fail(message: str) -> int:
        print(" ".join(str(message).split()), file=sys.stderr)
        return 2

    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        return fail(f"{parser.prog}: error: {err}")

    chosen = [flag for flag in ("predictions", "cell", "checkpoint") if getattr(args, flag) is not None]
    if len(chosen) != 1:
        return fail("give one of --predictions (score saved PNGs), --cell (re-evaluate a finished cell) or "
                    "--checkpoint (evaluate a released model)")
    from harness.released import ReleasedError
    from harness.storage import StorageError

    run = {"predictions": _score_folder, "cell": _evaluate_cell, "checkpoint": _evaluate_checkpoint}[chosen[0]]
    try:
        title, metrics, about = run(args)
    except KeyError as exc:
        return fail(exc.args[0] if exc.args else str(exc))
    except (ValueError, DataError, PredictionError, CellError, ReleasedError, StorageError) as exc:
        return fail(str(exc))
    print(format_report(metrics, title))
    if args.json:
        write_text_atomic(Path(args.json), json.dumps({**about, **metrics}, indent=2, allow_nan=True) + "\n")
    return 0
