"""Released models: the official checkpoints scored in our harness, without training.

* :func:`evaluate_checkpoint` (``python -m harness.evaluate --checkpoint model.pt --framework F
  [--idr] --dataset D ...``) evaluates a ``model.pt`` in our format (what ``harness.convert``
  writes from an official checkpoint, or a trained cell's ``model.pt``) under the setting of that
  framework x dataset in the shipped experiment files (``experiments/full_table.yaml``; the context
  schemes ``experiments/context_schemes.yaml``; ``experiments/sota.yaml`` for Swin) and writes a
  record with its provenance (source file name and sha256, "released model", no training) under
  ``results/<experiment>/cells/released_<cell id>@<test protocol>/record.json``.
  ``harness.tables`` shows such records as rows of their own, marked "(released)".
* ``python -m harness.released experiments/released.yaml [--dry-run] [--only PATTERN]`` reads the
  list of released checkpoints, fails (exit 2) naming every file that is not on disk and where it
  comes from (nothing is downloaded), converts each with ``harness.convert``, evaluates it under
  each listed protocol and writes ``results/<name>/tables/released.md``.

Both take ``--results`` as a path or an object-store URI (``s3://bucket/prefix?...``, see
docs/cluster.md): records and converted checkpoints go through `harness.storage`, and the tables
are written in a staged copy of the experiment's records and uploaded.
"""
from __future__ import annotations

import argparse
import fnmatch
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field, ValidationError, model_validator

from harness.fileio import sha256_of_file, temporary_directory, write_text_atomic
from harness.config import (
    Cell,
    ConfigError,
    DataConfig,
    EvalConfig,
    Strict,
    expand_cells,
    format_validation_error,
    load_experiment,
)
from harness.storage import Location, StorageError, check_reachable, parse_location, safe_error, staged, upload_file, write_text

REPO = Path(__file__).resolve().parent.parent
LIST_KIND = "released_models"  # `kind:` of a released-models file (not an experiment)
SETTING_FILES = {"cnn": REPO / "experiments" / "full_table.yaml", "swin": REPO / "experiments" / "sota.yaml"}
SCHEME_SETTING_FILE = REPO / "experiments" / "context_schemes.yaml"  # R-50-D8 context schemes (MCIBI++, ISNet, ...)
CONVERT_BACKBONES = {"cnn": "resnet50c", "swin": "swin_large"}  # harness.convert's --backbone
TABLE_NAME = "released"
Protocol = Literal["ss", "flip", "ms+flip"]


class ReleasedError(Exception):
    """Bad input about a released model; each line of the message is one problem."""


# ----------------------------------------------------------------------------- one checkpoint


def backbone_family(backbone: str) -> str:
    from models.backbones import resolve_name

    return "swin" if "swin" in resolve_name(backbone) else "cnn"


def setting_file(framework: str, backbone: str) -> Path:
    """The shipped experiment file whose cell of `framework` is the official setting of its checkpoint."""
    from models.registry import carries_plugin

    family = backbone_family(backbone)
    return SCHEME_SETTING_FILE if family == "cnn" and carries_plugin(framework) else SETTING_FILES[family]


def setting_cell(framework: str, idr: bool, dataset: str, backbone: str, experiment: str,
                 data_root: str | None = None, options: dict[str, Any] | None = None) -> Cell:
    """The cell of the shipped experiment file that describes how this model was trained officially."""
    from harness.data import validate_options

    source = setting_file(framework, backbone)
    overrides = [f"name={experiment}", f"grid.frameworks=[{framework}]", f"grid.datasets=[{dataset}]",
                 f"grid.idr=[{str(idr).lower()}]", "grid.seeds=[0]", "grid.sweep={}", f"model.backbone={backbone}"]
    if data_root is not None:
        overrides.append(f"data.root={data_root}")
    try:
        cell = expand_cells(load_experiment(source, overrides))[0]
        validate_options(dataset, {**cell.data_options, **(options or {})})
    except (ConfigError, ValueError) as err:
        raise ReleasedError(f"{framework}{'+idr' if idr else ''} on {dataset} ({backbone}): {err}") from None
    return cell.model_copy(update={"data_options": {**cell.data_options, **(options or {})}})


