"""The live progress display: cells done / running / left, each cell's stage, step and loss."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


@dataclass
class CellState:
    cell_id: str
    status: str = "waiting"  # waiting | running | done | cached | failed
    stage: str = ""
    step: int = 0
    total: int = 0
    loss: float | None = None
    started: float | None = None
    finished: float | None = None
    miou: float | None = None
    error: str = ""

    @property
    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.monotonic()) - self.started


@dataclass
class Board:
    """Holds every cell's state; renders with rich on a terminal, plain lines elsewhere."""

    cell_ids: list[str]
    console: Console = field(default_factory=lambda: Console(stderr=False))
    cells: dict[str, CellState] = field(init=False)
    _live: Live | None = field(default=None, init=False)
    _last_plain: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.cells = {cid: CellState(cid) for cid in self.cell_ids}

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal and sys.stdout.isatty()

    def __enter__(self) -> "Board":
        if self.interactive:
            self._live = Live(self.render(), console=self.console, refresh_per_second=1, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._live = None

    def counts(self) -> dict[str, int]:
        statuses = [c.status for c in self.cells.values()]
        return {
            "done": sum(s in ("done", "cached") for s in statuses),
            "running": statuses.count("running"),
            "failed": statuses.count("failed"),
            "left": statuses.count("waiting"),
        }

    def render(self) -> Group:
        c = self.counts()
        header = Text(
            f"cells: {c['done']} done, {c['running']} running, {c['left']} left" + (f", {c['failed']} failed" if c["failed"] else "")
        )
        table = Table(show_header=True, header_style="bold", expand=False)
        for column in ("cell", "status", "stage", "step", "loss", "mIoU", "time"):
            table.add_column(column)
        for s in self.cells.values():
            step = f"{s.step}/{s.total}" if s.total else ""
            table.add_row(
                s.cell_id,
                s.status,
                s.stage,
                step,
                "" if s.loss is None else f"{s.loss:.4f}",
                "" if s.miou is None else f"{s.miou:.2f}",
                "" if s.elapsed is None else f"{s.elapsed:.0f}s",
            )
        return Group(header, table)

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def _plain(self, cell_id: str, text: str, force: bool = False) -> None:
        if self.interactive:
            return
        now = time.monotonic()
        if force or now - self._last_plain.get(cell_id, 0.0) >= 5.0:
            self._last_plain[cell_id] = now
            c = self.counts()
            print(f"[{c['done']} done/{c['running']} running/{c['left']} left] {cell_id}: {text}", flush=True)

    def start(self, cell_id: str) -> None:
        s = self.cells[cell_id]
        s.status, s.started = "running", time.monotonic()
        self._plain(cell_id, "started", force=True)
        self.refresh()

    def progress(self, cell_id: str, stage: str, step: int, total: int, loss: float | None) -> None:
        s = self.cells[cell_id]
        s.stage, s.step, s.total = stage, step, total
        if loss is not None:
            s.loss = loss
        loss_text = "" if loss is None else f" loss {loss:.4f}"
        self._plain(cell_id, f"{stage} {step}/{total}{loss_text}", force=step == total)
        self.refresh()

    def finish(self, cell_id: str, miou: float | None, status: str = "done", error: str = "") -> None:
        s = self.cells[cell_id]
        s.status, s.miou, s.error = status, miou, error
        s.finished = time.monotonic()
        if s.started is None:
            s.started = s.finished
        text = f"{status}" + ("" if miou is None else f", mIoU {miou:.2f}") + (f": {error}" if error else "")
        self._plain(cell_id, text, force=True)
        self.refresh()

    def summary(self) -> Table:
        table = Table(title="summary", show_header=True, header_style="bold")
        for column in ("cell", "status", "mIoU", "time"):
            table.add_column(column)
        for s in self.cells.values():
            table.add_row(
                s.cell_id,
                s.status + (f" ({s.error})" if s.error else ""),
                "—" if s.miou is None else f"{s.miou:.2f}",
                "" if s.elapsed is None else f"{s.elapsed:.0f}s",
            )
        return table
