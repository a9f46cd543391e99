"""The paper's tables, regenerated from the result records (`python -m harness.tables`).

One file per job: ``settings`` (what a record's setting is), ``stats`` (seeds, paired tests),
``layout`` (Markdown / LaTeX / CSV), ``grouping`` (cells and their rows), one file per table
(``main_table``, ``frameworks``, ``sota``, ``complexity``), ``writer`` (build and write them all)
and ``command`` (the command line; its docstring gives the rules).
"""
from __future__ import annotations

from harness.tables.command import main
from harness.tables.complexity import gflops_of
from harness.tables.frameworks import fmt_paper
from harness.tables.layout import MISSING, markdown_table
from harness.tables.main_table import group_runs, main_rows, setting_labels
from harness.tables.settings import protocol_of
from harness.tables.stats import fmt_delta, mean_or_none, metric_values, paired
from harness.tables.writer import (
    TABLES_DIR,
    build_tables,
    load_index,
    write_tables,
    write_tables_brief,
)

__all__ = ["MISSING", "TABLES_DIR", "build_tables", "fmt_delta", "fmt_paper", "gflops_of", "group_runs", "load_index", "main", "main_rows", "mean_or_none", "markdown_table", "metric_values", "paired", "protocol_of", "setting_labels", "write_tables", "write_tables_brief"]
