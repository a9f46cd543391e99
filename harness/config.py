"""Experiment files: the one config object, its validation and `--set` overrides.

An experiment file is YAML with the sections of :class:`Experiment`. It is validated
completely before any work starts; every problem is reported, one line each, e.g.

    experiments/x.yaml: model.backbne: unknown key; did you mean model.backbone?
    experiments/x.yaml: train.lr: Input should be greater than 0 (got -1)

and the caller exits with status 2 (:class:`ConfigError`).
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import difflib
import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigError(Exception):
    """A bad experiment file or override; the message is the whole one-line report."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


# Checking framework, dataset and backbone names imports the registries (torch, timm). A first
# pass over the file runs without them, so a misspelt key or a wrong type is reported before
# those imports (in well under 2 s); the names are checked in a second pass.
_REGISTRY_CHECKS = contextvars.ContextVar("registry_checks", default=True)


@contextlib.contextmanager
def _without_registry_checks():
    token = _REGISTRY_CHECKS.set(False)
    try:
        yield
    finally:
        _REGISTRY_CHECKS.reset(token)


def _check_names(values: list[str], allowed: list[str], what: str) -> list[str]:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return values


SWEEPABLE_SECTIONS = ("model", "train", "eval")
CELL_SECTIONS = ("model", "train", "eval", "scaling")


class Variant(Strict):
    """Extra cells: for each cell of the grid that matches (a value or a list of allowed values
    per key), one more cell with `set` applied, its set values named in its id like a sweep's
    (e.g. the IDR controls on two frameworks only, or a wiring switch on one seed)."""

    match: dict[Literal["framework", "dataset", "idr", "seed"], Any] = Field(default_factory=dict)
    set: dict[str, Any] = Field(min_length=1)

    @field_validator("set")
    @classmethod
    def _sweepable(cls, v: dict[str, Any]) -> dict[str, Any]:
        for path in v:
            if path.split(".", 1)[0] not in SWEEPABLE_SECTIONS or "." not in path:
                raise ValueError(f"cannot vary {path!r}; allowed: keys under {', '.join(SWEEPABLE_SECTIONS)}")
        return v

    def matches(self, keys: dict[str, Any]) -> bool:
        return all(keys[k] in (v if isinstance(v, list) else [v]) for k, v in self.match.items())


class Grid(Strict):
    """The cells of an experiment: the cross product of these lists, then any variants."""

    frameworks: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    idr: list[bool] = Field(default=[False, True], min_length=1)
    seeds: list[int] = Field(default=[0], min_length=1)
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="swept hyper-parameters: key path (e.g. train.lr) -> values"
    )
    variants: list[Variant] = Field(default_factory=list, description="extra cells for matching grid cells")
    exclude: list[dict[Literal["framework", "dataset", "idr", "seed"], Any]] = Field(
        default_factory=list,
        description="cells of the product left out: each entry matches like a variant's `match` (a value or a list "
        "per key), e.g. {framework: [ocrnet, danet], dataset: [lip]}",
    )

    def excludes(self, keys: dict[str, Any]) -> bool:
        """Whether a cell with these keys is left out of the grid (`exclude`)."""
        return any(all(keys[k] in (v if isinstance(v, list) else [v]) for k, v in entry.items())
                   for entry in self.exclude)

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in v.items():
            section = path.split(".", 1)[0]
            if section not in SWEEPABLE_SECTIONS or "." not in path:
                raise ValueError(f"cannot sweep {path!r}; allowed: keys under {', '.join(SWEEPABLE_SECTIONS)}")
            if not values:
                raise ValueError(f"sweep of {path!r} has no values")
        return v

    @field_validator("frameworks")
    @classmethod
    def _known_frameworks(cls, v: list[str]) -> list[str]:
        if not _REGISTRY_CHECKS.get():
            return v
        from models.registry import check_framework

        for name in v:
            check_framework(name)
        return v

    @model_validator(mode="after")
    def _plugin_frameworks_without_idr(self) -> "Grid":
        """A framework carrying its own context module (fcn_mcibipp, isnet, ...) runs only in the
        idr: false cells of the grid; a grid with no such cell for it is an error."""
        if not _REGISTRY_CHECKS.get() or False in self.idr:
            return self
        from models.registry import carries_plugin

        own = [f for f in self.frameworks if carries_plugin(f)]
        if own:
            raise ValueError(f"framework {own[0]!r} carries its own context module and cannot take IDR; "
                             "grid.idr must include false")
        return self

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if not _REGISTRY_CHECKS.get():
            return v
        from harness.data import dataset_names

        return _check_names(v, dataset_names() + _custom_names(info), "dataset")


