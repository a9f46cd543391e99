"""The HTML report from hand-written records and a tiny checkpoint, opened in headless Chromium."""
from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from harness.context_probe import load_relations
from harness.plots import main as plots_main
from harness.report import build_report, main as report_main
from tests.test_tables import make_record

CLASSES = ["ground", "water", "road", "grass", "snow", "boat", "car", "sheep", "goat", "rock"]
HOSTILE = '<script>alert("x")</script> & <b>not bold</b>'
CHROMIUM = "/usr/bin/chromium"


def _per_class(offset: float) -> dict[str, float]:
    return {name: 30.0 + 5 * i + offset for i, name in enumerate(CLASSES)}


def _study_measures(idr: bool, offset: float) -> dict:
    """A learning curve and a flip rate as train.py records them (relation recovery for +IDR)."""
    points = [{"iteration": it, "mIoU": 40.0 + it / 10 + offset, "focus_iou": {"boat": 20.0 + it / 10, "car": None},
               "flip_rate": 5.0 * it / 100, "relation_recovery": None} for it in (100, 200, 300)]
    measures = {"learning_curve": {"eval_interval": 100, "images": "first 16 of val", "num_images": 16, "points": points},
                "context_flip": {"flip_rate": 30.0 + offset, "per_class": {}, "pixels": 1000}}
    if idr:
        measures["relation_recovery"] = {"ranks": {"boat": 1, "car": 2, "sheep": 1, "goat": 1},
                                         "mean_reciprocal_rank": 0.875, "share_first": 75.0, "candidates": 9}
    return measures


@pytest.fixture
def experiment(tmp_path) -> Path:
    results = tmp_path / "results" / "report_exp"
    results.mkdir(parents=True)
    for seed, (b, i) in enumerate([(60.0, 68.0), (61.0, 70.0)]):
        for idr, miou, offset in ((False, b, 0.0), (True, i, 3.0 + seed)):
            make_record(
                results, "fcn", "context_scenes", idr=idr, seed=seed, miou=miou, per_class=_per_class(offset),
                focus=["boat", "car"], model={"backbone": "resnet18", "feats_channels": 128},
                train={"iterations": 300, "batch_size": 8},
                complexity={"input_size": [64, 64], "gflops": 0.9 + 0.1 * idr},
                log=f"iter 10/300 loss 1.0\n{HOSTILE}\neval on val: mIoU {miou:.2f}\n",
                extra=_study_measures(idr, offset),
            )
    cell = results / "cells" / "fcn+idr_context_scenes_resnet18_s0"
    k = len(CLASSES)
    relations_mean = torch.eye(k) + 0.05 * torch.arange(k * k, dtype=torch.float32).reshape(k, k) / (k * k)
    state = {"head.relations_mean": relations_mean, "head.relations_var": torch.rand(k, k),
             "head.pick_counts": torch.ones(k), "backbone.conv.weight": torch.zeros(2, 3, 1, 1)}
    torch.save({"iteration": 300, "model": state, "optimizer": {}}, cell / "model.pt")
    return results


def test_relations_are_read_from_the_checkpoint(experiment):
    relations = load_relations(experiment / "cells" / "fcn+idr_context_scenes_resnet18_s0" / "model.pt")
    assert relations["relations_mean"].shape == (10, 10) and relations["relations_var"].shape == (10, 10)


def test_plots_cli(experiment, tmp_path, capsys):
    # an explicit checkpoint outside the cells folder gets its class names from the records (K = 10)
    outside = tmp_path / "elsewhere.pt"
    shutil.copy(experiment / "cells" / "fcn+idr_context_scenes_resnet18_s0" / "model.pt", outside)
    assert plots_main([str(experiment), "--checkpoint", str(outside)]) == 0
    plots = experiment / "plots"
    for stem in ("miou_vs_gflops", "gain", "per_class_fcn_context_scenes_resnet18",
                 "relations_fcn+idr_context_scenes_resnet18_s0", "relations_elsewhere",
                 "curves_fcn_context_scenes_resnet18", "relation_recovery_fcn+idr_context_scenes_resnet18_s0"):
        for ext in ("png", "svg"):
            assert (plots / f"{stem}.{ext}").stat().st_size > 1000, stem
    svg = (plots / "relations_elsewhere.svg").read_text()
    assert "sheep" in svg and "goat" in svg  # class names on the axes
    # the test matrix grows down each column: every true context row (1-4) has larger rows below it
    recovery = (plots / "relation_recovery_fcn+idr_context_scenes_resnet18_s0.svg").read_text()
    assert "boat: 8, car: 7, sheep: 6, goat: 5" in recovery and "MRR 0.16" in recovery
    assert plots_main([str(experiment), "--checkpoint", str(tmp_path / "nope.pt")]) == 2


def test_report_page(experiment):
    path = build_report(experiment, log=lambda m: None)
    assert path == experiment / "report.html"
    page = path.read_text()
    # tables
    assert '<table class="results" id="table-frameworks">' in page
    assert '<td class="label">FCN</td>' in page and "36.96" in page and "43.61" in page
    assert "60.50 ± 0.71 (n=2)" in page and "69.00 ± 1.41 (n=2)" in page
    # plots embedded, nothing loaded from outside
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 6 and all(src.startswith("data:image/png;base64,") for src in images)
    # flip rates and relation recovery beside mIoU
    assert "+IDR flip %" in page and "30.00 ± 0.00 (n=2)" in page and "33.50 ± 0.71 (n=2)" in page
    assert "0.88 ± 0.00 (n=2)" in page
    assert "http://" not in page and "https://" not in page
    # environment and per-cell sections, every text escaped
    assert "0123456789abcdef" in page and "2.4.0" in page
    assert page.count('<details class="cell"') == 4
    assert HOSTILE not in page and html.escape(HOSTILE) in page
    assert "&quot;iterations&quot;: 300" in page  # the resolved config
    assert "<script" not in page


def _chromium() -> str:
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs it in .ci/run)")
        pytest.skip("chromium is not installed (README, Quickstart: sudo apt-get install chromium)")
    return found


CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1);
  const tables = Array.from(document.querySelectorAll("table.results")).map(t => Math.round(t.getBoundingClientRect().height));
  const out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = "images=" + images.join(",") + ";tables=" + tables.join(",");
  document.body.appendChild(out);
});
</script>
"""


def test_report_renders_in_headless_chromium(experiment, tmp_path):
    chromium = _chromium()
    assert report_main([str(experiment)]) == 0
    page = (experiment / "report.html").read_text()
    probe = tmp_path / "probe.html"  # the report plus a script that measures what was rendered
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    profile = tmp_path / "chromium-profile"
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=10000", "--dump-dom", probe.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    dom = done.stdout
    assert done.returncode == 0 and "</html>" in dom, done.stderr[-2000:]
    match = re.search(r'<pre id="render-check">images=([^;]*);tables=([^<]*)</pre>', dom)
    assert match, dom[-2000:]
    widths = [int(w) for w in match.group(1).split(",") if w]
    heights = [int(h) for h in match.group(2).split(",") if h]
    assert len(widths) == 6 and all(w > 0 for w in widths), widths  # every plot decoded
    assert len(heights) == 7 and all(h > 0 for h in heights), heights  # every table laid out (learning curves too)
    assert '<td class="label">FCN †1</td>' in dom and "context_scenes" in dom