def with_protocol(cell: Cell, protocol: str, split: str | None = None) -> Cell:
    """`cell` evaluated with a named test protocol (ss, flip, ms+flip; the paper's scales)."""
    from harness.evaluate import protocol_changes

    changes = protocol_changes(protocol, cell.dataset)
    if split is not None:
        changes["split"] = split
    return cell.model_copy(update={"eval": EvalConfig.model_validate({**cell.eval.model_dump(), **changes})})


def released_id(cell: Cell) -> str:
    from harness.evaluate import protocol_tag

    return f"released_{cell.cell_id}@{protocol_tag(cell.eval)}"


# what `harness.evaluate --checkpoint` asks for instead when a checkpoint holds another model
CHECKPOINT_FLAGS = {
    "idr": "add --idr",
    "baseline": "drop --idr",
    "framework": "use --framework {framework}{idr}",
    "classes": "use --dataset {datasets}",
}


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a model.pt in our format ({"model": state dict}); weights only, no code."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, AttributeError, TypeError) as exc:
        raise ReleasedError(f"{path}: cannot load with weights_only=True ({' '.join(str(exc).split())[:200]})") from None
    state = saved.get("model") if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReleasedError(f"{path}: expected our model.pt format, {{'model': state dict}} (convert an official "
                            f"checkpoint with python -m harness.convert first)")
    return state


def build_released_model(cell: Cell, state: dict[str, torch.Tensor], path: Path, num_classes: int,
                         ignore_index: int) -> torch.nn.Module:
    from models import build_segmentor

    model = build_segmentor(cell.framework, cell.idr, num_classes, cell.model.model_copy(update={"pretrained": None}),
                            ignore_index)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        from harness.checkpoint_fit import describe, diagnose

        finding = diagnose(state, model, cell.framework, cell.idr, num_classes, cell.model)
        if finding is not None:
            raise ReleasedError(f"{path}: {describe(finding, CHECKPOINT_FLAGS)}") from None
        raise ReleasedError(f"{path}: does not fit {cell.framework}{'+idr' if cell.idr else ''} on {cell.dataset} "
                            f"with {num_classes} classes ({' '.join(str(exc).split())[:300]})") from None
    return model


def provenance(checkpoint: Path, source: Path | None, url: str | None, stored_as: str | None = None) -> dict[str, Any]:
    """Where the weights come from; `stored_as` names the checkpoint where it is kept (default: its path)."""
    from harness.records import RELEASED

    source = Path(source) if source is not None else checkpoint
    if not source.is_file():
        raise ReleasedError(f"{source}: no such source file (--source names the official checkpoint)")
    return {"kind": RELEASED, "trained": False, "source_file": source.name, "source_sha256": sha256_of_file(source),
            "url": url, "checkpoint_file": stored_as or str(checkpoint), "checkpoint_sha256": sha256_of_file(checkpoint)}


def released_record(cell: Cell, metrics: dict, params: int, eval_time: float, device: torch.device,
                    origin: dict[str, Any]) -> dict:
    """A record like a trained cell's (`records.build_record`), without training figures, with its provenance."""
    from harness.records import build_record

    payload = {"metrics": metrics, "params": params, "complexity": {}, "train_time_s": None, "eval_time_s": eval_time,
               "iterations_per_s": None, "world_size": 1, "device": str(device)}
    record = build_record(cell, payload, eval_time)
    del record["resumed_from_iteration"]  # nothing was trained
    return {**record, "cell_id": released_id(cell), "model_file": origin["checkpoint_file"], "provenance": origin}