def _custom_names(info: ValidationInfo) -> list[str]:
    """The names of the experiment's own folder datasets (data.custom), passed as validation context."""
    return list((info.context or {}).get("custom_datasets", ()))


class ModelConfig(Strict):
    backbone: str = "resnet18"
    pretrained: str | None = Field(
        default=None, description="local weights file, or 'cache' (local timm/HF/torch caches only); never a hub"
    )
    output_stride: Literal[8, 16, 32] = 8
    feats_channels: int = Field(default=512, gt=0, description="C of the paper (bottleneck width)")
    head_channels: int = Field(default=512, gt=0, description="width of the baseline heads' convs")
    aux_channels: int = Field(default=512, gt=0)
    refine_channels: int = Field(default=256, gt=0, description="IDR self-attention width")
    upernet_context: Literal["aspp", "ppm"] = Field(
        default="ppm", description="UPerNet+IDR coarse context (FPN top level); the baseline UPerNet always uses PPM"
    )
    coarse_refine: Literal["before", "after", "none"] = Field(
        default="after",
        description="IDR: self-attention on the coarse context before / after stage 1, or none (official per dataset)",
    )
    stage1_input: Literal["context", "feats"] = Field(
        default="context", description="IDR stage 1 reads the coarse context or F (official force_stage1_use_oripr)"
    )
    idr_relations: Literal["deletion", "uniform", "none"] = Field(
        default="deletion",
        description="IDR relation context: learned by deletion (the paper), or the controls uniform "
        "(all present classes weigh the same) / none (zero context); same parameters",
    )
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    drop_path_rate: float = Field(default=0.0, ge=0.0, lt=1.0, description="backbone stochastic depth")
    relation_momentum: float = Field(default=0.1, gt=0.0, le=1.0)
    dataset_reps_momentum: float = Field(default=0.1, gt=0.0, le=1.0)
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {"aux": 0.4, "stage1": 0.4, "stage2": 1.0, "decode": 1.0}
    )
    sync_bn: bool = True
    head_activation: Literal["relu", "leaky_relu"] = Field(
        default="relu",
        description="activation of the decode and auxiliary heads (the backbone keeps ReLU); leaky_relu: "
        "slope 0.01, the official ISNet / MCIBI LIP configs",
    )
    plugin_options: dict[str, Any] = Field(
        default_factory=dict,
        description="switches of a plug-in other than IDR, checked by it (models/plugins/<plugin>.py; "
        "MCIBI++: self_attention, gather_from, stage1_kernel, context_kernel, decode_kernel, memory_momentum; "
        "the scheme MCIBI: memory_momentum, momentum_lr, memory_loss; ISNet: shortcut)",
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if not _REGISTRY_CHECKS.get():
            return v
        from harness.diskcache import is_known_backbone

        if not is_known_backbone(v):
            raise ValueError(f"unknown backbone {v!r}; allowed: any timm model name with features_only support")
        return v

    @field_validator("loss_weights")
    @classmethod
    def _known_losses(cls, v: dict[str, float]) -> dict[str, float]:
        _check_names(list(v), ["aux", "stage1", "stage2", "decode", "context", "pam", "cam", "memory"], "loss")
        return v


class TrainConfig(Strict):
    iterations: int = Field(gt=0)
    batch_size: int = Field(default=8, gt=0, description="global batch size over all workers")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.01, gt=0.0)
    backbone_lr_mult: float = Field(default=1.0, gt=0.0, description="backbone lr = lr * this (Mask2Former: 0.1)")
    warmup_iterations: int = Field(default=0, ge=0, description="linear warm-up from lr * 1e-6 (harness/optim.py)")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=5e-4, ge=0.0)
    no_decay_names: list[str] | None = Field(
        default=None,
        description="AdamW: weight decay 0 exactly for parameters whose name contains one of these "
        "(the official params_rules); None = norm layers, biases, position tables, embeddings",
    )
    poly_power: float = Field(default=0.9, ge=0.0)
    min_lr: float = Field(default=1e-4, ge=0.0)
    log_interval: int = Field(default=10, gt=0)
    loader_workers: int = Field(default=0, ge=0, description="DataLoader processes per training worker")
    torch_threads: int = Field(default=0, ge=0, description="intra-op threads per worker; 0 = CPUs given to it")
    accumulation_steps: int = Field(default=1, gt=0, description="micro-batches per step (keeps batch_size on fewer GPUs)")
    amp: Literal["off", "bf16", "fp16"] = Field(default="off", description="mixed precision (fp16 needs GPUs)")
    clip_grad_norm: float | None = Field(default=None, gt=0.0, description="clip the global gradient norm")
    checkpoint_interval: int = Field(default=0, ge=0, description="iterations between checkpoints; 0 = none")
    eval_interval: int | None = Field(
        default=0, ge=0, description="iterations between learning-curve evaluations; 0 or None = none"
    )
    eval_subset: int | None = Field(
        default=None, gt=0, description="learning-curve evaluations use the first this many evaluation images; None = all"
    )
    max_failures: int = Field(
        default=0, ge=0, description="worker or node failures retried from the last checkpoint (never divergence or bad data)"
    )
    skip_nonfinite: int = Field(
        default=0, ge=0, description="steps with a non-finite loss or gradient skipped before the cell fails "
        "(fp16 runs: GradScaler overflows count; allow a few)"
    )


