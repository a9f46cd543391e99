"""Context scenes: the embedded synthetic benchmark in which only context decides the label.

Every scene is a neutral "ground" background with two context bands and a few objects:

* exactly one of {water, road} as a band along the top or bottom edge (20-30% of the height,
  full width);
* exactly one of {grass, snow} as a band along the left or right edge (20-30% of the width),
  covering only the rows the first band leaves free;
* 1-3 vehicle-like objects (red rounded boxes): class ``boat`` with water, ``car`` with road;
* 1-3 animal-like objects (cream diamonds with a dark head tip): ``sheep`` with grass,
  ``goat`` with snow;
* 0-2 rocks (slate square blobs), an unambiguous class with its own look.

Boat and car (and sheep and goat) are drawn by the same code from the same appearance seed:
their pixels are identical, so a model can only tell them apart by looking at which context
band is elsewhere in the image. Objects stand on the ground, keep a margin of several pixels
from both bands and never overlap each other.

A scene is sampled as a :class:`Layout` (pure data: classes, band geometry, object boxes and
seeds) and then rendered by the pure function :func:`render_scene`. :func:`swap_context`
swaps every class for its partner while keeping geometry and seeds, which changes the pixels
of the context bands only. Scene ``index`` of a split is drawn from
``np.random.default_rng([seed, split_code, index])`` (train 0, val 1).

Files are written once under ``<root>/context_scenes/seed{S}_size{N}_train{T}_val{V}/`` by
:func:`ensure_generated` (see ``datasets/README.md``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.data.base import DataError, Sample
from harness.data.cards import DatasetCard
from harness.data.registry import DatasetSpec, register

NAME = "context_scenes"
FORMAT_VERSION = 1

CLASS_NAMES: tuple[str, ...] = (
    "ground",
    "water",
    "road",
    "grass",
    "snow",
    "boat",
    "car",
    "sheep",
    "goat",
    "rock",
)
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}

# Label colours for visualisation only (the rendered images use the appearance below).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (140, 125, 105),  # ground
    (30, 90, 210),  # water
    (90, 90, 90),  # road
    (50, 170, 60),  # grass
    (235, 240, 250),  # snow
    (255, 150, 20),  # boat
    (210, 30, 40),  # car
    (250, 225, 120),  # sheep
    (150, 60, 200),  # goat
    (60, 60, 75),  # rock
)

AMBIGUOUS_PAIRS: tuple[tuple[str, str], ...] = (("boat", "car"), ("sheep", "goat"))
CONTEXT_CLASSES: tuple[str, ...] = ("water", "road", "grass", "snow")
HORIZONTAL_CONTEXT = ("water", "road")  # band along the top or bottom edge
VERTICAL_CONTEXT = ("grass", "snow")  # band along the left or right edge
VEHICLE_FOR = {"water": "boat", "road": "car"}
ANIMAL_FOR = {"grass": "sheep", "snow": "goat"}
PARTNER: dict[str, str] = {
    "water": "road",
    "road": "water",
    "grass": "snow",
    "snow": "grass",
    "boat": "car",
    "car": "boat",
    "sheep": "goat",
    "goat": "sheep",
}
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}

MIN_IMAGE_SIZE = 32
BAND_FRACTION = (0.20, 0.30)  # band thickness as a fraction of the image side
OBJECT_FRACTION = (0.10, 0.20)  # long side of a vehicle / animal box
ROCK_FRACTION = (0.10, 0.15)  # side of a rock box
OBJECT_COUNTS = {"vehicle": (1, 3), "animal": (1, 3), "rock": (0, 2)}  # inclusive ranges
RANDOM_TRIES = 12  # rejection-sampling tries before an exact search for a free place
OBJECT_GAP = 2  # free pixels between two object boxes
BORDER = 1  # free pixels between an object box and an image edge without a band
NOISE_AMPLITUDE = 6  # per-pixel, per-channel uniform integer noise in [-6, 6]

GROUND_RGB = (150.0, 135.0, 115.0)

DEFAULT_OPTIONS: dict[str, Any] = {"seed": 0, "num_train": 512, "num_val": 128, "image_size": 64}


def object_margin(image_size: int) -> int:
    """Ground pixels kept free between any object box and a context band (4 at 64 px)."""
    return max(3, int(round(0.06 * image_size)))


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class SceneObject:
    kind: str  # "vehicle", "animal" or "rock": decides the appearance
    class_name: str  # label class: boat/car, sheep/goat or rock
    top: int
    left: int
    height: int
    width: int
    appearance_seed: int


@dataclass(frozen=True)
class Layout:
    """Everything :func:`render_scene` needs; geometry in pixels of an image_size square."""

    image_size: int
    h_class: str  # "water" or "road": band along the top or bottom edge, full width
    h_side: str  # "top" or "bottom"
    h_extent: int  # band height in pixels
    h_seed: int  # texture seed of that band
    v_class: str  # "grass" or "snow": band along the left or right edge
    v_side: str  # "left" or "right"
    v_extent: int  # band width in pixels (it spans the rows the first band leaves free)
    v_seed: int
    noise_seed: int
    objects: tuple[SceneObject, ...]

    def h_rows(self) -> tuple[int, int]:
        s = self.image_size
        return (0, self.h_extent) if self.h_side == "top" else (s - self.h_extent, s)

    def ground_rows(self) -> tuple[int, int]:
        s = self.image_size
        return (self.h_extent, s) if self.h_side == "top" else (0, s - self.h_extent)

    def v_cols(self) -> tuple[int, int]:
        s = self.image_size
        return (0, self.v_extent) if self.v_side == "left" else (s - self.v_extent, s)

    def object_area(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): where object boxes may lie (margin from bands, border elsewhere)."""
        s, m = self.image_size, object_margin(self.image_size)
        if self.h_side == "top":
            y0, y1 = self.h_extent + m, s - BORDER
        else:
            y0, y1 = BORDER, s - self.h_extent - m
        if self.v_side == "left":
            x0, x1 = self.v_extent + m, s - BORDER
        else:
            x0, x1 = BORDER, s - self.v_extent - m
        return y0, y1, x0, x1


