"""A framework from the user's own package (examples/idrbench_example_head), found with no edit of IDRBench:
by the entry point it declares (idrbench.frameworks) or by its import path."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness.config import ConfigError, ModelConfig, load_experiment
from tests.conftest import REPO, tiny_experiment

EXAMPLE = REPO / "examples" / "idrbench_example_head"
IMPORT_PATH = "idrbench_example_head.lighthead:FRAMEWORK"


def pip_install(source: Path, target: Path) -> None:
    """Install the example package into `target` (as a user's `pip install` would; the build's
    setuptools is the environment's, else PyPI's)."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)]
    done = subprocess.run([*command, "--no-build-isolation"], capture_output=True, text=True)
    if done.returncode != 0:
        done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """The example package installed into a folder of its own (built from a copy: the repository stays clean)."""
    work = tmp_path_factory.mktemp("example")
    source = shutil.copytree(EXAMPLE, work / "source")
    target = work / "site"
    pip_install(source, target)
    return target


@pytest.fixture
def on_path(installed_example, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_example))
    yield installed_example
    for name in [m for m in sys.modules if m.startswith("idrbench_example_head")]:
        del sys.modules[name]


def small_model_config() -> ModelConfig:
    return ModelConfig(backbone="resnet18", feats_channels=16, head_channels=16, aux_channels=8, refine_channels=8)


@pytest.mark.parametrize("name", ["lighthead", IMPORT_PATH])
@pytest.mark.parametrize("idr", [False, True])
def test_user_framework_builds_and_trains_a_step(on_path, name, idr):
    from models.registry import all_framework_names, build_segmentor

    assert "lighthead" in all_framework_names()
    torch.manual_seed(0)
    model = build_segmentor(name, idr, 3, small_model_config())
    images, target = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    model.train()
    losses = model(images, target)
    assert set(losses) == ({"stage1", "stage2", "aux"} if idr else {"decode", "aux"})
    sum(losses.values()).backward()
    model.eval()
    assert model(images).shape == (2, 3, 32, 32)
    assert type(model.head).__name__ == ("IDRHead" if idr else "LightHead")


def test_experiment_names_the_user_framework(on_path, write_experiment):
    exp = tiny_experiment("mine", grid={"frameworks": ["lighthead", IMPORT_PATH]})
    cells = load_experiment(write_experiment(exp))
    assert cells.grid.frameworks == ["lighthead", IMPORT_PATH]
    from harness.config import expand_cells

    assert "idrbench_example_head.lighthead-FRAMEWORK+idr_context_scenes" in expand_cells(cells)[-1].cell_id


def test_unknown_or_broken_framework_is_one_line(write_experiment):
    for name, expected in (
        ("no_such_pkg.heads:HEAD", "framework 'no_such_pkg.heads:HEAD': cannot import it (ModuleNotFoundError"),
        ("harness.config:Cell", "framework 'harness.config:Cell': ModelMetaclass is not a models.registry.Framework"),
        ("lightheadd", "unknown framework 'lightheadd'; allowed: fcn, "),
    ):
        with pytest.raises(ConfigError) as err:
            load_experiment(write_experiment(tiny_experiment("x", grid={"frameworks": [name]})))
        assert len(str(err.value).splitlines()) == 1 and expected in str(err.value), str(err.value)


@pytest.mark.ray
@pytest.mark.slow
def test_example_package_trains_with_and_without_idr_through_harness_run(installed_example, tmp_path):
    """`python -m harness.run` as a user runs it, with the package installed where Python finds it
    (its own local Ray: the workers inherit that environment)."""
    exp = tiny_experiment("mine", grid={"frameworks": ["lighthead"], "idr": [False, True]})
    exp["data"]["root"] = str(tmp_path / "datasets")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PYTHONPATH"] = os.pathsep.join([str(installed_example), str(REPO)])
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "harness.run", str(path), "--results", str(results)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    from harness.results import load

    frame = load(results / "mine")
    assert sorted(frame["idr"]) == [False, True] and set(frame["framework"]) == {"lighthead"}
    assert frame["mIoU"].notna().all()