class EvalConfig(Strict):
    """Test protocol (see harness/evaluate.py): whole image or sliding window, optional flip, scales."""

    batch_size: int = Field(default=4, gt=0)
    split: str = "val"
    mode: Literal["whole", "slide"] = "whole"
    crop_size: tuple[PositiveInt, PositiveInt] | None = Field(default=None, description="slide window (height, width)")
    stride: tuple[PositiveInt, PositiveInt] | None = Field(default=None, description="slide step (height, width)")
    flip: bool = False
    scales: list[PositiveFloat] = Field(
        default_factory=lambda: [1.0], min_length=1, description="ratios of the test scale; several: averaged softmax"
    )
    probs_before_resize: bool = Field(
        default=False, description="softmax on the model's output before windows/augmentations are averaged and resized"
    )

    @model_validator(mode="after")
    def _check_slide(self) -> "EvalConfig":
        if self.mode == "slide":
            if self.crop_size is None or self.stride is None:
                raise ValueError("mode slide needs crop_size and stride")
            if any(s > c for s, c in zip(self.stride, self.crop_size)):
                raise ValueError(f"stride {list(self.stride)} must not exceed crop_size {list(self.crop_size)}")
        return self


class ScalingConfig(Strict):
    num_workers: int = Field(default=1, gt=0, description="Ray Train workers (DDP ranks) per cell")
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    max_concurrent_cells: int = Field(default=1, gt=0)
    placement: Literal["pack", "spread"] = Field(
        default="pack", description="a cell's workers on as few nodes as possible, or one per node where possible"
    )


class FolderSplit(Strict):
    """One split of a folder dataset: folders (and optionally a list of ids), relative to its path."""

    images: str
    labels: str
    list: str | None = Field(default=None, description="a file of sample ids (file names without suffix), one a line")