def _check_image_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"{NAME}.image_size: expected an int, got {image_size!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"{NAME}.image_size: must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    return int(image_size)


def _size_range(image_size: int, fraction: tuple[float, float], minimum: int) -> tuple[int, int]:
    lo = max(minimum, int(round(fraction[0] * image_size)))
    hi = max(lo, int(round(fraction[1] * image_size)))
    return lo, hi


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row (h x 1) and column (1 x w) pixel indices, like np.ogrid but cheaper."""
    return np.arange(h, dtype=np.float64)[:, None], np.arange(w, dtype=np.float64)[None, :]


def _free_positions(blocked: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (ys, xs) of every h x w window containing no blocked pixel."""
    s = blocked.shape[0]
    if h > s or w > s:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ii = np.zeros((s + 1, s + 1), np.int32)
    ii[1:, 1:] = blocked.astype(np.int32).cumsum(0).cumsum(1)
    sums = ii[h:, w:] - ii[:-h, w:] - ii[h:, :-w] + ii[:-h, :-w]
    return np.nonzero(sums == 0)


def _place(
    blocked: np.ndarray, area: tuple[int, int, int, int], h: int, w: int, rng: np.random.Generator
) -> tuple[int, int] | None:
    """A top-left corner drawn uniformly among the h x w windows free of blocked pixels, or None.

    Every free window lies inside `area` (y0, y1, x0, x1). A few rejection-sampling tries inside
    it first (uniform over the free windows, and cheap), then an exact draw among all of them.
    """
    y0, y1, x0, x1 = area
    if y1 - y0 >= h and x1 - x0 >= w:
        for _ in range(RANDOM_TRIES):
            top, left = (int(v) for v in rng.integers((y0, x0), (y1 - h + 1, x1 - w + 1)))
            if not blocked[top : top + h, left : left + w].any():
                return top, left
    ys, xs = _free_positions(blocked, h, w)
    if len(ys) == 0:
        return None
    pick = int(rng.integers(len(ys)))
    return int(ys[pick]), int(xs[pick])


