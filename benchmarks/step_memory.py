"""Peak memory of one block of work (a training step): CUDA max allocated, or the CPU RSS rise.

* CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` at the start: the
  peak of the tensors alive at once during the block, weights and optimizer state included.
* CPU (Linux): the rise of the process's resident set over the block: the peak resident size
  (`VmHWM`, reset to the current size by writing 5 to `/proc/self/clear_refs`) minus the
  resident size at the start, after `malloc_trim` has handed the allocator's free memory back
  (else memory freed by an earlier step and kept by glibc would hide this step's allocations).
  Weights and optimizer state that already exist are not in it; what the step allocates is.
  Where `/proc/self/clear_refs` cannot be written (not Linux), the figure is None.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from pathlib import Path

import torch

MIB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.mib`: the block's peak memory in MiB
    (CUDA: max allocated; CPU: resident-set rise), or None where it cannot be measured."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.mib: float | None = None
        self._start_kib = 0
        self._cpu_ok = False

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _malloc_trim()
            self._cpu_ok = _reset_rss_peak()
            self._start_kib = _status_kib("VmRSS") if self._cpu_ok else 0
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / MIB
        elif self._cpu_ok:
            self.mib = (_status_kib("VmHWM") - self._start_kib) / 2**10


def kind(device: torch.device) -> str:
    """What :class:`PeakMemory` measures on `device`, for table headers."""
    return "CUDA max allocated" if torch.device(device).type == "cuda" else "CPU RSS rise"