def evaluate_checkpoint(checkpoint: str | Path, cell: Cell, device: torch.device, results_root: str | Path | Location, *,
                        source: Path | None = None, url: str | None = None, loader_workers: int = 0,
                        on_batch: Callable[[int, int], None] | None = None,
                        stored_as: str | None = None) -> tuple[Location, dict]:
    """Evaluate a local model.pt (our format) as `cell` and write its released-model record under
    `results_root` (a path or an object-store URI); (record's location, record).

    Raises ReleasedError (or DataError, StorageError) before anything is written."""
    import json

    from harness.data import build_dataset
    from harness.evaluate import evaluate, protocol_kwargs
    from harness.records import RECORD_NAME

    checkpoint = Path(checkpoint)
    root = parse_location(results_root)
    if not checkpoint.is_file():
        raise ReleasedError(f"{checkpoint}: no such checkpoint file")
    state = load_state(checkpoint)
    dataset = build_dataset(cell.dataset, cell.data_root, cell.eval.split, cell.data_options, train=False)
    model = build_released_model(cell, state, checkpoint, dataset.card.num_classes, dataset.card.ignore_index)
    origin = provenance(checkpoint, source, url, stored_as)
    model.to(device)
    start = time.perf_counter()
    metrics = evaluate(model, dataset, device, cell.eval.batch_size, loader_workers=loader_workers, on_batch=on_batch,
                       **protocol_kwargs(cell.eval))
    params = sum(p.numel() for p in model.parameters())
    record = released_record(cell, metrics, params, time.perf_counter() - start, device, origin)
    out = root / cell.experiment / "cells" / record["cell_id"] / RECORD_NAME
    write_text(out, json.dumps(record, indent=2, sort_keys=False, allow_nan=True))
    return out, record


# ----------------------------------------------------------------------------- the list of released checkpoints


class ReleasedModel(Strict):
    file: str = Field(description="the official checkpoint's file name, e.g. idrnet_fcn_resnet50os8_ade20k.pth")
    url: str = Field(description="where the file is published (named in the error when it is missing)")
    framework: str
    idr: bool
    dataset: str
    backbone: str = "resnet50c"
    protocols: list[Protocol] = Field(default_factory=lambda: ["ss"], min_length=1)
    path: str | None = Field(default=None, description="local path; default <weights_dir>/<file>")

    @model_validator(mode="after")
    def _known(self) -> ReleasedModel:
        from harness.data import dataset_names
        from models.registry import all_framework_names

        if self.framework not in all_framework_names():
            raise ValueError(f"unknown framework {self.framework!r}; allowed: {', '.join(all_framework_names())}")
        if self.dataset not in dataset_names():
            raise ValueError(f"unknown dataset {self.dataset!r}; allowed: {', '.join(dataset_names())}")
        return self


class ReleasedList(Strict):
    kind: Literal["released_models"]
    name: str = Field(default="released", pattern=r"^[A-Za-z0-9_.-]+$", description="results/<name>/")
    description: str = ""
    weights_dir: str = "weights"
    data: DataConfig = DataConfig()
    models: list[ReleasedModel] = Field(min_length=1)