def _object_box(kind: str, rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    """(height, width) of a new object box of that kind."""
    if kind == "vehicle":
        lo, hi = _size_range(image_size, OBJECT_FRACTION, 5)
        width = int(rng.integers(lo, hi + 1))
        height = max(4, int(round(width * rng.uniform(0.55, 0.75))))
        return height, width
    if kind == "animal":
        lo, hi = _size_range(image_size, OBJECT_FRACTION, 5)
        height = int(rng.integers(lo, hi + 1))
        width = max(5, int(round(height * rng.uniform(0.75, 1.0))))
        return height, width
    lo, hi = _size_range(image_size, ROCK_FRACTION, 4)
    side = int(rng.integers(lo, hi + 1))
    return side, side


def sample_layout(rng: np.random.Generator, image_size: int) -> Layout:
    """Draw one scene. The number and order of draws do not depend on the classes chosen."""
    s = _check_image_size(image_size)
    noise_seed, h_seed, v_seed = (int(v) for v in rng.integers(0, 2**31 - 1, size=3))
    h_class = HORIZONTAL_CONTEXT[int(rng.integers(2))]
    h_side = ("top", "bottom")[int(rng.integers(2))]
    h_extent = int(rng.integers(*_band_bounds(s)))
    v_class = VERTICAL_CONTEXT[int(rng.integers(2))]
    v_side = ("left", "right")[int(rng.integers(2))]
    v_extent = int(rng.integers(*_band_bounds(s)))
    layout = Layout(s, h_class, h_side, h_extent, h_seed, v_class, v_side, v_extent, v_seed, noise_seed, ())

    counts = {kind: int(rng.integers(lo, hi + 1)) for kind, (lo, hi) in OBJECT_COUNTS.items()}
    # The first vehicle and the first animal are placed before anything else so they always fit;
    # the others come in random order and are dropped when no room is left.
    extra = ["vehicle"] * (counts["vehicle"] - 1) + ["animal"] * (counts["animal"] - 1) + ["rock"] * counts["rock"]
    order = ["vehicle", "animal"] + [extra[i] for i in rng.permutation(len(extra))]

    area = y0, y1, x0, x1 = layout.object_area()
    blocked = np.ones((s, s), dtype=bool)
    blocked[y0:y1, x0:x1] = False
    class_for = {"vehicle": VEHICLE_FOR[h_class], "animal": ANIMAL_FOR[v_class], "rock": "rock"}
    objects: list[SceneObject] = []
    for n, kind in enumerate(order):
        height, width = _object_box(kind, rng, s)
        appearance_seed = int(rng.integers(0, 2**31 - 1))
        spot = _place(blocked, area, height, width, rng)
        while spot is None and n < 2 and min(height, width) > 3:  # required object: shrink to fit
            height, width = height - 1, width - 1
            spot = _place(blocked, area, height, width, rng)
        if spot is None:
            if n < 2:
                raise RuntimeError(f"{NAME}: no room for a {kind} in a {s}x{s} scene")
            continue
        top, left = spot
        g = OBJECT_GAP
        blocked[max(top - g, 0) : top + height + g, max(left - g, 0) : left + width + g] = True
        objects.append(SceneObject(kind, class_for[kind], top, left, height, width, appearance_seed))
    return replace(layout, objects=tuple(objects))


def _band_bounds(image_size: int) -> tuple[int, int]:
    lo, hi = _size_range(image_size, BAND_FRACTION, 1)
    return lo, hi + 1


def swap_context(layout: Layout) -> Layout:
    """The same scene with water<->road, grass<->snow, boat<->car, sheep<->goat."""
    objects = tuple(replace(o, class_name=PARTNER.get(o.class_name, o.class_name)) for o in layout.objects)
    return replace(layout, h_class=PARTNER[layout.h_class], v_class=PARTNER[layout.v_class], objects=objects)


# ----------------------------------------------------------------------------- rendering


def _water(h: int, w: int, seed: int, scale: float) -> np.ndarray:
    """Blue with horizontal, wobbling wave crests."""
    rng = np.random.default_rng(seed)
    y, x = _grid(h, w)
    period = rng.uniform(3.5, 5.0) * scale
    wobble_period = rng.uniform(10.0, 16.0) * scale
    wobble = rng.uniform(0.8, 1.4)
    phase, phase2 = rng.uniform(0.0, 2 * np.pi, size=2)
    wave = np.sin(2 * np.pi * y / period + wobble * np.sin(2 * np.pi * x / wobble_period + phase2) + phase)
    crest = np.clip(wave, 0.0, 1.0) ** 3
    rgb = np.empty((h, w, 3), np.float32)
    for c, (base, amp, top) in enumerate(zip((40, 90, 170), (6, 10, 14), (70, 70, 60))):
        rgb[..., c] = base + amp * wave + top * crest
    return rgb


def _road(h: int, w: int, seed: int, scale: float) -> np.ndarray:
    """Dark grey asphalt grain with a dashed light marking along the middle of the band."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = (68.0, 68.0, 72.0)
    rgb += rng.integers(-5, 6, size=(h, w, 1)).astype(np.float32)
    thickness = max(1, int(round(1.5 * scale)))
    dash = max(3, int(round(6 * scale)))
    gap = max(2, int(round(4 * scale)))
    offset = int(rng.integers(0, dash + gap))
    y, x = _grid(h, w)
    row0 = (h - thickness) // 2
    marking = (y >= row0) & (y < row0 + thickness) & (((x + offset) % (dash + gap)) < dash)
    rgb[marking] = (230.0, 220.0, 150.0)
    return rgb


def _grass(h: int, w: int, seed: int, scale: float) -> np.ndarray:
    """Green with vertical blade streaks (a shade per column) and fine speckle."""
    rng = np.random.default_rng(seed)
    column = rng.integers(-24, 25, size=(1, w)).astype(np.float32)
    speckle = rng.integers(-8, 9, size=(h, w)).astype(np.float32)
    shade = column + speckle
    rgb = np.empty((h, w, 3), np.float32)
    for c, (base, gain) in enumerate(zip((70, 145, 55), (0.4, 1.0, 0.3))):
        rgb[..., c] = base + gain * shade
    return rgb


def _snow(h: int, w: int, seed: int, scale: float) -> np.ndarray:
    """Near white with soft blue-grey drifts and sparse sparkles."""
    rng = np.random.default_rng(seed)
    y, x = _grid(h, w)
    py, px = rng.uniform(8.0, 14.0, size=2) * scale
    fy, fx = rng.uniform(0.0, 2 * np.pi, size=2)
    drift = 0.5 * (np.sin(2 * np.pi * y / py + fy) * np.sin(2 * np.pi * x / px + fx) + 1.0)
    sparkle = (rng.random((h, w)) < 0.04).astype(np.float32) * 12.0
    rgb = np.empty((h, w, 3), np.float32)
    for c, (base, amp) in enumerate(zip((238, 240, 246), (20, 15, 6))):
        rgb[..., c] = base - amp * drift + sparkle
    return rgb


_TEXTURES = {"water": _water, "road": _road, "grass": _grass, "snow": _snow}


def _centred_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = _grid(h, w)
    return np.abs(y - (h - 1) / 2.0), np.abs(x - (w - 1) / 2.0)


def _vehicle(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Red rounded box with a pale window strip and a dark base (boat and car alike)."""
    rng = np.random.default_rng(seed)
    dy, dx = _centred_grid(h, w)
    r = max(1.0, 0.35 * min(h, w))
    qy = np.maximum(dy - (h / 2.0 - r), 0.0)
    qx = np.maximum(dx - (w / 2.0 - r), 0.0)
    mask = qy**2 + qx**2 <= r**2
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = np.array((200.0, 55.0, 45.0)) + rng.integers(-12, 13, size=3)
    y = np.arange(h)[:, None]
    window = (y >= 0.15 * h) & (y < 0.45 * h) & (dx < 0.3 * w)
    rgb[np.broadcast_to(window, (h, w))] = (170.0, 200.0, 225.0)
    base_rows = y >= h - max(1, h // 5)
    rgb[np.broadcast_to(base_rows, (h, w))] *= 0.6
    return mask, rgb


def _animal(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cream diamond with woolly speckle and a dark head at the top tip (sheep and goat alike)."""
    rng = np.random.default_rng(seed)
    dy, dx = _centred_grid(h, w)
    mask = dy / (h / 2.0) + dx / (w / 2.0) <= 1.0
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = np.array((228.0, 218.0, 196.0)) + rng.integers(-10, 11, size=3)
    rgb += rng.integers(-12, 13, size=(h, w, 1)).astype(np.float32)
    head = np.broadcast_to(np.arange(h)[:, None] < max(2, int(round(0.28 * h))), (h, w))
    rgb[head] = (70.0, 60.0, 55.0)
    return mask, rgb


def _rock(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Slate-grey square blob with chamfered corners and coarse grain."""
    rng = np.random.default_rng(seed)
    dy, dx = _centred_grid(h, w)
    mask = dy + dx <= rng.uniform(0.7, 0.85) * (h + w) / 2.0
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = (105.0, 105.0, 118.0)
    rgb += rng.integers(-18, 19, size=(h, w, 1)).astype(np.float32)
    return mask, rgb


_OBJECTS = {"vehicle": _vehicle, "animal": _animal, "rock": _rock}


def render_scene(layout: Layout, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HxWx3, label uint8 HxW) of a layout; a pure function of its arguments.

    Appearance depends on the class only for the four context bands: objects are drawn from
    their kind and appearance seed, the ground and the noise are the same for every class.
    """
    s = layout.image_size if image_size is None else _check_image_size(image_size)
    if s != layout.image_size:
        raise ValueError(f"{NAME}: layout was sampled for {layout.image_size} px, not {s} px")
    scale = s / 64.0
    image = np.empty((s, s, 3), np.float32)
    image[:] = GROUND_RGB
    label = np.full((s, s), CLASS_ID["ground"], np.uint8)

    hy0, hy1 = layout.h_rows()
    image[hy0:hy1] = _TEXTURES[layout.h_class](hy1 - hy0, s, layout.h_seed, scale)
    label[hy0:hy1] = CLASS_ID[layout.h_class]
    gy0, gy1 = layout.ground_rows()
    vx0, vx1 = layout.v_cols()
    image[gy0:gy1, vx0:vx1] = _TEXTURES[layout.v_class](gy1 - gy0, vx1 - vx0, layout.v_seed, scale)
    label[gy0:gy1, vx0:vx1] = CLASS_ID[layout.v_class]

    for obj in layout.objects:
        mask, rgb = _OBJECTS[obj.kind](obj.height, obj.width, obj.appearance_seed)
        box = (slice(obj.top, obj.top + obj.height), slice(obj.left, obj.left + obj.width))
        image[box][mask] = rgb[mask]
        label[box][mask] = CLASS_ID[obj.class_name]

    noise = np.random.default_rng(layout.noise_seed).integers(
        -NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=(s, s, 3)
    )
    image += noise.astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _split_code(split: str) -> int:
    if split not in SPLIT_CODES:
        raise DataError(f"{NAME}: unknown split {split!r}; allowed: {', '.join(SPLIT_CODES)}")
    return SPLIT_CODES[split]


def scene_layout(seed: int, split: str, index: int, image_size: int) -> Layout:
    """The layout of scene `index` of `split`."""
    rng = np.random.default_rng([int(seed), _split_code(split), int(index)])
    return sample_layout(rng, image_size)


def generate_scene(seed: int, split: str, index: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) of scene `index` of `split`, identical on every call."""
    layout = scene_layout(seed, split, index, image_size)
    return render_scene(layout, image_size)


# ----------------------------------------------------------------------------- files


def _check_options(seed: Any, num_train: Any, num_val: Any, image_size: Any) -> None:
    for key, value in (("seed", seed), ("num_train", num_train), ("num_val", num_val)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{NAME}.{key}: expected an int, got {value!r}")
        if value < 0:
            raise ValueError(f"{NAME}.{key}: must be >= 0, got {value}")
    _check_image_size(image_size)


def dataset_dir(root: Path, seed: int, num_train: int, num_val: int, image_size: int) -> Path:
    return Path(root) / NAME / f"seed{seed}_size{image_size}_train{num_train}_val{num_val}"


def _is_complete(directory: Path) -> bool:
    return (directory / "meta.json").is_file()


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # no safe liveness probe: assume alive, never delete
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True
    return True


def _remove_stale_partials(final: Path) -> None:
    """Delete temporary folders left by a generation on this host whose process is gone."""
    prefix = f"{final.name}.partial-{_host_tag()}-"
    for path in final.parent.glob(f"{final.name}.partial-*"):
        if not path.name.startswith(prefix):
            continue
        pid_text = path.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _save_png(array: np.ndarray, path: Path) -> None:
    # Fixed settings and no metadata: the bytes depend only on the pixels (and zlib).
    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)


def _write_all(directory: Path, seed: int, num_train: int, num_val: int, image_size: int) -> None:
    for split, count in (("train", num_train), ("val", num_val)):
        image_dir = directory / "images" / split
        label_dir = directory / "labels" / split
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        for index in range(count):
            image, label = generate_scene(seed, split, index, image_size)
            _save_png(image, image_dir / f"{index:05d}.png")
            _save_png(label, label_dir / f"{index:05d}.png")
    meta = {
        "dataset": NAME,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "split_codes": SPLIT_CODES,
        "class_names": list(CLASS_NAMES),
        "palette": [list(c) for c in PALETTE],
        "ambiguous_pairs": [list(p) for p in AMBIGUOUS_PAIRS],
    }
    # meta.json is written last: its presence marks a complete folder.
    (directory / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def ensure_generated(root: Path, seed: int, num_train: int, num_val: int, image_size: int) -> Path:
    """The dataset folder for these options, generated on first use.

    Scenes are written into a temporary sibling folder that is renamed into place only when
    complete, so an interrupted run never leaves a folder that looks complete, and concurrent
    callers either win the rename or use the winner's folder.
    """
    _check_options(seed, num_train, num_val, image_size)
    seed, num_train, num_val, image_size = int(seed), int(num_train), int(num_val), int(image_size)
    final = dataset_dir(Path(root), seed, num_train, num_val, image_size)
    if _is_complete(final):
        _remove_stale_partials(final)
        return final
    if final.exists() and any(final.iterdir()):
        raise DataError(
            f"{final}: folder exists but has no meta.json (incomplete or not written by the harness); "
            "delete it and it will be regenerated"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{final.name}.partial-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_all(tmp, seed, num_train, num_val, image_size)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, final)  # atomic; fails if another caller already put a folder there
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_complete(final):
            raise
    else:  # this caller generated the folder: it also verifies and stamps it
        _verify_generated(Path(root), {"seed": seed, "num_train": num_train, "num_val": num_val, "image_size": image_size})
    _remove_stale_partials(final)
    return final


def _verify_generated(root: Path, options: dict[str, Any]) -> None:
    """Generation ends with the verification `harness.prepare --verify` does for real datasets (and its stamp)."""
    # lazy: verify builds datasets through the registry, where this module registers itself
    from harness.data.verify import verify_dataset

    result = verify_dataset(NAME, root, options)
    if not result.ok:
        raise DataError("; ".join(result.lines()))


# ----------------------------------------------------------------------------- registration


def make_card(options: dict[str, Any]) -> DatasetCard:
    opts = {**DEFAULT_OPTIONS, **options}
    size = _check_image_size(opts["image_size"])
    return DatasetCard(
        name=NAME,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        splits={"train": int(opts["num_train"]), "val": int(opts["num_val"])},
        ignore_index=255,
        base_scale=(size, size),
        ratio_range=(1.0, 1.0),  # no rescaling: a crop could cut the context bands away
        crop_size=(size, size),
        cat_max_ratio=1.0,
        flip_prob=0.5,
        photometric=False,
        test_protocol="whole image, single scale",
        focus_classes=("boat", "car", "sheep", "goat"),
    )


def list_samples(root: Path, split: str, options: dict[str, Any]) -> list[Sample]:
    _split_code(split)
    opts = {**DEFAULT_OPTIONS, **options}
    directory = ensure_generated(Path(root), opts["seed"], opts["num_train"], opts["num_val"], opts["image_size"])
    count = int(opts[f"num_{split}"])
    return [
        Sample(directory / "images" / split / f"{i:05d}.png", directory / "labels" / split / f"{i:05d}.png")
        for i in range(count)
    ]


PREPARE_HINT = (
    "Context scenes are generated automatically on first use under the data root "
    f"(<data root>/{NAME}/seed*_size*_train*_val*/); delete that folder to regenerate."
)


def _register() -> None:
    register(
        DatasetSpec(
            name=NAME,
            make_card=make_card,
            list_samples=list_samples,
            decode_label=None,
            default_options=dict(DEFAULT_OPTIONS),
            prepare_hint=PREPARE_HINT,
        )
    )


_register()
