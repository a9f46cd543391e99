"""Real benchmarks on tiny fixture trees written in each release's on-disk format.

Every fixture writer below makes 2-3 images per split with the official folder layout, file
names, PNG modes and MATLAB variables; expected train ids are written out by hand from the
official class lists, not computed with the loaders' own tables.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import harness.data as data
from harness import prepare
from harness.data.preparation import REAL_DATASETS
from harness.data import coco_stuff, pascal_context, transforms
from harness.data.base import DataError
from harness.data.transforms import TrainPipeline
from harness.data.transforms import rotate as rotate_arrays

REPO = Path(__file__).resolve().parent.parent
H, W = 18, 24  # fixture image size


def _image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(array: np.ndarray, path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def _label(values: list[int], h: int = H, w: int = W, dtype=np.uint8) -> np.ndarray:
    """A label map made of vertical stripes, one per value (all values appear)."""
    cols = np.array_split(np.arange(w), len(values))
    out = np.zeros((h, w), dtype=dtype)
    for value, c in zip(values, cols):
        out[:, c] = value
    return out


def _map(raw: np.ndarray, table: dict[int, int]) -> np.ndarray:
    out = np.full(raw.shape, -1, dtype=np.int64)
    for src, dst in table.items():
        out[raw == src] = dst
    assert (out >= 0).all(), "fixture uses a raw value the expected table lacks"
    return out


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _run_prepare(*args: str) -> int:
    return prepare.main(list(args))


# ----------------------------------------------------------------------------- fixture writers

ADE_RAW = {"train": [[0, 1, 150], [5, 13, 0], [150, 2, 3]], "val": [[1, 2], [0, 150]]}
ADE_EXPECTED = {0: 255, 1: 0, 2: 1, 3: 2, 5: 4, 13: 12, 150: 149}  # 0 "other" -> ignore, k -> k - 1


def write_ade20k(root: Path) -> Path:
    base = root / "ade20k" / "ADEChallengeData2016"
    for split, folder, prefix in (("train", "training", "ADE_train"), ("val", "validation", "ADE_val")):
        for i, values in enumerate(ADE_RAW[split], 1):
            _save(_image(i), base / "images" / folder / f"{prefix}_{i:08d}.jpg", "JPEG")
            _save(_label(values), base / "annotations" / folder / f"{prefix}_{i:08d}.png")
    return base


CITY_RAW = {
    ("aachen", "aachen_000000_000019"): [7, 26, 0, 33],
    ("aachen", "aachen_000001_000019"): [11, 24, 4, 250],
    ("bochum", "bochum_000000_000313"): [23, 21, 1, 8],
}
# labelIds -> train ids from the official definition: road 7->0, sidewalk 8->1, building 11->2,
# vegetation 21->8, sky 23->10, person 24->11, car 26->13, bicycle 33->18; void ids and ids the
# definition lacks (250) -> 255.
CITY_EXPECTED = {7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 24: 11, 26: 13, 33: 18, 0: 255, 1: 255, 4: 255, 250: 255}


def write_cityscapes(root: Path) -> Path:
    base = root / "cityscapes"
    for split, keys in (("train", list(CITY_RAW)[:2]), ("val", list(CITY_RAW)[2:])):
        for n, (city, stem) in enumerate(keys):
            _save(_image(n), base / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            gt = base / "gtFine" / split / city
            _save(_label(CITY_RAW[(city, stem)]), gt / f"{stem}_gtFine_labelIds.png")
            # the other files of the release, which the loader must not pick up
            _save(np.zeros((H, W, 4), np.uint8), gt / f"{stem}_gtFine_color.png")
            _save(np.zeros((H, W), np.uint16), gt / f"{stem}_gtFine_instanceIds.png")
            (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": H, "imgWidth": W, "objects": []}))
    return base


LIP_IDS = {"train": ["77_471474", "100034_483681", "10005_205677"], "val": ["100000_1239", "10000_1203"]}


def write_lip(root: Path) -> Path:
    base = root / "lip"
    for split, image_dir, label_dir in (
        ("train", "train_images", "train_segmentations"),
        ("val", "val_images", "val_segmentations"),
    ):
        for n, name in enumerate(LIP_IDS[split]):
            _save(_image(n), base / "TrainVal_images" / image_dir / f"{name}.jpg", "JPEG")
            _save(_label([0, 14 + n, 15, 19 - n]), base / "TrainVal_parsing_annotations" / label_dir / f"{name}.png")
        (base / "TrainVal_images" / f"{split}_id.txt").write_text("\n".join(LIP_IDS[split]) + "\n")
    return base


# The 459-class ids of the 59 classes in the PASCAL-Context labels.txt (alphabetical, like the names).
PC_IDS_59 = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115, 144, 158,
    159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349, 354, 355, 360, 366,
    368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)  # fmt: skip
PC_IDS = {"train": ["2008_000002", "2008_000003"], "val": ["2008_000007", "2010_000001"]}
PC_RAW = {"2008_000002": [2, 0, 284], "2008_000003": [458, 1], "2008_000007": [459, 284], "2010_000001": [2, 458]}
PC_EXPECTED = {2: 0, 284: 36, 458: 58, 0: 255, 1: 255, 459: 255}  # aeroplane, person, wood; rest ignore


def write_pascal_context(root: Path) -> Path:
    base = root / "pascal_context59" / "VOCdevkit" / "VOC2010"
    names = dict(zip(PC_IDS_59, pascal_context.CLASS_NAMES))
    lines = [f"{i}: {names.get(i, f'other class {i}')}" for i in range(1, 460)]
    (base / "trainval").mkdir(parents=True)
    (base / "labels.txt").write_text("\n".join(lines) + "\n")
    for split, ids in PC_IDS.items():
        for n, name in enumerate(ids):
            _save(_image(n), base / "JPEGImages" / f"{name}.jpg", "JPEG")
            scipy.io.savemat(base / "trainval" / f"{name}.mat", {"LabelMap": _label(PC_RAW[name], dtype=np.uint16)})
        lists = base / "ImageSets" / "Main"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    _save(_image(9), base / "JPEGImages" / "2007_000027.jpg", "JPEG")  # a VOC image outside PASCAL-Context
    return base


C10K_NAMES = {
    "train": ["COCO_train2014_000000000077", "COCO_train2014_000000000109"],
    "test": ["COCO_train2014_000000000064"],
}
C10K_RAW = {
    "COCO_train2014_000000000077": ([0, 1, 13, 92], np.uint16),
    "COCO_train2014_000000000109": ([182, 1, 90], np.uint8),
    "COCO_train2014_000000000064": ([67, 0, 124], np.uint16),
}
# COCO-Stuff ids -> the 171 train ids: person 1->0, stop sign 13->11 (street sign 12 unused),
# toothbrush 90->79, dining table 67->60, banner 92->80, grass 124->112, wood 182->170.
C10K_EXPECTED = {0: 255, 1: 0, 13: 11, 90: 79, 67: 60, 92: 80, 124: 112, 182: 170}
C10K_PAPER = {0: 255, 1: 0, 13: 12, 90: 89, 67: 66, 92: 91, 124: 123, 182: 181}  # the official 182-way: id - 1


def write_coco_stuff10k(root: Path) -> Path:
    base = root / "coco_stuff10k"
    for split, names in C10K_NAMES.items():
        for n, name in enumerate(names):
            _save(_image(n), base / "images" / f"{name}.jpg", "JPEG")
            values, dtype = C10K_RAW[name]
            mat = {"S": _label(values, dtype=dtype), "names": np.array(["unlabeled", "person"], dtype=object)}
            (base / "annotations").mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(base / "annotations" / f"{name}.mat", mat, do_compression=True)
        (base / "imageLists").mkdir(parents=True, exist_ok=True)
        (base / "imageLists" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return base


C164K_RAW = {"000000000139": [0, 91, 181, 255], "000000000285": [255, 12, 0]}  # stuffthingmaps: id - 1
C164K_EXPECTED = {0: 0, 91: 80, 181: 170, 12: 11, 255: 255}


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major run lengths, starting with a run of zeros)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def write_coco_stuff164k(root: Path) -> Path:
    """val2017 as official stuffthingmaps PNGs; train2017 only as stuff + instances JSON."""
    base = root / "coco_stuff164k"
    for n, (stem, values) in enumerate(C164K_RAW.items()):
        _save(_image(n), base / "images" / "val2017" / f"{stem}.jpg", "JPEG")
        _save(_label(values), base / "annotations" / "val2017" / f"{stem}.png")
    stem, image_id = "000000000009", 9
    _save(_image(5), base / "images" / "train2017" / f"{stem}.jpg", "JPEG")
    sky, other, car = (np.zeros((H, W), bool) for _ in range(3))
    sky[:6] = True  # sky-other 157 -> 145
    other[6:] = True  # thing pixels, merged as "other" 183
    car[10:16, 4:12] = True  # car 3 -> 2

    def ann(ann_id: int, category: int, mask: np.ndarray) -> dict:
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        return {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": _rle(mask),
                "area": int(mask.sum()), "bbox": box, "iscrowd": 0}  # fmt: skip

    person = {"id": 8, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": 24.0, "bbox": [15.0, 1.0, 6.0, 4.0],
              "segmentation": [[15.0, 1.0, 21.0, 1.0, 21.0, 5.0, 15.0, 5.0]]}  # a polygon, as COCO instances are
    image = {"id": image_id, "file_name": f"{stem}.jpg", "height": H, "width": W}
    stuff = {
        "images": [image],
        "categories": [{"id": 157, "name": "sky-other", "supercategory": "sky"},
                       {"id": 183, "name": "other", "supercategory": "other"}],
        "annotations": [ann(1, 157, sky), ann(2, 183, other)],
    }  # fmt: skip
    instances = {
        "images": [image],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 3, "name": "car", "supercategory": "vehicle"}],
        "annotations": [ann(7, 3, car), person],
    }  # fmt: skip
    (base / "annotations" / "stuff_train2017.json").write_text(json.dumps(stuff))
    (base / "annotations" / "instances_train2017.json").write_text(json.dumps(instances))
    return base


# ----------------------------------------------------------------------------- cards


def test_registered_cards_follow_the_official_settings():
    expect = {
        # name: (classes, splits, base_scale, keep_ratio, ratio_range, crop)
        "ade20k": (150, {"train": 20210, "val": 2000}, (2048, 512), True, (0.5, 2.0), (512, 512)),
        "coco_stuff10k": (182, {"train": 9000, "test": 1000}, (2048, 512), True, (0.5, 2.0), (512, 512)),
        "coco_stuff164k": (171, {"train": 118287, "val": 5000}, (2048, 512), True, (0.5, 2.0), (512, 512)),
        "pascal_context59": (59, {"train": 4998, "val": 5105}, (2560, 640), True, (0.5, 2.0), (640, 640)),
        "lip": (20, {"train": 30462, "val": 10000}, (520, 520), False, (0.75, 1.25), (473, 473)),
        "cityscapes": (19, {"train": 2975, "val": 500}, (2048, 1024), True, (0.5, 2.0), (512, 1024)),
    }
    for name, (k, splits, scale, keep, ratio, crop) in expect.items():
        card = data.dataset_card(name)
        assert (card.num_classes, card.splits, card.base_scale, card.keep_ratio) == (k, splits, scale, keep), name
        assert (card.ratio_range, card.crop_size, card.cat_max_ratio, card.ignore_index) == (ratio, crop, 0.75, 255)
        assert len(card.palette) == k and len(set(card.class_names)) == k
    lip_card = data.dataset_card("lip")
    assert lip_card.flip_swap == ((14, 15), (16, 17), (18, 19))
    assert (lip_card.rotate_prob, lip_card.rotate_degrees, lip_card.test_scale) == (0.6, 30.0, (473, 473))
    assert data.dataset_card("ade20k").class_names[:3] == ("wall", "building", "sky")
    city = data.dataset_card("cityscapes").class_names
    assert (city[0], city[13], city[-1]) == ("road", "car", "bicycle")
    assert "sliding window" in data.dataset_card("pascal_context59").test_protocol
    names = data.dataset_card("coco_stuff10k", {"protocol": "annotated"}).class_names
    assert (names[0], names[11], names[80], names[-1]) == ("person", "stop sign", "banner", "wood")
    assert "street sign" not in names and "hat" not in names
    paper = data.dataset_card("coco_stuff10k").class_names  # the default: the official 182 ids
    assert (paper[0], paper[11], paper[12], paper[91], paper[-1]) == ("person", "street sign", "stop sign", "banner", "wood")
    assert len(coco_stuff.COCO_STUFF) == 182


# ----------------------------------------------------------------------------- decoding


def _labels(name: str, root: Path, split: str, options: dict | None = None) -> list[np.ndarray]:
    ds = data.build_dataset(name, root, split, options or {}, train=False)
    return [ds.load(i)[1] for i in range(len(ds))]


def test_ade20k_reads_official_layout(tmp_path):
    base = write_ade20k(tmp_path)
    ds = data.build_dataset("ade20k", tmp_path, "train", {}, train=False)
    assert [s.image.name for s in ds.samples] == [f"ADE_train_{i:08d}.jpg" for i in (1, 2, 3)]
    for split in ("train", "val"):
        labels = _labels("ade20k", tmp_path, split)
        for i, label in enumerate(labels, 1):
            folder, prefix = ("training", "ADE_train") if split == "train" else ("validation", "ADE_val")
            raw = np.asarray(Image.open(base / "annotations" / folder / f"{prefix}_{i:08d}.png"))
            np.testing.assert_array_equal(label, _map(raw, ADE_EXPECTED))
    image, label = data.build_dataset("ade20k", tmp_path, "val", {}, train=False)[0]
    assert image.shape[1:] == (512, 683) and label.shape == (H, W)  # keep-ratio resize into (2048, 512)


def test_cityscapes_maps_label_ids_with_cityscapesscripts(tmp_path):
    write_cityscapes(tmp_path)
    ds = data.build_dataset("cityscapes", tmp_path, "train", {}, train=False)
    assert [s.label.name for s in ds.samples] == [f"{stem}_gtFine_labelIds.png" for _, stem in list(CITY_RAW)[:2]]
    for (key, values), label in zip(list(CITY_RAW.items())[:2], _labels("cityscapes", tmp_path, "train")):
        np.testing.assert_array_equal(label, _map(_label(values), CITY_EXPECTED))
    (label,) = _labels("cityscapes", tmp_path, "val")
    np.testing.assert_array_equal(label, _map(_label(CITY_RAW[("bochum", "bochum_000000_000313")]), CITY_EXPECTED))


def test_lip_reads_class_ids(tmp_path):
    write_lip(tmp_path)
    ds = data.build_dataset("lip", tmp_path, "train", {}, train=False)
    assert [s.image.stem for s in ds.samples] == LIP_IDS["train"]  # id-list order
    for n, label in enumerate(_labels("lip", tmp_path, "train")):
        np.testing.assert_array_equal(label, _label([0, 14 + n, 15, 19 - n]))
    image, label = ds[0]
    assert image.shape == (3, 473, 473) and label.shape == (H, W)  # fixed 473x473 test resize


def test_pascal_context_prepare_then_read(tmp_path, capsys):
    base = write_pascal_context(tmp_path)
    with pytest.raises(DataError, match=r"not converted yet.*python -m harness\.prepare pascal_context59 --root"):
        data.build_dataset("pascal_context59", tmp_path, "train", {}, train=False)
    assert _run_prepare("pascal_context59", "--root", str(tmp_path), "--check-only") == 1
    assert "4 of 4 label file(s) still to convert" in capsys.readouterr().out
    assert _run_prepare("pascal_context59", "--root", str(tmp_path), "--allow-partial") == 0
    out = capsys.readouterr().out
    assert "converted 4 label file(s), 0 already done" in out
    assert "pascal_context59 train: 2 image/label pairs, official 4,998 (4,996 fewer)" in out
    png = Image.open(base / "SegmentationClassContext" / "2008_000002.png")
    assert png.mode == "L" and png.size == (W, H)
    for split in ("train", "val"):
        for name, label in zip(PC_IDS[split], _labels("pascal_context59", tmp_path, split)):
            np.testing.assert_array_equal(label, _map(_label(PC_RAW[name], dtype=np.int64), PC_EXPECTED))
    # idempotent: nothing rewritten, no temporary files left
    stamps = {p.name: p.stat().st_mtime_ns for p in (base / "SegmentationClassContext").iterdir()}
    assert sorted(stamps) == sorted(f"{i}.png" for ids in PC_IDS.values() for i in ids)
    assert _run_prepare("pascal_context59", "--root", str(tmp_path), "--allow-partial") == 0
    assert "converted 0 label file(s), 4 already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (base / "SegmentationClassContext").iterdir()} == stamps


def test_pascal_context_split_list_prefers_segmentation_context(tmp_path):
    base = write_pascal_context(tmp_path)
    _run_prepare("pascal_context59", "--root", str(tmp_path), "--allow-partial")
    lists = base / "ImageSets" / "SegmentationContext"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2008_000003\n")
    ds = data.build_dataset("pascal_context59", tmp_path, "train", {}, train=False)
    assert [s.image.stem for s in ds.samples] == ["2008_000003"]


def test_coco_stuff10k_reads_mat_annotations(tmp_path):
    write_coco_stuff10k(tmp_path)
    for split in ("train", "test"):
        annotated = _labels("coco_stuff10k", tmp_path, split, {"protocol": "annotated"})
        for name, label, paper in zip(C10K_NAMES[split], annotated, _labels("coco_stuff10k", tmp_path, split)):
            assert label.dtype == np.uint8 and paper.dtype == np.uint8
            np.testing.assert_array_equal(label, _map(_label(C10K_RAW[name][0]), C10K_EXPECTED))
            np.testing.assert_array_equal(paper, _map(_label(C10K_RAW[name][0]), C10K_PAPER))
    val = data.build_dataset("coco_stuff10k", tmp_path, "val", {}, train=False)  # the eval split's other name
    assert [s.image.stem for s in val.samples] == C10K_NAMES["test"]


def test_coco_stuff164k_converts_stuffthingmaps_and_json(tmp_path, capsys):
    base = write_coco_stuff164k(tmp_path)
    with pytest.raises(DataError, match=r"no _labelTrainIds\.png label.*python -m harness\.prepare coco_stuff164k"):
        data.build_dataset("coco_stuff164k", tmp_path, "val", {}, train=False)
    assert _run_prepare("coco_stuff164k", "--root", str(tmp_path), "--allow-partial") == 0
    assert "converted 3 label file(s)" in capsys.readouterr().out
    for stem, label in zip(sorted(C164K_RAW), _labels("coco_stuff164k", tmp_path, "val")):
        np.testing.assert_array_equal(label, _map(_label(C164K_RAW[stem]), C164K_EXPECTED))
    out = Image.open(base / "annotations" / "val2017" / "000000000139_labelTrainIds.png")
    assert out.mode == "L"
    (label,) = _labels("coco_stuff164k", tmp_path, "train")
    assert (label[2:4, 16:20] == 0).all()  # inside the person polygon, painted over the sky
    label[1:6, 14:22] = 145  # (polygon edges: rasteriser's business)
    expected = np.full((H, W), 255)
    expected[:6] = 145  # sky-other (157) from the stuff JSON
    expected[10:16, 4:12] = 2  # car (3) from the instances JSON over the merged "other" region
    np.testing.assert_array_equal(label, expected)
    stamp = (base / "annotations" / "train2017" / "000000000009_labelTrainIds.png").stat().st_mtime_ns
    assert _run_prepare("coco_stuff164k", "--root", str(tmp_path), "--allow-partial") == 0
    assert "converted 0 label file(s), 3 already done" in capsys.readouterr().out
    assert (base / "annotations" / "train2017" / "000000000009_labelTrainIds.png").stat().st_mtime_ns == stamp
    assert not [p for p in base.rglob("*.tmp")]


# ----------------------------------------------------------------------------- pipelines


def test_lip_flip_swaps_left_and_right(tmp_path):
    write_lip(tmp_path)
    ds = data.build_dataset("lip", tmp_path, "train", {}, train=False)
    image, label = ds.load(0)
    card = replace(
        ds.card, base_scale=(H, W), ratio_range=(1.0, 1.0), crop_size=(H, W), flip_prob=1.0,
        rotate_prob=0.0, photometric=False,
    )  # fmt: skip
    _, flipped = TrainPipeline(card)(image, label, 0, 0)
    swap = {0: 0, 14: 15, 15: 14, 16: 17, 17: 16, 18: 19, 19: 18}
    np.testing.assert_array_equal(flipped.numpy(), _map(label[:, ::-1], swap))
    assert set(np.unique(label).tolist()) == {0, 14, 15, 19} and 18 in flipped.unique().tolist()
    _, plain = TrainPipeline(replace(card, flip_swap=()))(image, label, 0, 0)
    np.testing.assert_array_equal(plain.numpy(), label[:, ::-1])


def test_lip_fixed_resize_and_rotation(tmp_path):
    write_lip(tmp_path)
    ds = data.build_dataset("lip", tmp_path, "train", {}, train=True)
    image, label = ds.load(1)
    img_t, lab_t = ds[1]
    assert img_t.shape == (3, 473, 473) and lab_t.shape == (473, 473)  # 520 x 0.75-1.25, cropped or padded
    rotate = replace(
        ds.card, base_scale=(40, 40), ratio_range=(1.0, 1.0), crop_size=(40, 40), flip_prob=0.0,
        rotate_prob=1.0, rotate_degrees=30.0, photometric=False,
    )  # fmt: skip
    small = np.asarray(Image.fromarray(image).resize((40, 40)))
    big = np.asarray(Image.fromarray(label).resize((40, 40), Image.NEAREST))
    outs = [TrainPipeline(rotate)(small, big, i, 0)[1] for i in range(8)]
    for out in outs:
        assert out.shape == (40, 40)
        assert set(out.unique().tolist()) <= set(np.unique(big).tolist()) | {255}  # nearest: no new ids
    assert len({tuple(o.flatten().tolist()) for o in outs}) == len(outs)  # a different angle per sample
    assert sum(int((o == 255).sum()) > 0 for o in outs) >= len(outs) - 1  # corners filled with ignore
    img_r, lab_r = rotate_arrays(small, big, 30.0, 255)
    assert lab_r.shape == (40, 40) and (lab_r[0, 0], lab_r[0, -1], lab_r[-1, 0], lab_r[-1, -1]) == (255,) * 4
    assert (img_r[0, 0] == 0).all()  # image corners filled with black
    np.testing.assert_array_equal(TrainPipeline(replace(rotate, rotate_prob=0.0))(small, big, 0, 0)[1].numpy(), big)


def test_test_pipeline_scales(tmp_path):
    card = data.dataset_card("cityscapes")
    image, label = _image(0, 1024, 2048), np.zeros((1024, 2048), np.uint8)
    img_t, lab_t = transforms.TestPipeline(card)(image, label, 0)
    assert img_t.shape == (3, 1024, 2048) and lab_t.shape == (1024, 2048)
    ade = transforms.TestPipeline(data.dataset_card("ade20k"))
    img_t, _ = ade(_image(0, 683, 512), np.zeros((683, 512), np.uint8), 0)
    assert img_t.shape == (3, 683, 512)  # short side 512, long side within 2048


def test_train_pipeline_is_the_same_in_loader_processes(tmp_path):
    write_lip(tmp_path)
    ds = data.build_dataset("lip", tmp_path, "train", {}, train=True, seed=5)
    ds.set_epoch(2)
    direct = [ds[i] for i in range(len(ds))]

    def run(workers: int):
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers, shuffle=False)
        return [(img[0], lab[0]) for img, lab in loader]

    torch.manual_seed(0)
    np.random.seed(0)
    for got in (run(0), run(2)):
        for (img_a, lab_a), (img_b, lab_b) in zip(direct, got):
            assert torch.equal(img_a, img_b) and torch.equal(lab_a, lab_b)
    ds.set_epoch(3)
    assert not all(torch.equal(a[1], ds[i][1]) for i, a in enumerate(direct))


# ----------------------------------------------------------------------------- bad input

WRITERS = {
    "ade20k": write_ade20k,
    "cityscapes": write_cityscapes,
    "lip": write_lip,
    "pascal_context59": write_pascal_context,
    "coco_stuff10k": write_coco_stuff10k,
    "coco_stuff164k": write_coco_stuff164k,
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_missing_root_names_path_and_prepare_command(tmp_path, name):
    with pytest.raises(DataError) as err:
        data.build_dataset(name, tmp_path / "nowhere", "train", {}, train=True)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "nowhere" / name) in message
    assert f"python -m harness.prepare {name} --root {tmp_path / 'nowhere'}" in message


def test_missing_split_folder_and_unknown_split(tmp_path):
    base = write_ade20k(tmp_path)
    for child in (base / "images" / "validation").iterdir():
        child.unlink()
    (base / "images" / "validation").rmdir()
    with pytest.raises(DataError, match=r"image folder .*images/validation not found.*harness\.prepare ade20k"):
        data.build_dataset("ade20k", tmp_path, "val", {}, train=False)
    with pytest.raises(DataError, match=r"unknown split 'test'; allowed: train, val"):
        data.build_dataset("ade20k", tmp_path, "test", {}, train=False)


def test_corrupt_image_names_the_file(tmp_path):
    base = write_ade20k(tmp_path)
    bad = base / "images" / "training" / "ADE_train_00000002.jpg"
    bad.write_bytes(b"not a jpeg at all")
    ds = data.build_dataset("ade20k", tmp_path, "train", {}, train=True)
    ds.load(0)
    with pytest.raises(DataError, match=re.escape(f"{bad}: cannot decode image")):
        ds[1]


def test_truncated_label_png_names_the_file(tmp_path):
    write_cityscapes(tmp_path)
    ds = data.build_dataset("cityscapes", tmp_path, "train", {}, train=True)
    _truncate(ds.samples[1].label)
    with pytest.raises(DataError, match=re.escape(f"{ds.samples[1].label}: cannot decode label")):
        ds.load(1)


def test_truncated_image_names_the_file(tmp_path):
    write_lip(tmp_path)
    ds = data.build_dataset("lip", tmp_path, "val", {}, train=False)
    _truncate(ds.samples[0].image)
    with pytest.raises(DataError, match=re.escape(f"{ds.samples[0].image}: cannot decode image")):
        ds.load(0)


def test_size_mismatch_names_the_label(tmp_path):
    base = write_lip(tmp_path)
    path = base / "TrainVal_parsing_annotations" / "val_segmentations" / "10000_1203.png"
    _save(_label([0, 1], h=H + 2), path)
    ds = data.build_dataset("lip", tmp_path, "val", {}, train=False)
    with pytest.raises(DataError, match=re.escape(f"{path}: label is {W}x{H + 2} but image 10000_1203.jpg is {W}x{H}")):
        ds.load(1)


@pytest.mark.parametrize(
    ("name", "value"), [("ade20k", 151), ("lip", 20), ("cityscapes", None)], ids=["ade20k", "lip", "cityscapes"]
)
def test_label_value_out_of_range(tmp_path, name, value):
    WRITERS[name](tmp_path)
    ds = data.build_dataset(name, tmp_path, "train", {}, train=False)
    path = ds.samples[0].label
    if value is None:  # a Cityscapes raw id without an entry is ignore, never an error
        _save(_label([7, 200, 34]), path)
        np.testing.assert_array_equal(ds.load(0)[1], _map(_label([7, 200, 34]), {7: 0, 200: 255, 34: 255}))
        return
    _save(_label([1, value]), path)
    with pytest.raises(DataError, match=re.escape(f"{path}: label value {value} outside 0..{ds.card.num_classes - 1}")):
        ds.load(0)


def test_coco_stuff10k_bad_mat_files(tmp_path):
    base = write_coco_stuff10k(tmp_path)
    ds = data.build_dataset("coco_stuff10k", tmp_path, "train", {"protocol": "annotated"}, train=True)
    paper = data.build_dataset("coco_stuff10k", tmp_path, "train", {}, train=True)
    path = base / "annotations" / "COCO_train2014_000000000077.mat"
    scipy.io.savemat(path, {"S": _label([1, 200], dtype=np.uint16)})
    with pytest.raises(DataError, match=re.escape(str(path)) + ": .*raw label id 200 is not a COCO-Stuff id"):
        ds.load(0)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": .*raw label id 200 is not a COCO-Stuff id"):
        paper.load(0)
    scipy.io.savemat(path, {"S": _label([1, 12], dtype=np.uint8)})  # "street sign": unused
    with pytest.raises(DataError, match=re.escape(str(path)) + ": .*raw label id 12 is not a COCO-Stuff id"):
        ds.load(0)
    assert set(np.unique(paper.load(0)[1])) == {0, 11}  # a class of the paper protocol
    scipy.io.savemat(path, {"LabelMap": _label([1])})
    with pytest.raises(DataError, match=re.escape(str(path)) + ": .*no variable 'S'"):
        ds.load(0)
    write_coco_stuff10k(tmp_path / "again")
    _truncate(path.parent.parent.parent / "again" / "coco_stuff10k" / "annotations" / path.name)
    again = data.build_dataset("coco_stuff10k", tmp_path / "again", "train", {}, train=True)
    with pytest.raises(DataError, match=re.escape(f"{again.samples[0].label}: cannot decode label")):
        again.load(0)


def test_prepare_rejects_bad_raw_labels(tmp_path, capsys):
    base = write_coco_stuff164k(tmp_path)
    bad = base / "annotations" / "val2017" / "000000000285.png"
    _save(_label([0, 200]), bad)  # COCO-Stuff id 201
    assert _run_prepare("coco_stuff164k", "--root", str(tmp_path)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [
        f"error: {bad}: raw value 200 (COCO-Stuff id 201) is not a COCO-Stuff class "
        "(expected 0-181 without the unused ids, or 255)"
    ]
    assert not (base / "annotations" / "val2017" / "000000000285_labelTrainIds.png").exists()
    pc = write_pascal_context(tmp_path / "pc")
    scipy.io.savemat(pc / "trainval" / "2008_000003.mat", {"LabelMap": _label([2, 460], dtype=np.uint16)})
    assert _run_prepare("pascal_context59", "--root", str(tmp_path / "pc")) == 2
    assert "2008_000003.mat: LabelMap value 460 is not a PASCAL-Context class id (0..459)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- prepare: split sizes


def test_prepare_reports_split_sizes(tmp_path, capsys):
    write_ade20k(tmp_path)
    assert _run_prepare("ade20k", "--root", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "ade20k: nothing to convert" in out
    assert "ade20k train: 3 image/label pairs, official 20,210 (20,207 fewer)" in out
    assert "ade20k val: 2 image/label pairs, official 2,000 (1,998 fewer)" in out
    assert "pass --allow-partial" in out
    assert _run_prepare("ade20k", "--root", str(tmp_path), "--allow-partial") == 0
    assert "ready (partial: accepted with --allow-partial)" in capsys.readouterr().out


def test_prepare_reports_missing_and_extra_files(tmp_path, capsys):
    base = write_lip(tmp_path)
    (base / "TrainVal_parsing_annotations" / "train_segmentations" / "100034_483681.png").unlink()
    _save(_image(7), base / "TrainVal_images" / "train_images" / "stray_1.jpg", "JPEG")
    assert _run_prepare("lip", "--root", str(tmp_path), "--allow-partial") == 1  # missing files always fail
    out = capsys.readouterr().out
    assert "lip train: 2 image/label pairs, official 30,462" in out
    assert "missing 1 file(s): TrainVal_parsing_annotations/train_segmentations/100034_483681.png" in out
    assert "extra 1 file(s): TrainVal_images/train_images/stray_1.jpg (not in the id list)" in out
    with pytest.raises(DataError, match=r"1 id\(s\) of train_id.txt lack an image or a label.*100034_483681\.png"):
        data.build_dataset("lip", tmp_path, "train", {}, train=True)


@pytest.mark.parametrize("name", ["cityscapes", "coco_stuff10k"])
def test_prepare_accepts_partial_fixtures(tmp_path, capsys, name):
    WRITERS[name](tmp_path)
    assert _run_prepare(name, "--root", str(tmp_path)) == 1
    assert _run_prepare(name, "--root", str(tmp_path), "--allow-partial") == 0
    out = capsys.readouterr().out
    official = data.dataset_card(name).splits
    for split, size in official.items():
        assert f"{name} {split}: " in out and f"official {size:,}" in out


def test_prepare_unknown_dataset_is_one_line(tmp_path, capsys):
    assert sorted(data.preparers()) == sorted(REAL_DATASETS)
    assert set(REAL_DATASETS) == set(data.dataset_names()) - {"context_scenes"}
    assert _run_prepare("imagenet", "--root", str(tmp_path)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [
        "error: unknown dataset 'imagenet'; allowed: ade20k, cityscapes, coco_stuff10k, coco_stuff164k, lip, "
        "pascal_context59 (your own dataset: describe it under data.custom and pass --experiment)"
    ]


def test_prepare_command_line(tmp_path):
    write_pascal_context(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "harness.prepare", "pascal_context59", "--root", str(tmp_path), "--allow-partial"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "converted 4 label file(s)" in proc.stdout and "pascal_context59: ready" in proc.stdout
    converted = tmp_path / "pascal_context59" / "VOCdevkit" / "VOC2010" / "SegmentationClassContext"
    assert len(list(converted.iterdir())) == 4