class FolderDatasetConfig(Strict):
    """A user's dataset: a folder of images and a folder of label PNGs per split (harness/data/folder.py)."""

    path: str = Field(description="the dataset's folder, relative to data.root (or absolute)")
    splits: dict[str, FolderSplit] = Field(min_length=1)
    image_suffix: str = ".jpg"
    label_suffix: str = ".png"
    classes: list[str] | str = Field(description="class names in label-value order, or a file (one name a line)")
    palette: list[tuple[int, int, int]] | None = None
    ignore_index: int = Field(default=255, ge=0, le=65535)
    reduce_zero_label: bool = Field(default=False, description="label 0 is 'other' (ignored); k is class k - 1")
    crop_size: tuple[PositiveInt, PositiveInt] = (512, 512)
    base_scale: tuple[PositiveInt, PositiveInt] = (2048, 512)
    keep_ratio: bool = True
    ratio_range: tuple[PositiveFloat, PositiveFloat] = (0.5, 2.0)
    focus_classes: list[str] = Field(default_factory=list, description="classes whose IoU the tables show one by one")

    def resolved(self, root: str, name: str) -> dict[str, Any]:
        """The description with its class file read: what a cell carries (options["folder"])."""
        classes = self.classes
        if isinstance(classes, str):
            path = Path(root) / self.path / classes
            if not path.is_file():
                raise ValueError(f"custom.{name}.classes: class file {path} not found")
            classes = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        problems = []
        if not classes or len(set(classes)) != len(classes):
            problems.append(f"custom.{name}.classes: expected distinct class names, got {len(classes)} "
                            f"({len(classes) - len(set(classes))} repeated)")
        if self.palette is not None and len(self.palette) != len(classes):
            problems.append(f"custom.{name}.palette: {len(self.palette)} colours for {len(classes)} classes")
        unknown = [c for c in self.focus_classes if c not in classes]
        if unknown:
            problems.append(f"custom.{name}.focus_classes: {unknown[0]!r} is not one of its classes")
        if problems:
            raise ValueError("\n".join(problems))
        return {**self.model_dump(mode="json"), "classes": classes}