def load_released(path: str | Path) -> ReleasedList:
    """Read and validate a released-models file; ReleasedError with one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ReleasedError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ReleasedError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict) or raw.get("kind") != LIST_KIND:
        raise ReleasedError(f"{path}: expected a released-models file (kind: {LIST_KIND})")
    try:
        return ReleasedList.model_validate(raw)
    except ValidationError as err:
        raise ReleasedError(format_validation_error(str(path), err)) from None


@dataclass
class Job:
    """One released checkpoint: where it is, where its conversion goes (below the experiment's
    results, e.g. `converted/<stem>.pt`), the cells it is scored as."""

    entry: ReleasedModel
    source: Path
    converted: str
    cells: list[Cell]


def plan_jobs(listing: ReleasedList, list_path: Path, patterns: list[str], data_root: str | None = None) -> list[Job]:
    """The selected entries (--only: shell patterns on the file name) with their cells."""
    entries = [e for e in listing.models if not patterns or any(fnmatch.fnmatchcase(e.file, p) for p in patterns)]
    if not entries:
        raise ReleasedError(f"{list_path}: --only {' '.join(patterns)} matches none of the {len(listing.models)} models")
    root = data_root or listing.data.root
    jobs = []
    for entry in entries:
        options = listing.data.options.get(entry.dataset, {})
        base = setting_cell(entry.framework, entry.idr, entry.dataset, entry.backbone, listing.name, root, options)
        source = Path(entry.path) if entry.path else Path(listing.weights_dir) / entry.file
        converted = f"converted/{Path(entry.file).stem}.pt"
        jobs.append(Job(entry, source, converted, [with_protocol(base, p) for p in entry.protocols]))
    return jobs


def missing_files(jobs: list[Job]) -> list[str]:
    return [f"{job.source}: missing; download it from {job.entry.url} (nothing is downloaded at run time)"
            for job in jobs if not job.source.is_file()]


def check_data(jobs: list[Job]) -> None:
    """Open every dataset split the plan evaluates; DataError listing each broken one."""
    from harness.data import DataError, build_dataset

    problems, seen = [], set()
    for cell in (cell for job in jobs for cell in job.cells):
        key = (cell.dataset, cell.data_root, cell.eval.split, repr(sorted(cell.data_options.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            build_dataset(cell.dataset, cell.data_root, cell.eval.split, cell.data_options, train=False).load(0)
        except DataError as err:
            problems.append(str(err))
    if problems:
        raise DataError("\n".join(problems))


def convert_job(job: Job, target: Path) -> None:
    """Official checkpoint -> our model.pt at `target` with harness.convert; one line per problem otherwise."""
    from harness.convert import ConversionError, convert_file

    entry = job.entry
    folder = target.parent
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{target.name}.partial"
    try:
        convert_file(job.source, partial, framework=entry.framework, idr=entry.idr, dataset=entry.dataset,
                     backbone=CONVERT_BACKBONES[backbone_family(entry.backbone)])
    except ConversionError as err:
        partial.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise ReleasedError("\n".join(f"{job.source}: {problem}" for problem in err.problems)) from None
    partial.replace(target)


@contextmanager
def converted_checkpoint(job: Job, experiment_dir: Location) -> Iterator[Path]:
    """The job's converted model.pt as a local file: in place under a local results folder; for an
    object store, in a temporary folder and uploaded to `<experiment_dir>/<job.converted>`."""
    if experiment_dir.is_local:
        target = experiment_dir.local_path() / job.converted
        convert_job(job, target)
        yield target
        return
    with temporary_directory("idrbench-released-") as folder:
        target = folder / Path(job.converted).name
        convert_job(job, target)
        upload_file(target, experiment_dir / job.converted)
        yield target


def print_plan(jobs: list[Job], experiment_dir: Location) -> None:
    print(f"{len(jobs)} released model(s), {sum(len(j.cells) for j in jobs)} evaluation(s); "
          f"table: {(experiment_dir / 'tables' / (TABLE_NAME + '.md')).display}")
    for job in jobs:
        state = "present" if job.source.is_file() else f"MISSING (from {job.entry.url})"
        print(f"{job.entry.file}: {state}")
        print(f"  {job.source} -> {(experiment_dir / job.converted).display}")
        for cell in job.cells:
            print(f"  evaluate as {released_id(cell)} on {cell.dataset} {cell.eval.split}")


# ----------------------------------------------------------------------------- the released-models table


def released_rows(records: list[dict], index: dict) -> list[list[str]]:
    """One row per released record: model, dataset, protocols, ours, the paper's figure, difference."""
    from harness import reference as ref
    from harness.tables import MISSING, fmt_paper, fmt_delta, protocol_of

    rows = []
    for rec in sorted(records, key=lambda r: (r["dataset"], r["backbone"], r["framework"], not r["idr"], r["cell_id"])):
        protocol = protocol_of((rec.get("config") or {}).get("eval"))
        backbone = ref.canonical_backbone(rec["backbone"])
        paper = index.get((rec["framework"], backbone, rec["dataset"], protocol, "mIoU", "idr" if rec["idr"] else "baseline"))
        ours = (rec.get("metrics") or {}).get("mIoU")
        model = f"{ref.label('framework', rec['framework'])}{' + IDR' if rec['idr'] else ''}"
        rows.append([model, ref.label("backbone", backbone), ref.label("dataset", rec["dataset"]), protocol,
                     rec.get("label_protocol", MISSING), rec["provenance"]["source_file"],
                     fmt_paper(ours), fmt_paper(paper), fmt_delta(None if ours is None or paper is None else ours - paper)])
    return rows


