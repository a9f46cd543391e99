"""Results are created with the user's umask (0644 under 022), and still written atomically."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness.config import load_experiment
from harness.fileio import (
    atomic_target,
    remove_partials,
    write_bytes_atomic,
    write_text_atomic,
)
from harness.plots import plot_all
from harness.records import store_cell
from harness.run import resolve_cells
from harness.tables import write_tables
from harness.train import PrintReporter, run_cell
from tests.conftest import tiny_experiment


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    previous = os.umask(0o022)
    yield set_mask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "file_mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_writes_follow_the_umask(umask, tmp_path, mask, file_mode):
    umask(mask)
    write_text_atomic(tmp_path / "a" / "x.json", "{}")
    write_bytes_atomic(tmp_path / "y.bin", b"\0")
    assert _mode(tmp_path / "a" / "x.json") == file_mode
    assert _mode(tmp_path / "y.bin") == file_mode
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "x.json", "y.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "record.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_target(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_remove_partials_finds_what_a_killed_writer_left(tmp_path):
    cell = tmp_path / "cells" / "c"
    cell.mkdir(parents=True)
    (cell / ".record.json.partial-123-abcd1234").write_text("{")
    (cell / "iter_00000002.partial").mkdir()
    (cell / "record.json").write_text("{}")
    assert len(remove_partials(tmp_path)) == 2
    assert [p.name for p in cell.iterdir()] == ["record.json"]


def test_records_checkpoints_tables_and_plots_are_readable_by_the_team(umask, write_experiment, tmp_path):
    exp = tiny_experiment("shared", grid={"idr": [True]}, train={"iterations": 2, "checkpoint_interval": 1})
    cell = resolve_cells(load_experiment(write_experiment(exp)))[0]
    checkpoints = tmp_path / "ckpt"
    payload = run_cell(cell, PrintReporter(checkpoints, quiet=True))
    results = tmp_path / "results" / "shared"
    store_cell(results, cell, payload, wall_time_s=1.0)
    write_tables(results)
    plot_all(results, log=lambda *_: None)
    written = [p for p in [*results.rglob("*"), *checkpoints.rglob("*")] if p.is_file()]
    kinds = {p.suffix for p in written}
    assert {".json", ".pt", ".md", ".csv", ".tex", ".png"} <= kinds, kinds
    assert {str(p): oct(_mode(p)) for p in written if _mode(p) != 0o644} == {}
    folders = [p for p in checkpoints.rglob("*") if p.is_dir()]
    assert folders and all(_mode(p) == 0o755 for p in folders)
