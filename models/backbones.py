"""Backbones from timm as four-level `features_only` pyramids; weights only from local files.

`build_backbone(name, pretrained, output_stride)` returns a :class:`Backbone` whose forward gives
the last four feature maps of a timm model as NCHW tensors; `.channels` lists their widths and
`.strides` their output strides.

Families the paper uses:

* ResNet-50/101 V1c (`resnet50c`, `resnet101c`): timm's "c" variants have the deep 3x3 stem
  (3->32->32->64, stride 2 in the first conv, then max-pool) and strided 1x1 downsampling convs
  (no average-pool downsampling: that is the "d" variant). Dilated to output stride 8 or 16 this
  is mmsegmentation's "R-50-D8"/"R-50-D16": with OS8, layer3 runs at dilation 2 and layer4 at
  dilation 4; the first block of each dilated stage uses half the stage's dilation (timm's
  `first_dilation`), which is mmsegmentation's `contract_dilation=True` of the R-50-D8 configs.
* Swin-T/B/L (`swin_tiny_patch4_window7_224`, `swin_base_patch4_window12_384`,
  `swin_large_patch4_window12_384`; the paper's ImageNet-22k Swin-L is the tag
  `swin_large_patch4_window12_384.ms_in22k`). timm's Swin emits NHWC maps; they are returned
  as NCHW. The model is built with a dynamic input size and `always_partition=True` (window
  size and shift kept in every stage whatever the input size, as the segmentation Swin of
  mmsegmentation / SSSegmentation), and inputs are zero-padded on the right and bottom to a
  multiple of the patch size. The (shifted) window attention pads each map to a multiple of the
  window *before* the cyclic shift, as those codebases do (timm shifts first and pads after,
  which differs whenever a side is not a multiple of the window, e.g. 512x512 crops:
  :func:`pad_then_shift_attention`). As in those codebases a LayerNorm (freshly initialised: it is not
  in the ImageNet checkpoints) is applied to every output level. Swin's strides are fixed
  (4, 8, 16, 32): `output_stride` is ignored for it, with a log line.
* Any other timm model with `features_only` support: its last four levels; `output_stride` is
  passed to models that accept it and ignored (logged) for the others.

`pretrained` is one of

* `None`: random initialisation;
* a path to a local timm-style state dict (`.pth`, `.pt`, `.bin` via `torch.load` with
  `weights_only=True`, or `.safetensors`), loaded strictly through timm's checkpoint filter for
  the model (so original-format checkpoints that timm converts also load);
* the word `"cache"`: the model's default pretrained tag (or the tag in the name) taken from the
  local caches only, see :func:`cached_weights_candidates`. Nothing is ever downloaded; when no
  file is found, :class:`PretrainedWeightsError` names the paths that were looked at.

timm (and with it torchvision) is imported inside the functions that use it, so that validating
a config or planning a run does not pay for it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import types
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

CACHE = "cache"

#: Short names accepted besides timm's model names.
ALIASES: dict[str, str] = {
    "resnet50_v1c": "resnet50c",
    "resnet101_v1c": "resnet101c",
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_b": "swin_base_patch4_window12_384",
    "swin_l": "swin_large_patch4_window12_384",
}

_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")
_TIMM_HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but are not on disk (no hub access at run time)."""


def resolve_name(name: str) -> str:
    """The timm model name for `name` (aliases resolved)."""
    return ALIASES.get(name, name)


def is_known_backbone(name: str) -> bool:
    import timm

    name = resolve_name(name)
    if name.startswith(_HUB_PREFIXES):  # would need the hub at build time
        return False
    return timm.is_model(name)


