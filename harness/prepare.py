"""`python -m harness.prepare <dataset> --root PATH [--check-only] [--allow-partial]`

Turns an unpacked official release under ``PATH/<dataset>/`` into the layout the loaders read
(see ``datasets/README.md``), then checks every split against the official split sizes.

* Conversion where the release does not ship train-id PNGs: PASCAL-Context-59 (``trainval/*.mat``
  -> ``SegmentationClassContext/*.png``) and COCO-Stuff-164k (``stuffthingmaps`` PNGs, or the
  stuff/instances JSON, -> ``*_labelTrainIds.png``). The other datasets need nothing.
* Idempotent: an output that exists is skipped. Each output is written to a temporary file in
  the same folder and renamed into place, so an interrupted run leaves no half-written PNG and a
  second run picks up where the first stopped.
* ``--check-only`` converts nothing and reports what is missing or still to convert.
* Split check: image/label pairs per split against the official size, files the loaders would
  miss (an image without its label, a listed id without files) and extra files. A count that
  differs from the official one, or extra files, exit 1 unless ``--allow-partial``; missing files
  and unconverted labels always exit 1, since training would fail on them.

A user's own dataset (``data.custom.<name>`` of an experiment) is checked the same way with
``python -m harness.prepare <name> --experiment <file> --verify``: its splits have no official
size, so a check passes when every image has its label and back.

Exit status: 0 ok, 1 split check failed, 2 bad input (unknown dataset, missing root, unreadable
or invalid file), reported in one line.

This module only parses arguments and reports; each dataset's conversion and split check is its
:class:`~harness.data.preparation.Preparer` (in its module under ``harness/data/``), built from the
shared pieces in :mod:`harness.data.preparation`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.data import DataError, preparers
from harness.data.preparation import REAL_DATASETS, run_jobs



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from harness.cli import Parser, parse_or_exit

    parser = Parser(
        prog="python -m harness.prepare",
        description="Convert an unpacked official release into the training layout and check its split sizes.",
    )
    parser.add_argument("dataset", help=f"one of: {', '.join(REAL_DATASETS)}")
    parser.add_argument("--root", default=None, help="data root holding <dataset>/ (default: datasets)")
    parser.add_argument("--check-only", action="store_true", help="convert nothing; only report")
    parser.add_argument(
        "--allow-partial", action="store_true", help="accept split sizes that differ from the official release"
    )
    parser.add_argument("--verify", action="store_true",
                        help="then decode every image and label once and stamp the dataset as verified")
    parser.add_argument("--experiment", default=None, type=Path,
                        help="an experiment file describing DATASET under data.custom (its folders, classes); "
                             "--root defaults to its data.root")
    args = parse_or_exit(parser, argv)
    args.root_given = args.root is not None
    args.root = args.root or "datasets"
    return args


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    known = preparers()
    options: dict = {}
    if args.experiment is not None:
        from harness.config import ConfigError, custom_dataset
        from harness.data.building import spec_for

        try:
            data_root, options = custom_dataset(args.experiment, args.dataset)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        known = {args.dataset: spec_for(args.dataset, options).preparer}
        args.root = args.root if args.root_given else str(data_root)
    if args.dataset not in known:
        print(f"error: unknown dataset {args.dataset!r}; allowed: {', '.join(sorted(known))} "
              "(your own dataset: describe it under data.custom and pass --experiment)", file=sys.stderr)
        return 2
    prep = known[args.dataset]
    root = Path(args.root).expanduser()
    console = Console(stderr=True)
    try:
        if prep.jobs is None:
            prep.check_split(root, prep.splits[0])  # a missing folder is reported before anything else
            print(f"{prep.name}: nothing to convert (the loader reads the release's label files directly)")
        else:
            jobs = prep.jobs(root)
            if args.check_only:
                todo = sum(not job.output.is_file() for job in jobs)
                print(f"{prep.name}: {todo:,} of {len(jobs):,} label file(s) still to convert (--check-only)")
            else:
                written, skipped = run_jobs(jobs, prep.describe or f"{prep.name}: converting", console)
                print(f"{prep.name}: converted {written:,} label file(s), {skipped:,} already done")
        checks = [prep.check_split(root, split) for split in prep.splits]
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for check in checks:
        for line in check.lines():
            print(line)
    if all(check.ok(args.allow_partial) for check in checks):
        partial = not all(check.ok() for check in checks)
        print(f"{prep.name}: ready" + (" (partial: accepted with --allow-partial)" if partial else ""))
        if args.verify:
            from harness.data.verify import run_verify

            return run_verify(prep.name, root, console, options)
        return 0
    if any(check.pending for check in checks):
        hint = "run without --check-only to convert the labels"
    elif any(check.missing for check in checks):
        hint = "the loaders need the missing files listed above"
    else:
        hint = "pass --allow-partial to accept a partial or modified release"
    print(f"{prep.name}: split check failed ({hint})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
