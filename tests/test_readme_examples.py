"""The README's Python examples run as written (IDR in plain PyTorch; results as a DataFrame)."""
from __future__ import annotations

import re

from tests.conftest import REPO


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_idr_in_plain_pytorch_runs():
    [block] = [b for b in python_blocks() if "IDRHead" in b]
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert tuple(scope["logits"].shape) == (2, 5, 64, 64)
    assert scope["head"].relations_mean.abs().sum() > 0  # the deletion update ran


def test_results_dataframe_example_runs(tmp_path, monkeypatch):
    from tests.test_tables import make_record

    for idr in (False, True):
        make_record(tmp_path / "results" / "quickstart", "fcn", "context_scenes", idr, 0, 40.0 + idr)
    monkeypatch.chdir(tmp_path)
    [block] = [b for b in python_blocks() if "harness.results" in b]
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    frame = scope["frame"]
    assert sorted(frame["idr"]) == [False, True] and list(frame["mIoU"].sort_values()) == [40.0, 41.0]