# ----------------------------------------------------------------------------------- weights


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache directory, from the environment as it is now."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if not hf_home:
        hf_home = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def _torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint directory (TORCH_HOME aware), without touching the network."""
    return Path(torch.hub.get_dir()).expanduser() / "checkpoints"


def _hf_cached_file(repo_id: str, filename: str, revision: str | None) -> tuple[Path | None, Path]:
    """(the cached file or None, the path pattern it would have) in the local HF hub cache."""
    repo_dir = _hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    pattern = snapshots / "*" / filename
    ref = repo_dir / "refs" / (revision or "main")
    if ref.is_file():
        candidate = snapshots / ref.read_text().strip() / filename
        if candidate.is_file():
            return candidate, pattern
    if revision and (snapshots / revision / filename).is_file():  # revision given as a commit hash
        return snapshots / revision / filename, pattern
    if snapshots.is_dir() and not revision:
        found = sorted(snapshots.glob(f"*/{filename}"), key=lambda p: p.stat().st_mtime, reverse=True)
        if found:
            return found[0], pattern
    return None, pattern


def cached_weights_candidates(name: str) -> list[tuple[Path | None, Path]]:
    """Where "cache" looks for `name`'s default (or tagged) pretrained weights, in order.

    1. the Hugging Face hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
       `~/.cache/huggingface/hub`): `models--<org>--<repo>/snapshots/<rev>/<file>` for the tag's
       `hf_hub_id` and timm's file names (`hf_hub_filename`, else `model.safetensors` then
       `pytorch_model.bin`), the revision read from `refs/main` (any snapshot if that is absent);
    2. the torch hub cache (`$TORCH_HOME/hub/checkpoints/<file name of the tag's url>`).

    Each entry is (existing file or None, the path or pattern looked at). Purely local.
    """
    import timm

    cfg = timm.models.get_pretrained_cfg(resolve_name(name))
    if cfg is None:
        return []
    out: list[tuple[Path | None, Path]] = []
    if cfg.hf_hub_id:
        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _TIMM_HF_FILENAMES
        for filename in filenames:
            out.append(_hf_cached_file(repo_id, filename, revision or None))
    if cfg.url:
        path = _torch_hub_checkpoints() / os.path.basename(urlparse(cfg.url).path)
        out.append((path if path.is_file() else None, path))
    return out


def resolve_pretrained(name: str, pretrained: str | os.PathLike | None) -> Path | None:
    """The local weights file `pretrained` stands for, or None; raises PretrainedWeightsError.

    Never downloads: a path must exist, and "cache" only reads the local caches.
    """
    if pretrained is None:
        return None
    if str(pretrained) == CACHE:
        candidates = cached_weights_candidates(name)
        for found, _ in candidates:
            if found is not None:
                return found
        import timm

        tag = timm.models.get_pretrained_cfg(resolve_name(name))
        what = f"{tag.architecture}.{tag.tag}" if tag is not None and tag.tag else resolve_name(name)
        looked = "; ".join(str(pattern) for _, pattern in candidates) or "(timm lists no pretrained weights for it)"
        raise PretrainedWeightsError(
            f"model.pretrained: cache: no local weights for {what}; looked for {looked}; "
            f"nothing is downloaded: put the file there or give its path"
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(
            f"model.pretrained: {path} does not exist; expected a local timm state-dict file "
            f"(.pth/.bin/.safetensors) for {name!r} (weights are never downloaded at run time)"
        )
    return path


# ---------------------------------------------------------------------------------- backbone


class Backbone(nn.Module):
    """A timm `features_only` model as a four-level NCHW pyramid.

    `body` is the timm feature model; `channels` and `strides` describe the four outputs.
    """

    def __init__(
        self,
        body: nn.Module,
        name: str,
        channels: list[int],
        strides: list[int],
        nhwc: bool = False,
        pad_multiple: int = 1,
        out_norms: bool = False,
    ):
        super().__init__()
        self.body = body
        self.name = name
        self.channels = list(channels)
        self.strides = list(strides)
        self.nhwc = nhwc
        self.pad_multiple = pad_multiple
        self.out_norms = nn.ModuleList(nn.LayerNorm(c) for c in channels) if out_norms else None

    @property
    def output_stride(self) -> int:
        return self.strides[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.pad_multiple > 1:
            h, w = x.shape[-2:]
            pad_h, pad_w = -h % self.pad_multiple, -w % self.pad_multiple
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h))
        feats = list(self.body(x))
        if self.out_norms is not None:  # NHWC here: LayerNorm over the channel (last) axis
            feats = [norm(f) for norm, f in zip(self.out_norms, feats)]
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return feats


def _unexpected_kwarg(err: TypeError, names: set[str]) -> str | None:
    text = str(err)
    if "unexpected keyword argument" not in text:
        return None
    for key in names:
        if f"'{key}'" in text:
            return key
    return None


def _create(name: str, kwargs: dict, optional: dict) -> tuple[nn.Module, dict]:
    """timm.create_model with `optional` kwargs dropped one by one where the model rejects them."""
    import timm

    optional = dict(optional)
    while True:
        try:
            return timm.create_model(name, **kwargs, **optional), optional
        except TypeError as err:
            key = _unexpected_kwarg(err, set(optional))
            if key is None:
                raise
            optional.pop(key)


@contextlib.contextmanager
def _recording_loads():
    """Collect the results of every `load_state_dict` call made inside the block.

    timm loads pretrained weights non-strictly when building a `features_only` model (it drops
    the classifier); the recorded missing / unexpected keys let us check the fit ourselves.
    """
    results: list = []
    original = nn.Module.load_state_dict

    def recording(self, state_dict, *args, **kwargs):
        result = original(self, state_dict, *args, **kwargs)
        results.append(result)
        return result

    nn.Module.load_state_dict = recording
    try:
        yield results
    finally:
        nn.Module.load_state_dict = original


def _check_fit(arch: str, weights: Path, results: list) -> None:
    """Raise when the weights left backbone tensors unset or carried tensors the model lacks."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    classifiers = getattr(cfg, "classifier", None) or ()
    if isinstance(classifiers, str):
        classifiers = (classifiers,)
    heads = tuple(f"{c}." for c in classifiers)
    missing = [k for r in results for k in r.missing_keys if not k.startswith(heads)]
    unexpected = [k for r in results for k in r.unexpected_keys if not k.startswith(heads)]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model tensors missing from the file (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} file tensors not in the model (e.g. {', '.join(unexpected[:3])})")
        raise RuntimeError(f"model.pretrained: {weights} does not fit {arch!r}: {'; '.join(parts)}")