class DataConfig(Strict):
    root: str = "datasets"
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-dataset options, e.g. context_scenes: {num_train: 400}"
    )
    custom: dict[str, FolderDatasetConfig] = Field(
        default_factory=dict, description="your own datasets: name -> folders, classes (harness/data/folder.py)"
    )

    @field_validator("options")
    @classmethod
    def _known_datasets(cls, v: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        if not _REGISTRY_CHECKS.get():
            return v
        from harness.data import CARD_OPTIONS, dataset_names, validate_options

        custom = _custom_names(info)
        _check_names(list(v), dataset_names() + custom, "dataset")
        for name, opts in v.items():
            if name in custom:
                _check_names(list(opts), list(CARD_OPTIONS), f"option of {name} (describe it under data.custom)")
            else:
                validate_options(name, opts)
        return v

    @model_validator(mode="after")
    def _custom_datasets(self) -> "DataConfig":
        if self.custom and _REGISTRY_CHECKS.get():
            from harness.data import dataset_names

            taken = [name for name in self.custom if name in dataset_names()]
            if taken:
                raise ValueError(f"custom.{taken[0]}: a built-in dataset has this name; choose another")
        for name, description in self.custom.items():
            description.resolved(self.root, name)
        return self

    def options_of(self, dataset: str) -> dict[str, Any]:
        """A cell's dataset options: data.options.<dataset>, plus the description of a custom dataset."""
        options = dict(self.options.get(dataset, {}))
        if dataset in self.custom:
            options["folder"] = self.custom[dataset].resolved(self.root, dataset)
        return options


class Override(Strict):
    """Settings for the cells that match: e.g. match {framework: fcn, dataset: ade20k},
    set {model.feats_channels: 1024}. Applied in file order, before any sweep."""

    match: dict[Literal["framework", "dataset", "idr", "seed"], Any] = Field(default_factory=dict)
    set: dict[str, Any] = Field(min_length=1)

    @field_validator("set")
    @classmethod
    def _settable(cls, v: dict[str, Any]) -> dict[str, Any]:
        for path in v:
            if path.split(".", 1)[0] not in CELL_SECTIONS or "." not in path:
                raise ValueError(f"cannot set {path!r}; allowed: keys under {', '.join(CELL_SECTIONS)}")
        return v


class Experiment(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    findings: str = Field(default="", description="printed after the run's tables: what a study of this experiment "
                                                  "found and where it is written up (docs/findings.md)")
    grid: Grid
    model: ModelConfig = ModelConfig()
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    scaling: ScalingConfig = ScalingConfig()
    data: DataConfig = DataConfig()
    overrides: list[Override] = Field(default_factory=list, description="per-framework/dataset settings")


class Cell(Strict):
    """One trained-and-evaluated model: the unit of work and of results."""

    experiment: str
    framework: str
    dataset: str
    idr: bool
    seed: int
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    scaling: ScalingConfig
    data_root: str
    data_options: dict[str, Any]
    sweep: dict[str, Any] = Field(default_factory=dict, description="this cell's swept values")

    @property
    def cell_id(self) -> str:
        framework = self.framework.replace(":", "-")  # an import path (my_pkg.heads:HEAD) as a folder name
        variant = f"{framework}+idr" if self.idr else framework
        swept = "".join(f"_{path.rsplit('.', 1)[-1]}{value}" for path, value in self.sweep.items())
        return f"{variant}_{self.dataset}_{self.model.backbone}_s{self.seed}{swept}"


def _set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    node = raw
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    if leaf not in node:
        raise KeyError(path)
    node[leaf] = value


def _cell_sections(exp: Experiment, keys: dict[str, Any], assignment: dict[str, Any]) -> dict[str, Any]:
    """model/train/eval/scaling of one cell: matching overrides, then swept values; validated."""
    raw = {name: getattr(exp, name).model_dump() for name in CELL_SECTIONS}
    for index, override in enumerate(exp.overrides):
        if all(keys[k] == v for k, v in override.match.items()):
            for path, value in override.set.items():
                try:
                    _set_path(raw, path, value)
                except KeyError:
                    raise KeyError(f"overrides.{index}.set: {path!r}") from None
    for path, value in assignment.items():
        try:
            _set_path(raw, path, value)
        except KeyError:
            where = "grid.sweep" if path in exp.grid.sweep else "grid.variants"
            raise KeyError(f"{where}: {path!r}") from None
    sections = {}
    for name in CELL_SECTIONS:
        try:
            section = type(getattr(exp, name))
            sections[name] = section.model_validate(raw[name])
        except ValidationError as err:
            where = f"cell {keys['framework']}/{keys['dataset']}: {name}"
            raise ValueError(format_validation_error(where, err, section).replace(f"{where}: ", f"{where}.")) from None
    return sections


def _carries_plugin(framework: str) -> bool:
    if not _REGISTRY_CHECKS.get():
        return False
    from models.registry import carries_plugin

    return carries_plugin(framework)


def expand_cells(exp: Experiment) -> list[Cell]:
    """The experiment's cells, in a stable order (framework, dataset, seed, sweep, baseline first),
    each followed by its variants (grid.variants, in file order).

    A context scheme with no IDR variant (models.registry.SCHEMES) has only its baseline cells.
    """
    sweep_paths = list(exp.grid.sweep)
    assignments = [dict(zip(sweep_paths, values)) for values in itertools.product(*exp.grid.sweep.values())]
    cells = []
    for framework, dataset, seed, assignment, idr in itertools.product(
        exp.grid.frameworks, exp.grid.datasets, exp.grid.seeds, assignments, exp.grid.idr
    ):
        if idr and _carries_plugin(framework):
            continue  # the idr axis applies to the frameworks that take IDR
        keys = {"framework": framework, "dataset": dataset, "idr": idr, "seed": seed}
        if exp.grid.excludes(keys):
            continue
        variants = [{**assignment, **v.set} for v in exp.grid.variants if v.matches(keys)]
        for values in [assignment, *variants]:
            cells.append(
                Cell(
                    experiment=exp.name,
                    framework=framework,
                    dataset=dataset,
                    idr=idr,
                    seed=seed,
                    data_root=exp.data.root,
                    data_options=exp.data.options_of(dataset),
                    sweep=values,
                    **_cell_sections(exp, keys, values),
                )
            )
    _check_unique_ids(cells)
    return cells


def _check_unique_ids(cells: list[Cell]) -> None:
    seen: set[str] = set()
    for cell in cells:
        if cell.cell_id in seen:
            raise ValueError(f"grid: two cells are both {cell.cell_id} (a variant repeats a cell)")
        seen.add(cell.cell_id)


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _allowed_keys(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """Field names of the model section that `loc` (ending in the bad key) lives in."""
    model = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _near_miss(key: str, allowed: list[str]) -> str | None:
    """The allowed key `key` is most likely a misspelling of, if any is close enough."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return close[0] if close else None


def _near_misses(errors: list[dict], root: type[BaseModel]) -> dict[tuple[Any, ...], str]:
    """Location of each unknown key -> the allowed key it is close to (same section)."""
    found = {}
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden" and loc:
            guess = _near_miss(str(loc[-1]), _allowed_keys(loc, root))
            if guess is not None:
                found[loc] = guess
    return found


def _error_line(source: str, error: dict, near_misses: dict[tuple[Any, ...], str], root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    key = _format_loc(loc) or "<top>"
    if error["type"] == "extra_forbidden":
        guess = near_misses.get(loc)
        if guess is not None:
            return f"{source}: {key}: unknown key; did you mean {_format_loc((*loc[:-1], guess))}?"
        return f"{source}: {key}: unknown key; allowed: {', '.join(_allowed_keys(loc, root))}"
    if error["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    msg = error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    got_text = "" if error["type"] == "value_error" or isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"{source}: {key}: {msg}{got_text}"


def format_validation_error(source: str, err: ValidationError, root: type[BaseModel] = Experiment) -> str:
    """Every problem, one line each, the key path as written. A required key reported missing
    while a near-miss of it was written is left out: the near-miss line says what to type."""
    errors = err.errors()
    near_misses = _near_misses(errors, root)
    written_for = {(*loc[:-1], guess) for loc, guess in near_misses.items()}
    lines = [
        _error_line(source, error, near_misses, root)
        for error in errors
        if not (error["type"] == "missing" and tuple(error["loc"]) in written_for)
    ]
    return "\n".join(dict.fromkeys(lines))


def apply_override(raw: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one `a.b.c=value` override (value parsed as YAML) to a raw config dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected KEY.PATH=VALUE")
    path, value_text = assignment.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set {assignment}: empty key path")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {path}: value is not valid YAML ({exc.problem})") from None
    out = copy.deepcopy(raw)
    node = out
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {path}: {'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value
    return out


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """Read, override and validate an experiment file; raises ConfigError with one line."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"{source}: no such experiment file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    if raw.get("kind") == "released_models":  # experiments/released.yaml: checkpoints to score, nothing to train
        raise ConfigError(f"{source}: lists released models, not an experiment; run `python -m harness.released {source}`")
    for assignment in overrides:
        raw = apply_override(raw, assignment)
    with _without_registry_checks():
        _validate(raw, source)
    return _validate(raw, source)


def custom_dataset(path: str | Path, name: str) -> tuple[Path, dict[str, Any]]:
    """(data root, dataset options) of the folder dataset `name` that experiment `path` describes
    under data.custom; ConfigError (one line) if the file is bad or does not describe it."""
    exp = load_experiment(path)
    if name not in exp.data.custom:
        known = ", ".join(exp.data.custom) or "none"
        raise ConfigError(f"{path}: data.custom has no dataset {name!r} (it describes: {known})")
    return Path(exp.data.root).expanduser(), exp.data.options_of(name)


def validated_cell(data: dict[str, Any]) -> Cell:
    """A cell the driver has validated in full, rebuilt in a Ray process without importing the registries."""
    with _without_registry_checks():
        return Cell.model_validate(data)


def _validate(raw: dict[str, Any], source: str) -> Experiment:
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    custom = data.get("custom") if isinstance(data.get("custom"), dict) else {}
    try:
        exp = Experiment.model_validate(raw, context={"custom_datasets": list(custom)})
        expand_cells(exp)  # swept values are validated where they land
        return exp
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err)) from None
    except KeyError as err:
        raise ConfigError(f"{source}: {err.args[0]} is not a key of its section") from None
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
