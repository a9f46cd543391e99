"""Which model a checkpoint holds, when it does not fit the one asked for: another framework, IDR or
not, another class count. Each finding names what to type instead (`harness.evaluate --checkpoint`,
`harness.convert`, `--resume`), in one line.

The structure is compared by tensor *names*, which do not depend on widths: every candidate head
(each registered framework, with and without IDR) is built at a tiny width and its key names are
compared with the checkpoint's. The class count is the first dimension of the classifiers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

TINY = {"feats_channels": 8, "head_channels": 8, "refine_channels": 8, "aux_channels": 8}
TINY_CHANNELS = [8, 8, 8, 8]


@dataclass(frozen=True)
class Finding:
    """What a checkpoint holds instead: kind "idr" / "baseline" / "framework" / "classes"."""

    kind: str
    evidence: str  # the tensors that show it
    framework: str = ""
    idr: bool = False
    num_classes: int = 0


def names_of(keys: Iterable[str], depth: int = 2) -> str:
    """A short list of the module paths of `keys` (first `depth` parts), e.g. "head.stage2.*, head.relations_mean"."""
    shown = []
    for key in keys:
        parts = key.split(".")
        name = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        if name not in shown:
            shown.append(name)
    return ", ".join(shown[:3]) + (", ..." if len(shown) > 3 else "")


def _telling_first(key: str) -> tuple[bool, str]:
    """Sort key: IDR's own tensors (stage 1 / 2 classifiers, relations) first, they tell IDR apart."""
    return key.split(".")[1] not in ("relations_mean", "stage1", "stage2"), key


def head_key_names(framework: str, idr: bool, cfg) -> set[str]:
    """Our state-dict key names of a framework's head ("head.*"), from a copy built at a tiny width."""
    from models.registry import head_of

    try:
        head = head_of(framework, idr, TINY_CHANNELS, 2, cfg.model_copy(update=TINY))
    except ValueError:
        return set()
    return {f"head.{key}" for key in head.state_dict()}


def _candidates(framework: str) -> list[str]:
    from models.registry import framework_names

    return list(dict.fromkeys([framework, *framework_names()]))


def class_count(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], num_classes: int) -> Finding | None:
    """The checkpoint's class count where it differs: a tensor whose first dimension is the model's
    class count while the checkpoint's is another (same key, other dimensions equal)."""
    for key, ours in model_state.items():
        theirs = state.get(key)
        if theirs is None or ours.ndim == 0 or ours.shape[0] != num_classes or theirs.shape == ours.shape:
            continue
        if theirs.ndim == ours.ndim and theirs.shape[1:] == ours.shape[1:]:
            shape = "x".join(map(str, theirs.shape))
            return Finding("classes", f"{key} is {shape}", num_classes=int(theirs.shape[0]))
    return None


def diagnose(state: dict[str, torch.Tensor], model: torch.nn.Module, framework: str, idr: bool,
             num_classes: int, cfg) -> Finding | None:
    """What our-format `state` holds when it does not fit `model` (framework ± IDR with `num_classes`)."""
    ours = model.state_dict()
    held = {key for key in state if key.startswith("head.")}
    if held != {key for key in ours if key.startswith("head.")}:
        for candidate in _candidates(framework):
            for candidate_idr in (idr, not idr):
                if head_key_names(candidate, candidate_idr, cfg) != held:
                    continue
                extra = sorted(held - set(ours) or set(ours) - held, key=_telling_first)
                if candidate == framework:
                    kind = "idr" if candidate_idr else "baseline"
                    return Finding(kind, names_of(extra), candidate, candidate_idr)
                return Finding("framework", names_of(extra), candidate, candidate_idr)
        return None
    return class_count(state, ours, num_classes)


def describe(finding: Finding, flags: dict[str, str]) -> str:
    """The one line of a finding; `flags` says how to ask for what fits, e.g. {"idr": "add --idr",
    "baseline": "drop --idr", "framework": "use --framework {framework}{idr}", "classes": "use --dataset
    {datasets}"} ({datasets}: the paper's datasets with that many classes, or "a dataset with N classes")."""
    suffix = " --idr" if finding.idr else ""
    names = datasets_with(finding.num_classes)
    datasets = " or ".join(names) if names else f"<a dataset with {finding.num_classes} classes>"
    fix = flags[finding.kind].format(framework=finding.framework, idr=suffix, num_classes=finding.num_classes,
                                     datasets=datasets)
    if finding.kind == "idr":
        return f"holds IDR weights ({finding.evidence}): {fix}"
    if finding.kind == "baseline":
        return f"holds a baseline model without IDR ({finding.evidence}): {fix}"
    if finding.kind == "framework":
        variant = f"{finding.framework}{'+idr' if finding.idr else ''}"
        return f"holds a {variant} model ({finding.evidence}): {fix}"
    return f"holds {finding.num_classes} classes ({finding.evidence}): {fix}"


def datasets_with(num_classes: int) -> list[str]:
    """The paper's datasets with this many classes (harness.official)."""
    from harness.official import OFFICIAL_NUM_CLASSES

    return sorted(name for name, count in OFFICIAL_NUM_CLASSES.items() if count == num_classes)