def write_released_table(results_dir: Path, index: dict | None = None) -> str:
    """tables/released.md of a results folder: its released-model records beside the paper's figures."""
    from harness.records import find_records, is_released
    from harness.tables import TABLES_DIR, load_index, markdown_table

    records = [r for r in find_records(results_dir) if is_released(r)]
    columns = ["model", "backbone", "dataset", "test protocol", "label protocol", "checkpoint", "mIoU ours",
               "mIoU paper", "ours − paper"]
    text = (f"## Released models, evaluated here (no training)\n\n"
            f"{markdown_table(columns, released_rows(records, load_index() if index is None else index))}\n"
            "ours: the official checkpoint converted to our model and scored by our evaluation; paper: the official "
            "model zoo figure (results/reference/paper.csv); — : none.\n")
    out = results_dir / TABLES_DIR / f"{TABLE_NAME}.md"
    write_text_atomic(out, text)
    return text


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    from harness.cli import Parser

    parser = Parser(prog="python -m harness.released", description="Convert and evaluate the released checkpoints "
                    "listed in a released-models file (no training, no download).")
    parser.add_argument("listing", help="released-models file, e.g. experiments/released.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (files, conversions, evaluations)")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="only the checkpoints whose file name matches this shell pattern; repeatable")
    parser.add_argument("--results", default="results",
                        help="results root, a path or an s3:// URI (default: results; see docs/cluster.md)")
    parser.add_argument("--root", default=None, help="data root (default: data.root of the file)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--workers", type=int, default=0, help="data loader workers")
    return parser


def run_jobs(jobs: list[Job], results_root: Location, experiment: str, device: torch.device, workers: int) -> None:
    experiment_dir = results_root / experiment
    for job in jobs:
        with converted_checkpoint(job, experiment_dir) as checkpoint:
            for cell in job.cells:
                out, record = evaluate_checkpoint(checkpoint, cell, device, results_root, source=job.source,
                                                  url=job.entry.url, loader_workers=workers,
                                                  stored_as=(experiment_dir / job.converted).display)
                print(f"{record['cell_id']}: mIoU {record['metrics']['mIoU']:.2f} ({record['eval_time_s']:.1f}s); "
                      f"{out.display}")


def write_all_tables(experiment_dir: Location) -> str:
    """harness.tables' tables and tables/released.md, where the records are (staged for an object store)."""
    from harness.tables import write_tables

    with staged(experiment_dir, lambda name: name.endswith("/record.json")) as folder:
        write_tables(folder)  # the usual tables too, released rows marked "(released)"
        return write_released_table(folder)


def main(argv: list[str] | None = None) -> int:
    """0 done; 2 bad input (file, missing checkpoints, data, conversion, results location), one line per problem."""
    from harness.cli import parse_or_exit
    from harness.data import DataError

    args = parse_or_exit(build_parser(), argv)
    try:
        results_root = parse_location(args.results)
        listing = load_released(args.listing)
        jobs = plan_jobs(listing, Path(args.listing), args.only, args.root)
        if args.dry_run:
            print_plan(jobs, results_root / listing.name)
            return 0
        missing = missing_files(jobs)
        if missing:
            raise ReleasedError("\n".join(missing))
        check_data(jobs)
        check_reachable(results_root)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        run_jobs(jobs, results_root, listing.name, device, args.workers)
        print(write_all_tables(results_root / listing.name))
    except (ReleasedError, DataError, StorageError) as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except OSError as err:  # the object store went away for longer than the storage layer waits
        print(f"error: {safe_error(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
