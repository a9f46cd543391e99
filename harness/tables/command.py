"""`python -m harness.tables results/<experiment>`: the paper's tables, regenerated from the records.

Writes into the results folder

* `table.md`, `table.csv`: baseline vs +IDR per framework x dataset x backbone (the quickstart
  table) and, in `table.md`, the per-class IoU of each dataset's focus classes;
* `tables/<name>.{md,tex,csv}` for `quickstart`, `focus_classes`, `frameworks` (the four
  frameworks with and without IDR, one block of rows per dataset), `frameworks_overview` (the
  same in the paper's layout: frameworks x datasets), `sota` (UPerNet + Swin-L, per test
  protocol), `complexity` (params, GFLOPs, latency) and, when the folder holds a context scheme,
  `context_schemes` (IDR beside the schemes by paradigm; harness/tables/context_schemes.py; its
  complexity from `harness.measure --json` results saved under `measure/*.json`);

and prints the Markdown. LaTeX uses booktabs rules.

Rules
    * A cell that has no record shows "—"; so does every paper figure that is not in
      `results/reference/paper.csv` (see :mod:`harness.reference`).
    * Records are grouped by (framework, dataset, backbone, IDR on/off, *setting*), the setting
      being the resolved configuration without the seed and without keys that do not change
      the result (experiment name, data root, Ray scaling, logging, loader processes, threads,
      checkpoint interval, retries, eval batch size). Records of different settings are never
      averaged together. Missing keys of older records take the schema's defaults.
    * Several seeds: mean ± std (n=seeds). +IDR vs baseline is paired by seed: mean difference
      ± its std and a paired t-test p-value (scipy.stats.ttest_rel), "—" with fewer than two pairs.
    * Each cell's setting is compared with the paper's setting for that cell (backbone, output
      stride, pretrained weights, widths, crop, batch size, schedule, optimiser, test protocol;
      `harness.reference`). A cell that differs is shown in its own row marked "†k"; footnote
      †k lists the differing keys, ours and the paper's value. Such a row is never merged with
      the paper-setting row.
    * The test protocol comes from the record's `config.eval`: `scales` (several: ms), `flip`;
      missing keys mean single scale, no flip (ss).
"""
from __future__ import annotations

import sys
from pathlib import Path

from harness import reference as ref
from harness.cli import Parser, parse_or_exit
from harness.storage import StorageError, results_folder, safe_error, staged
from harness.tables.writer import write_tables


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m harness.tables", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", help="results/<experiment>, or its s3:// URI (see docs/cluster.md)")
    args = parse_or_exit(parser, argv)
    try:
        location = results_folder(args.results_dir)
        with staged(location, lambda name: name.endswith("/record.json")) as folder:
            print(write_tables(folder))
    except (StorageError, OSError) as err:
        print(f"error: {safe_error(err)}", file=sys.stderr)
        return 2
    except ref.ReferenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
