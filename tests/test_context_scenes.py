"""The embedded context-scenes benchmark: determinism, context rules, swap invariance, files."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

import harness.data as data
from harness.data import context_scenes as cs
from harness.data.base import DataError, read_image, read_label_png

SMALL = {"seed": 3, "num_train": 6, "num_val": 3, "image_size": 48}
ID = cs.CLASS_ID
CONTEXT_IDS = [ID[n] for n in cs.CONTEXT_CLASSES]
OBJECT_IDS = [ID[n] for n in ("boat", "car", "sheep", "goat", "rock")]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (Chebyshev) dilation by `radius` pixels."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    rows = np.zeros((h + 2 * radius, w), dtype=bool)
    for dx in range(2 * radius + 1):
        rows |= padded[:, dx : dx + w]
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        out |= rows[dy : dy + h]
    return out


def _generated_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_rules(label: np.ndarray, image_size: int) -> None:
    present = set(np.unique(label).tolist())
    assert (ID["water"] in present) != (ID["road"] in present)
    assert (ID["grass"] in present) != (ID["snow"] in present)
    assert present <= set(range(len(cs.CLASS_NAMES)))
    if ID["boat"] in present:
        assert ID["water"] in present
    if ID["car"] in present:
        assert ID["road"] in present
    if ID["sheep"] in present:
        assert ID["grass"] in present
    if ID["goat"] in present:
        assert ID["snow"] in present
    assert (ID["boat"] in present) or (ID["car"] in present)
    assert (ID["sheep"] in present) or (ID["goat"] in present)
    objects = np.isin(label, OBJECT_IDS)
    context = np.isin(label, CONTEXT_IDS)
    assert not (_dilate(objects, cs.object_margin(image_size)) & context).any()


# ----------------------------------------------------------------------------- registry and card


def test_registered_with_card():
    assert "context_scenes" in data.dataset_names()
    spec = data.get_spec("context_scenes")
    assert spec.default_options == {"seed": 0, "num_train": 512, "num_val": 128, "image_size": 64}
    assert spec.decode_label is None and "first use" in spec.prepare_hint
    card = data.dataset_card("context_scenes", {"image_size": 48, "num_train": 10})
    assert card.class_names == cs.CLASS_NAMES and card.num_classes == 10
    assert cs.CLASS_NAMES == ("ground", "water", "road", "grass", "snow", "boat", "car", "sheep", "goat", "rock")
    assert len(card.palette) == 10 and all(len(c) == 3 for c in card.palette)
    assert card.splits == {"train": 10, "val": 128}
    assert card.base_scale == (48, 48) and card.crop_size == (48, 48) and card.ratio_range == (1.0, 1.0)
    assert card.cat_max_ratio == 1.0 and card.photometric is False and card.ignore_index == 255
    assert card.focus_classes == ("boat", "car", "sheep", "goat")
    assert cs.AMBIGUOUS_PAIRS == (("boat", "car"), ("sheep", "goat"))


def test_unknown_split_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"'test'.*train, val"):
        cs.list_samples(tmp_path, "test", SMALL)
    assert not (tmp_path / "context_scenes").exists()


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        cs.ensure_generated(tmp_path, 0, 1, 1, 16)
    with pytest.raises(ValueError, match="num_train"):
        cs.ensure_generated(tmp_path, 0, -1, 1, 64)


# ----------------------------------------------------------------------------- scenes


def test_generate_scene_is_deterministic_and_seeded():
    a_img, a_lab = cs.generate_scene(0, "train", 5, 64)
    b_img, b_lab = cs.generate_scene(0, "train", 5, 64)
    assert a_img.dtype == np.uint8 and a_img.shape == (64, 64, 3)
    assert a_lab.dtype == np.uint8 and a_lab.shape == (64, 64)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, cs.generate_scene(0, "val", 5, 64)[0])
    assert not np.array_equal(a_img, cs.generate_scene(1, "train", 5, 64)[0])
    assert not np.array_equal(a_img, cs.generate_scene(0, "train", 6, 64)[0])


@pytest.mark.parametrize("image_size", [32, 64, 96])
def test_rules_hold_on_many_scenes(image_size):
    counts = {"vehicle": [], "animal": [], "rock": []}
    for index in range(120):
        layout = cs.scene_layout(11, "train", index, image_size)
        _, label = cs.render_scene(layout, image_size)
        _check_rules(label, image_size)
        for kind in counts:
            counts[kind].append(sum(o.kind == kind for o in layout.objects))
        lo, hi = round(0.2 * image_size), round(0.3 * image_size)
        assert lo <= layout.h_extent <= hi and lo <= layout.v_extent <= hi
        for obj in layout.objects:
            assert max(obj.height, obj.width) <= round(0.2 * image_size)
    assert min(counts["vehicle"]) >= 1 and max(counts["vehicle"]) <= 3
    assert min(counts["animal"]) >= 1 and max(counts["animal"]) <= 3
    assert min(counts["rock"]) == 0 and max(counts["rock"]) <= 2
    # the object counts are not all cut down by lack of room
    assert max(counts["vehicle"]) == 3 and max(counts["animal"]) == 3 and max(counts["rock"]) == 2


def test_every_context_combination_and_side_occurs():
    seen = set()
    for index in range(200):
        layout = cs.scene_layout(0, "val", index, 64)
        seen.add((layout.h_class, layout.v_class, layout.h_side, layout.v_side))
    assert len(seen) == 16


def test_swap_changes_only_context_pixels():
    for index in range(200):
        layout = cs.scene_layout(index % 7, ("train", "val")[index % 2], index, 64)
        swapped = cs.swap_context(layout)
        assert swapped.h_class != layout.h_class and swapped.v_class != layout.v_class
        assert cs.swap_context(swapped) == layout
        img, lab = cs.render_scene(layout, 64)
        simg, slab = cs.render_scene(swapped, 64)
        # labels differ exactly by the class swap
        mapping = np.arange(256, dtype=np.uint8)
        for a, b in cs.PARTNER.items():
            mapping[ID[a]] = ID[b]
        assert np.array_equal(mapping[lab], slab)
        # pixels differ only where the label is a context class
        context = np.isin(lab, CONTEXT_IDS)
        assert np.array_equal(img[~context], simg[~context])
        # ... in particular every object and a window of the margin around it are identical
        objects = np.isin(lab, OBJECT_IDS)
        window = _dilate(objects, cs.object_margin(64))
        assert not (window & context).any()
        assert np.array_equal(img[window], simg[window])
        # and the bands really do look different
        diff = np.abs(img.astype(int) - simg.astype(int)).sum(-1)
        assert diff[context].mean() > 60


def test_object_families_look_different():
    """Vehicles (red, wide rounded boxes), animals (cream diamonds), rocks (slate square blobs)."""
    colours = {"vehicle": [], "animal": [], "rock": []}
    for index in range(60):
        layout = cs.scene_layout(5, "train", index, 64)
        image, label = cs.render_scene(layout, 64)
        for obj in layout.objects:
            mask, _ = cs._OBJECTS[obj.kind](obj.height, obj.width, obj.appearance_seed)
            fill = mask.mean()
            if obj.kind == "vehicle":
                assert obj.width > obj.height and fill > 0.75
            elif obj.kind == "animal":
                assert obj.height >= obj.width and 0.3 < fill < 0.7
            else:
                assert obj.height == obj.width and fill > 0.75
            box = image[obj.top : obj.top + obj.height, obj.left : obj.left + obj.width]
            colours[obj.kind].append(box[mask].astype(float).mean(0))
    means = {kind: np.mean(v, 0) for kind, v in colours.items()}
    assert np.linalg.norm(means["vehicle"] - means["animal"]) > 60
    assert np.linalg.norm(means["vehicle"] - means["rock"]) > 60
    assert np.linalg.norm(means["animal"] - means["rock"]) > 60


def test_context_classes_look_clearly_different():
    means = {name: [] for name in cs.CONTEXT_CLASSES}
    for index in range(40):
        img, lab = cs.generate_scene(2, "train", index, 64)
        for name in cs.CONTEXT_CLASSES:
            sel = lab == ID[name]
            if sel.any():
                means[name].append(img[sel].astype(float).mean(0))
    colours = {name: np.mean(v, 0) for name, v in means.items()}
    names = list(colours)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert np.linalg.norm(colours[names[i]] - colours[names[j]]) > 60, (names[i], names[j])


def test_render_rejects_other_size():
    layout = cs.scene_layout(0, "train", 0, 64)
    with pytest.raises(ValueError):
        cs.render_scene(layout, 48)


# ----------------------------------------------------------------------------- files


def test_files_are_byte_deterministic(tmp_path):
    a = cs.ensure_generated(tmp_path / "a", **SMALL)
    b = cs.ensure_generated(tmp_path / "b", **SMALL)
    assert a.name == "seed3_size48_train6_val3"
    assert a == tmp_path / "a" / "context_scenes" / a.name
    files_a, files_b = _generated_files(a), _generated_files(b)
    assert len(files_a) == 2 * (6 + 3) + 1
    assert files_a == files_b
    assert "images/train/00005.png" in files_a and "labels/val/00002.png" in files_a
    meta = json.loads(files_a["meta.json"])
    assert meta["class_names"] == list(cs.CLASS_NAMES) and meta["seed"] == 3 and meta["image_size"] == 48

    other = cs.ensure_generated(tmp_path / "c", **{**SMALL, "seed": 4})
    files_c = _generated_files(other)
    assert files_c.keys() == files_a.keys()
    for key in files_a:
        if key.startswith("images/"):
            assert files_a[key] != files_c[key], key


def test_written_files_match_scenes_and_rules(tmp_path):
    directory = cs.ensure_generated(tmp_path, **SMALL)
    for split, count in (("train", 6), ("val", 3)):
        for index in range(count):
            image = read_image(directory / "images" / split / f"{index:05d}.png")
            label = read_label_png(directory / "labels" / split / f"{index:05d}.png")
            exp_img, exp_lab = cs.generate_scene(3, split, index, 48)
            assert np.array_equal(image, exp_img) and np.array_equal(label, exp_lab)
            _check_rules(label, 48)


def test_second_call_reuses_files(tmp_path):
    directory = cs.ensure_generated(tmp_path, **SMALL)
    marker = directory / "images" / "train" / "00000.png"
    stamp = marker.stat().st_mtime_ns
    assert cs.ensure_generated(tmp_path, **SMALL) == directory
    assert marker.stat().st_mtime_ns == stamp


def test_reads_back_through_build_dataset(tmp_path):
    opts = {"seed": 1, "num_train": 4, "num_val": 2, "image_size": 40}
    ds = data.build_dataset("context_scenes", tmp_path, "train", opts, train=True)
    assert len(ds) == 4
    image, label = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 40, 40)
    assert label.dtype == torch.int64 and label.shape == (40, 40)
    assert int(label.max()) < 10 and int(label.min()) >= 0
    val = data.build_dataset("context_scenes", tmp_path, "val", opts, train=False)
    assert len(val) == 2
    image, label = val[1]
    assert image.shape == (3, 40, 40) and label.shape == (40, 40) and int(label.max()) < 10
    samples = cs.list_samples(tmp_path, "val", opts)
    assert samples == sorted(samples, key=lambda s: s.image.name)


def test_leftover_partial_folder_does_not_break_generation(tmp_path):
    final = cs.dataset_dir(tmp_path, **SMALL)
    final.parent.mkdir(parents=True)
    # a crashed run from another host (left alone) and one from a dead process on this host
    foreign = final.parent / f"{final.name}.partial-otherhost-123-deadbeef"
    dead = final.parent / f"{final.name}.partial-{cs._host_tag()}-999999999-0badf00d"
    for leftover in (foreign, dead):
        (leftover / "images" / "train").mkdir(parents=True)
        (leftover / "images" / "train" / "00000.png").write_bytes(b"half a png")
    directory = cs.ensure_generated(tmp_path, **SMALL)
    assert directory == final and (final / "meta.json").is_file()
    assert len(list((final / "images" / "train").glob("*.png"))) == 6
    assert not dead.exists()
    assert foreign.exists()
    ds = data.build_dataset("context_scenes", tmp_path, "train", SMALL, train=False)
    assert ds[0][0].shape == (3, 48, 48)


def test_interrupted_generation_cleans_up_and_retries(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = cs._save_png

    def failing(array, path):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(array, path)

    monkeypatch.setattr(cs, "_save_png", failing)
    with pytest.raises(KeyboardInterrupt):
        cs.ensure_generated(tmp_path, **SMALL)
    final = cs.dataset_dir(tmp_path, **SMALL)
    assert not final.exists()
    assert os.listdir(final.parent) == []
    monkeypatch.setattr(cs, "_save_png", real)
    assert (cs.ensure_generated(tmp_path, **SMALL) / "meta.json").is_file()


def test_losing_the_rename_race_uses_the_winner(tmp_path, monkeypatch):
    winner = cs.ensure_generated(tmp_path / "winner", **SMALL)
    final = cs.dataset_dir(tmp_path, **SMALL)
    real_replace = os.replace

    def racing_replace(src, dst):
        # another caller finishes first, then our rename fails
        if not os.path.exists(dst):
            shutil.copytree(winner, dst)
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(cs.os, "replace", racing_replace)
    assert cs.ensure_generated(tmp_path, **SMALL) == final
    monkeypatch.setattr(cs.os, "replace", real_replace)
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]


def test_folder_without_meta_is_reported(tmp_path):
    final = cs.dataset_dir(tmp_path, **SMALL)
    (final / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="meta.json"):
        cs.ensure_generated(tmp_path, **SMALL)