def build_backbone(
    name: str, pretrained: str | None = None, output_stride: int = 8, drop_path_rate: float = 0.0
) -> Backbone:
    """A timm model returning its last four feature maps (NCHW); `.channels` lists their widths.

    `pretrained`: None, a local weights file, or "cache" (local caches only; see the module
    docstring). Nothing is downloaded. `drop_path_rate`: stochastic depth (Swin-L runs: 0.3).
    """
    import timm

    arch = resolve_name(name)
    if not is_known_backbone(arch):
        raise KeyError(f"unknown backbone {name!r}; allowed: any timm model name with features_only support")
    weights = resolve_pretrained(arch, pretrained)
    kwargs: dict = {"features_only": True, "out_indices": 4, "pretrained": weights is not None}
    if weights is not None:
        # the only source timm may use is this file: no hub id, no url
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights), "hf_hub_id": None, "url": None, "source": ""}

    is_swin = timm.models.is_model_in_modules(arch, ["swin_transformer"])
    optional = _optional_kwargs(arch, output_stride, is_swin)
    if drop_path_rate > 0:
        kwargs["drop_path_rate"] = drop_path_rate
    else:  # said explicitly: timm's own default is not 0 for every model (0.1 for Swin)
        optional["drop_path_rate"] = 0.0

    try:
        with _recording_loads() as loads:
            body, used = _create(arch, kwargs, optional)
    except (RuntimeError, KeyError, ValueError) as err:
        if weights is None:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(f"model.pretrained: {weights} does not fit {arch!r}: {first}") from err
    except AssertionError as err:
        raise ValueError(f"backbone {name!r} has fewer than four feature levels ({err})") from err
    if weights is not None:
        _check_fit(arch, weights, loads)

    strides = list(body.feature_info.reduction())
    channels = list(body.feature_info.channels())
    if len(channels) != 4:
        raise ValueError(f"backbone {name!r} gives {len(channels)} feature levels; four are needed")
    _log_output_stride(arch, output_stride, strides, "output_stride" in used)
    nhwc = str(getattr(body, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC")
    if is_swin:
        _pad_before_shift(body)
    return Backbone(body, arch, channels, strides, nhwc=nhwc, pad_multiple=_pad_multiple(body), out_norms=is_swin)


def _optional_kwargs(arch: str, output_stride: int, is_swin: bool) -> dict:
    """timm arguments a model may not accept (`_create` drops those it refuses)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    optional: dict = {}
    if output_stride != 32:
        optional["output_stride"] = output_stride
    if is_swin or (cfg is not None and cfg.fixed_input_size):
        optional["dynamic_img_size"] = True  # accept input sizes other than the pretraining size
    if is_swin:
        optional["always_partition"] = True
    return optional


def _log_output_stride(arch: str, output_stride: int, strides: list[int], accepted: bool) -> None:
    if output_stride == 32:
        return
    if not accepted:
        logger.info("backbone %s: output_stride=%d ignored (it has fixed strides %s)", arch, output_stride, strides)
    elif strides[-1] != output_stride:
        logger.warning("backbone %s: asked for output_stride=%d, its strides are %s", arch, output_stride, strides)


def _pad_multiple(body: nn.Module) -> int:
    """Input sides must be a multiple of this (a patch embedding without dynamic padding), else 1."""
    from timm.layers import PatchEmbed

    for module in body.modules():
        if isinstance(module, PatchEmbed):
            return 1 if module.dynamic_img_pad else max(module.patch_size)
    return 1


def pad_then_shift_attention(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(S)W-MSA of a timm `SwinTransformerBlock` on an NHWC map, computed as the segmentation Swin
    of mmsegmentation / SSSegmentation does: zero-pad to a multiple of the window, cyclic shift
    of the padded map, shifted windows masked on the padded grid, shift back, crop."""
    from timm.models.swin_transformer import window_partition, window_reverse

    _, height, width, channels = x.shape
    (win_h, win_w), shift = block.window_size, tuple(block.shift_size)
    padded = F.pad(x, (0, 0, 0, -width % win_w, 0, -height % win_h))
    padded_h, padded_w = padded.shape[1], padded.shape[2]
    if any(shift):
        padded = torch.roll(padded, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    mask = block.get_attn_mask(padded)  # region ids of the padded grid (None without a shift)
    windows = window_partition(padded, block.window_size).view(-1, win_h * win_w, channels)
    attended = block.attn(windows, mask=mask).view(-1, win_h, win_w, channels)
    merged = window_reverse(attended, block.window_size, padded_h, padded_w)
    if any(shift):
        merged = torch.roll(merged, shifts=shift, dims=(1, 2))
    return merged[:, :height, :width, :].contiguous()


def _pad_before_shift(body: nn.Module) -> None:
    """Make every Swin block of `body` attend with :func:`pad_then_shift_attention`."""
    for module in body.modules():
        if type(module).__name__ == "SwinTransformerBlock":
            module._attn = types.MethodType(pad_then_shift_attention, module)
