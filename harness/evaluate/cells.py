"""Re-evaluating a finished cell's saved model under another test protocol, without retraining."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from harness.data import build_dataset
from harness.evaluate.inference import evaluate, protocol_kwargs

if TYPE_CHECKING:
    from harness.config import Cell, EvalConfig


PROTOCOLS = ("ss", "flip", "ms", "ms+flip")


class CellError(Exception):
    """A finished cell that cannot be re-evaluated; the message is the whole one-line report."""


def paper_ms_scales(dataset: str) -> list[float]:
    """The paper's multi-scale ratios: 0.5-1.75 (LIP: 0.75, 1, 1.25)."""
    from harness import reference as ref

    return list(ref.LIP_MS_SCALES if dataset == "lip" else ref.SWIN_MS_SCALES)


def protocol_changes(protocol: str, dataset: str) -> dict:
    """`eval` keys of a named protocol: ss, flip, ms or ms+flip with the paper's scales."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    return {"flip": protocol.endswith("flip"), "scales": paper_ms_scales(dataset) if protocol.startswith("ms") else [1.0]}


def protocol_tag(eval_cfg) -> str:
    """A readable name of a test protocol, unique per protocol: e.g. `slide640x640s426_ms0.5-1.75x6+flip`."""
    mode = eval_cfg.mode
    if mode == "slide":
        crop, stride = eval_cfg.crop_size, eval_cfg.stride
        mode += f"{crop[0]}x{crop[1]}s{stride[0]}" + (f"x{stride[1]}" if stride[1] != stride[0] else "")
    scales = list(eval_cfg.scales)
    if scales == [1.0]:
        tag = "ss"
    else:
        tag = "ms" + "-".join(f"{r:g}" for r in scales)
    if eval_cfg.flip:
        tag = "flip" if tag == "ss" else tag + "+flip"
    if eval_cfg.probs_before_resize:
        tag += "_probs"
    return f"{mode}_{tag}"


def read_cell_record(cell_dir: Path) -> tuple[dict, Cell]:
    """A finished cell's record and its resolved configuration; CellError if it has none."""
    from pydantic import ValidationError

    from harness.config import Cell
    from harness.records import RECORD_NAME, read_record

    record_path = Path(cell_dir) / RECORD_NAME
    if not record_path.is_file():
        raise CellError(f"{cell_dir}: no {RECORD_NAME}; expected the folder of a finished cell, "
                        "results/<experiment>/cells/<cell id>")
    try:
        record = read_record(record_path)
        return record, Cell.model_validate(record["config"])
    except (OSError, ValueError, KeyError, ValidationError) as exc:
        raise CellError(f"{record_path}: not a readable cell record ({' '.join(str(exc).split())[:200]})") from None


def _new_protocol(cell_dir: Path, cell: Cell, changes: dict) -> EvalConfig:
    """The cell's `eval` with `changes` applied; CellError if invalid or the same as before."""
    from pydantic import ValidationError

    from harness.config import EvalConfig
    from harness.records import RECORD_NAME

    try:
        new_eval = EvalConfig.model_validate({**cell.eval.model_dump(), **changes})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["eval", *(str(p) for p in first["loc"])])
        raise CellError(f"{where}: {first['msg']}") from None
    if new_eval == cell.eval:
        raise CellError(f"{cell_dir}: already evaluated with this protocol ({protocol_tag(new_eval)}); see {RECORD_NAME}")
    return new_eval


def _trained_model(model_path: Path, cell: Cell, card) -> torch.nn.Module:
    """The cell's model with the weights of its `model.pt` (CellError naming the file otherwise)."""
    from models import build_segmentor

    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)["model"]
    except Exception as exc:  # unpickling errors, a truncated file, a foreign checkpoint
        raise CellError(f"{model_path}: cannot load the model ({' '.join(str(exc).split())[:200]})") from None
    model = build_segmentor(cell.framework, cell.idr, card.num_classes, cell.model.model_copy(update={"pretrained": None}),
                            card.ignore_index)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CellError(f"{model_path}: does not fit the cell's model ({' '.join(str(exc).split())[:200]})") from None
    return model


def _derived_record(record: dict, cell: Cell, new_eval: EvalConfig, metrics: dict, model_file: str, extra: dict) -> dict:
    """The cell's record with the new protocol's `config.eval` and metrics, naming the cell it came from."""
    from harness.records import build_environment

    measured_under_old_protocol = ("context_flip", "learning_curve")
    return {
        **{key: value for key, value in record.items() if key not in measured_under_old_protocol},
        "cell_id": f"{cell.cell_id}@{protocol_tag(new_eval)}",
        "config": cell.model_copy(update={"eval": new_eval}).model_dump(mode="json"),
        "metrics": {key: metrics[key] for key in ("mIoU", "mAcc", "aAcc")},
        "per_class_iou": metrics["per_class_iou"],
        "per_class_acc": metrics["per_class_acc"],
        "num_eval_images": metrics["num_images"],
        **extra,
        "evaluated_from": cell.cell_id,
        "model_file": model_file,
        **build_environment(),
    }


def evaluate_cell(
    cell_dir: str | Path,
    changes: dict,
    device: torch.device,
    root: str | None = None,
    loader_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[Path, dict]:
    """Evaluate a finished cell's saved model (`model.pt`) under another test protocol.

    `changes` are `eval` keys (mode, crop_size, stride, flip, scales, probs_before_resize,
    batch_size, split). Writes, only when evaluation succeeded, a record of its own beside the
    cell's, `cells/<cell id>@<protocol tag>/record.json`: the cell's record (training figures,
    params, FLOPs) with the new `config.eval`, the new metrics, and `evaluated_from` naming the
    cell. Tables place it by its protocol like any record. Returns (record path, record).
    """
    from harness.fileio import sha256_of_file
    from harness.records import RECORD_NAME, write_json_atomic

    cell_dir = Path(cell_dir)
    record, cell = read_cell_record(cell_dir)
    if record.get("evaluated_from"):
        raise CellError(f"{cell_dir}: is a re-evaluation of cell {record['evaluated_from']}; pass that cell's folder")
    new_eval = _new_protocol(cell_dir, cell, changes)
    model_path = cell_dir / record.get("model_file", "model.pt")
    if not model_path.is_file():
        raise CellError(f"{model_path}: the cell's trained model is missing (written when the cell finished)")
    if record.get("model_sha256") and sha256_of_file(model_path) != record["model_sha256"]:
        raise CellError(f"{model_path}: damaged (its sha256 differs from the record's model_sha256); "
                        "train the cell again (--only CELL --rerun)")
    dataset = build_dataset(cell.dataset, root or cell.data_root, new_eval.split, cell.data_options, train=False)
    model = _trained_model(model_path, cell, dataset.card).to(device)
    start = time.perf_counter()
    metrics = evaluate(model, dataset, device, new_eval.batch_size, loader_workers=loader_workers, on_batch=on_batch,
                       **protocol_kwargs(new_eval))
    timing = {"eval_time_s": time.perf_counter() - start, "eval_device": str(device)}
    derived = _derived_record(record, cell, new_eval, metrics, f"../{cell_dir.name}/{model_path.name}", timing)
    out = cell_dir.parent / derived["cell_id"] / RECORD_NAME
    write_json_atomic(out, derived)
    return out, derived
