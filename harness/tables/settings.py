"""A record's setting: the configuration keys that change a result, its test protocol, and how two settings differ."""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Callable

from harness.records import is_released, label_protocol_of

# keys of the resolved configuration that do not change a result (not part of the setting)
IGNORED_KEYS = (
    "experiment",
    "framework",
    "dataset",
    "idr",
    "seed",
    "data_root",
    "sweep",
    "train.log_interval",
    "train.loader_workers",
    "train.torch_threads",
    "train.checkpoint_interval",
    "train.eval_interval",  # learning-curve evaluations leave training's random streams alone
    "train.eval_subset",
    "train.max_failures",
    "eval.batch_size",
)

IGNORED_PREFIXES = ("scaling.", "sweep.")  # a sweep's or variant's values are in the keys they set

# keys only an IDR model reads: a baseline's values of them do not change it, so one baseline
# pairs with every +IDR setting that differs from it in these keys alone (controls, wiring sweeps)
IDR_ONLY_KEYS = (
    "model.idr_relations",
    "model.coarse_refine",
    "model.stage1_input",
    "model.refine_channels",
    "model.upernet_context",
    "model.relation_momentum",
    "model.dataset_reps_momentum",
)

# keys that only depend on the dataset (a row of the frameworks table spans datasets)
DATASET_KEYS_PREFIXES = ("data_options.", "crop_size")

DATASET_KEYS = ("eval.split", "label_protocol")

EVAL_PROTOCOL_KEYS = ("eval.mode", "eval.flip", "eval.scales", "eval.crop_size", "eval.stride", "eval.probs_before_resize")


@lru_cache(maxsize=1)
def _section_defaults() -> dict[str, dict[str, Any]]:
    from harness.config import EvalConfig, ModelConfig, TrainConfig

    out = {}
    for name, cls in (("model", ModelConfig), ("train", TrainConfig), ("eval", EvalConfig)):
        out[name] = {
            key: info.get_default(call_default_factory=True)
            for key, info in cls.model_fields.items()
            if not info.is_required()
        }
    return out


def _dataset_defaults(dataset: str) -> dict[str, Any]:
    try:
        from harness.data import get_spec

        return dict(get_spec(dataset).default_options)
    except (KeyError, ImportError):
        return {}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = tuple(value)
    else:
        out[prefix] = value


def _crop_size(record: dict) -> tuple[int, int] | None:
    size = (record.get("complexity") or {}).get("input_size")
    if size:
        return tuple(int(s) for s in size)
    try:
        from harness.data import dataset_card

        card = dataset_card(record["dataset"], (record.get("config") or {}).get("data_options") or {})
        return tuple(card.crop_size)
    except Exception:  # an unregistered dataset: crop unknown, not checked
        return None


def record_values(record: dict) -> dict[str, Any]:
    """The record's resolved configuration, flattened to dotted keys, schema defaults filled in.

    `crop_size` (the training crop, from the record's complexity input size or the dataset
    card) is added; keys that do not change a result are left out.
    """
    config = record.get("config") or {}
    defaults = _section_defaults()
    merged: dict[str, Any] = {}
    for key, value in config.items():
        if key in defaults and isinstance(value, dict):
            merged[key] = {**defaults[key], **value}
        else:
            merged[key] = value
    for key, section in defaults.items():
        merged.setdefault(key, dict(section))
    merged["model"]["backbone"] = config.get("model", {}).get("backbone", record.get("backbone"))
    merged["data_options"] = {**_dataset_defaults(record["dataset"]), **(config.get("data_options") or {})}
    flat: dict[str, Any] = {}
    _flatten(merged, "", flat)
    flat = {k: v for k, v in flat.items() if k not in IGNORED_KEYS and not k.startswith(IGNORED_PREFIXES)}
    flat["crop_size"] = _crop_size(record)
    # the label protocol the record was scored under (its option's default changed: read the record's)
    flat.pop("data_options.protocol", None)
    flat["label_protocol"] = label_protocol_of(record)
    if is_released(record):  # a released checkpoint is never averaged with models trained here
        flat["released"] = True
    return flat


def setting_key(values: dict[str, Any], keep: Callable[[str], bool] = lambda key: True) -> str:
    """A canonical string of the kept keys: equal strings, equal settings."""
    return json.dumps({k: values[k] for k in sorted(values) if keep(k)}, sort_keys=True, default=str)


def protocol_of(eval_cfg: dict | None) -> str:
    """ss / flip / ms / ms+flip from a record's `config.eval` (missing keys: single scale, no flip)."""
    eval_cfg = eval_cfg or {}
    scales = eval_cfg.get("scales") or [1.0]
    multi = len({float(s) for s in scales}) > 1
    flip = bool(eval_cfg.get("flip", False))
    if multi:
        return "ms+flip" if flip else "ms"
    return "flip" if flip else "ss"


def is_dataset_key(key: str) -> bool:
    return key in DATASET_KEYS or key.startswith(DATASET_KEYS_PREFIXES)


def diff_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
