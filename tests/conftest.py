"""Shared fixtures: offline hubs, one Ray session for the whole test run, tiny experiments."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for all tests that need it (starting Ray costs ~20 s)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def tiny_experiment(name: str, **sections) -> dict:
    """A seconds-long experiment on 32-pixel context scenes."""
    exp = {
        "name": name,
        "grid": {"frameworks": ["fcn"], "datasets": ["context_scenes"], "idr": [False, True], "seeds": [0]},
        "model": {
            "backbone": "resnet18",
            "feats_channels": 16,
            "head_channels": 16,
            "aux_channels": 8,
            "refine_channels": 8,
        },
        "train": {"iterations": 3, "batch_size": 4, "log_interval": 1},
        "eval": {"batch_size": 4},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "data": {"root": "datasets", "options": {"context_scenes": {"num_train": 8, "num_val": 4, "image_size": 32}}},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            exp[key] = {**exp.get(key, {}), **value}
        else:
            exp[key] = value
    return exp


@pytest.fixture
def write_experiment(tmp_path):
    def write(exp: dict, name: str = "exp.yaml") -> Path:
        exp = dict(exp)
        exp["data"] = {**exp["data"], "root": str(tmp_path / "datasets")}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(exp, sort_keys=False))
        return path

    return write
