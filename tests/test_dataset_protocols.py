"""Our label mapping, class lists and mIoU against the official sssegmentation 1.7.0 code.

For every benchmark the official dataset class (``ssseg/modules/datasets/``) reads the same
fixture files as our loader, and the official evaluator (``Evaluation``: per-class IoU summed
over images, ``nanmean``) scores the same predictions as :mod:`harness.metrics`.

Differences, by design (comments in the dataset modules): the official classes stop on a raw
value outside their table unless ``auto_correct_invalid_seg_target`` is set (it is set here, as
the official test loop ignores such pixels); ours ignore it (Cityscapes) or report the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import data
from harness.data import coco_stuff, pascal_context
from harness.metrics import confusion_matrix, segmentation_metrics
from tests.test_real_datasets import (
    PC_IDS_59,
    write_ade20k,
    write_cityscapes,
    write_coco_stuff10k,
    write_lip,
    write_pascal_context,
)

ssseg_datasets = pytest.importorskip(
    "ssseg.modules.datasets", reason="sssegmentation==1.7.0 is not importable: pip install -e '.[test]'"
)
from ssseg.modules.datasets.ade20k import ADE20kDataset
from ssseg.modules.datasets.cityscapes import CityScapesDataset
from ssseg.modules.datasets.coco import COCOStuff10kDataset
from ssseg.modules.datasets.lip import LIPDataset
from ssseg.modules.datasets.pipelines import Evaluation
from ssseg.modules.datasets.voc import PascalContext59Dataset

IGNORE = 255


def _official(cls, root: Path, split: str):
    cfg = {"type": cls.__name__, "rootdir": str(root), "set": split, "data_pipelines": [],
           "auto_correct_invalid_seg_target": True}
    return cls(mode="TEST", logger_handle=None, dataset_cfg=cfg)


def _official_labels(dataset) -> dict[str, np.ndarray]:
    """{resolved image path: train ids with every ignored value as 255} of an official dataset."""
    out = {}
    for image_id in dataset.imageids:
        image = Path(dataset.image_dir) / f"{image_id}{dataset.image_ext}"
        ann_id = image_id.replace("leftImg8bit", "gtFine_labelIds") if isinstance(dataset, CityScapesDataset) else image_id
        target = dataset.read(str(image), str(Path(dataset.ann_dir) / f"{ann_id}{dataset.ann_ext}"))["seg_target"]
        label = np.where((target < 0) | (target >= dataset.num_classes), IGNORE, target).astype(np.uint8)
        out[str(image.resolve())] = label
    return out


def _our_labels(name: str, root: Path, split: str, options: dict | None = None) -> dict[str, np.ndarray]:
    dataset = data.build_dataset(name, root, split, options or {}, train=False)
    return {str(Path(s.image).resolve()): dataset.load(i)[1] for i, s in enumerate(dataset.samples)}


def _assert_same_labels(ours: dict[str, np.ndarray], official: dict[str, np.ndarray]) -> None:
    assert sorted(ours) == sorted(official)
    for path, label in ours.items():
        np.testing.assert_array_equal(label, official[path], err_msg=path)


def _name_key(name: str) -> str:
    """A class name compared loosely: the first synonym, letters and digits only, lower case."""
    first = name.split(",")[0].strip("_ ").lower()
    return "".join(ch for ch in first if ch.isalnum())


def _assert_same_classes(ours: tuple[str, ...], official: list[str]) -> None:
    assert len(ours) == len(official)
    assert [_name_key(n) for n in ours] == [_name_key(n) for n in official]


def _write_id_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(ids) + "\n")


# ----------------------------------------------------------------------------- label mapping


def test_ade20k_matches_the_official_dataset(tmp_path):
    base = write_ade20k(tmp_path)
    for split, folder in (("train", "training"), ("val", "validation")):
        _write_id_list(base / f"{split}.txt", sorted(p.stem for p in (base / "images" / folder).glob("*.jpg")))
        official = _official(ADE20kDataset, tmp_path / "ade20k", split)
        _assert_same_labels(_our_labels("ade20k", tmp_path, split), _official_labels(official))
    _assert_same_classes(data.dataset_card("ade20k").class_names, official.classnames)


def test_cityscapes_matches_the_official_dataset(tmp_path):
    base = write_cityscapes(tmp_path)
    for split in ("train", "val"):
        ids = sorted(str(p.relative_to(base / "leftImg8bit" / split)).removesuffix(".png")
                     for p in (base / "leftImg8bit" / split).rglob("*.png"))
        _write_id_list(base / f"{split}.txt", ids)
        official = _official(CityScapesDataset, base, split)
        _assert_same_labels(_our_labels("cityscapes", tmp_path, split), _official_labels(official))
    _assert_same_classes(data.dataset_card("cityscapes").class_names, official.classnames)


def test_lip_matches_the_official_dataset(tmp_path):
    base = write_lip(tmp_path)
    official_root = tmp_path / "official_lip"  # the official layout: <root>/val_images, val_segmentations, val_id.txt
    official_root.mkdir()
    for split in ("train", "val"):
        os.symlink(base / "TrainVal_images" / f"{split}_images", official_root / f"{split}_images")
        os.symlink(base / "TrainVal_parsing_annotations" / f"{split}_segmentations", official_root / f"{split}_segmentations")
        os.symlink(base / "TrainVal_images" / f"{split}_id.txt", official_root / f"{split}_id.txt")
        official = _official(LIPDataset, official_root, split)
        _assert_same_labels(_our_labels("lip", tmp_path, split), _official_labels(official))
    _assert_same_classes(data.dataset_card("lip").class_names, official.classnames)


@pytest.mark.parametrize("protocol", ["paper", "annotated"])
def test_coco_stuff10k_protocols_against_the_official_dataset(tmp_path, protocol):
    write_coco_stuff10k(tmp_path)
    official_to_ours = np.full(256, IGNORE, dtype=np.uint8)  # annotated: the official id minus the 11 unused
    for cid, train_id in coco_stuff.TRAIN_ID.items():
        official_to_ours[cid - 1] = train_id
    for split in ("train", "test"):
        official = _official(COCOStuff10kDataset, tmp_path / "coco_stuff10k", split)
        ours = _our_labels("coco_stuff10k", tmp_path, split, {"protocol": protocol})
        theirs = _official_labels(official)
        if protocol == "annotated":
            theirs = {path: official_to_ours[label] for path, label in theirs.items()}
        _assert_same_labels(ours, theirs)
    if protocol == "paper":  # the official protocol: the same 182 classes
        _assert_same_classes(data.dataset_card("coco_stuff10k").class_names, official.classnames)
    else:
        kept = [official.classnames[cid - 1] for cid in sorted(coco_stuff.TRAIN_ID)]
        _assert_same_classes(data.dataset_card("coco_stuff10k", {"protocol": "annotated"}).class_names, kept)


def _official_context_pngs(voc: Path, out: Path) -> None:
    """The official SegmentationClassContext PNGs (0 background, 1-59 the classes in id order,
    as the PASCAL-Context 59-class conversion writes them) from the 459-class .mat files."""
    import scipy.io

    lut = np.zeros(460, dtype=np.uint8)
    lut[list(PC_IDS_59)] = np.arange(1, 60, dtype=np.uint8)
    out.mkdir(parents=True)
    for mat in (voc / "trainval").glob("*.mat"):
        raw = scipy.io.loadmat(mat)["LabelMap"]
        Image.fromarray(lut[np.minimum(raw, 459)]).save(out / f"{mat.stem}.png")


def test_pascal_context59_matches_the_official_dataset(tmp_path):
    voc = write_pascal_context(tmp_path)
    lists = voc / "ImageSets" / "SegmentationContext"
    for split in ("train", "val"):
        _write_id_list(lists / f"{split}.txt", (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split())
    for job in pascal_context.conversion_jobs(tmp_path):  # ours: python -m harness.prepare pascal_context59
        job.output.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(job.make()).save(job.output)
    official_root = tmp_path / "official_context"
    for sub in ("JPEGImages", "ImageSets"):
        official_root.mkdir(exist_ok=True)
        os.symlink(voc / sub, official_root / sub)
    _official_context_pngs(voc, official_root / "SegmentationClassContext")
    for split in ("train", "val"):
        official = _official(PascalContext59Dataset, official_root, split)
        _assert_same_labels(_our_labels("pascal_context59", tmp_path, split), _official_labels(official))
    _assert_same_classes(data.dataset_card("pascal_context59").class_names, official.classnames)


# ----------------------------------------------------------------------------- averaging


def _scores(preds: list[np.ndarray], gts: list[np.ndarray], k: int, names: tuple[str, ...]) -> tuple[dict, dict]:
    """(ours, official) metrics of the same predictions; official ignore is -1, ours 255."""
    confusion = sum(confusion_matrix(torch.from_numpy(p), torch.from_numpy(g), k, IGNORE) for p, g in zip(preds, gts))
    ours = segmentation_metrics(confusion, names)
    official_gts = [np.where(g == IGNORE, -1, g.astype(np.int64)) for g in gts]
    official = Evaluation([p.astype(np.int64) for p in preds], official_gts, k, ignore_index=-1).all_metric_results
    return ours, official


@pytest.mark.parametrize("name", ["ade20k", "cityscapes", "lip", "pascal_context59", "coco_stuff10k"])
def test_miou_matches_the_official_evaluator(name):
    card = data.dataset_card(name)
    k = card.num_classes
    rng = np.random.default_rng(k)
    # ground truth uses a third of the classes (and ignore); predictions any class
    present = rng.choice(k, size=max(2, k // 3), replace=False)
    gts = [np.where(rng.random((24, 32)) < 0.1, IGNORE, rng.choice(present, size=(24, 32))) for _ in range(3)]
    gts = [g.astype(np.uint8) for g in gts]
    preds = [np.where(rng.random(g.shape) < 0.5, g, rng.integers(0, k, g.shape)).astype(np.uint8) for g in gts]
    preds = [np.where(p == IGNORE, 0, p) for p in preds]
    ours, official = _scores(preds, gts, k, card.class_names)
    assert ours["mIoU"] == pytest.approx(100 * float(official["miou"]), abs=1e-9)
    ours_iou = np.array(list(ours["per_class_iou"].values())) / 100
    np.testing.assert_allclose(ours_iou, official["iou"], rtol=0, atol=1e-12)  # NaN where they are NaN
    assert ours["aAcc"] == pytest.approx(100 * float(official["all_accuracy"]), abs=1e-9)


def test_coco_stuff10k_paper_protocol_counts_predicted_unused_classes():
    """A predicted class absent from the ground truth has IoU 0 and lowers the mean (nanmean over
    182); the annotated protocol has no such class to predict."""
    k = data.dataset_card("coco_stuff10k").num_classes
    street_sign = coco_stuff.ALL_NAMES.index("street sign")  # an unused id: never in the ground truth
    gt = np.array([[0, 0, 1, 1]], dtype=np.uint8)
    pred = np.array([[0, street_sign, 1, 1]], dtype=np.uint8)
    ours, official = _scores([pred], [gt], k, coco_stuff.ALL_NAMES)
    assert ours["per_class_iou"]["street sign"] == 0.0
    assert ours["mIoU"] == pytest.approx(100 * float(official["miou"])) == pytest.approx((50 + 100 + 0) / 3)


def test_coco_stuff164k_official_decoding_is_not_followed(tmp_path):
    """sssegmentation's COCOStuffDataset applies the 10k decoding (0 -> ignore, v -> v - 1) to the
    stuffthingmaps PNGs, whose raw value is already id - 1: person (raw 0) would be ignored and
    bicycle (raw 1) read as person. We decode the PNGs as published (harness/data/coco_stuff.py)."""
    from ssseg.modules.datasets.coco import COCOStuffDataset

    png = tmp_path / "000000000139.png"
    Image.fromarray(np.array([[0, 1, 91, 255]], dtype=np.uint8)).save(png)  # person, bicycle, banner, unlabeled
    image = tmp_path / "000000000139.jpg"
    Image.fromarray(np.zeros((1, 4, 3), dtype=np.uint8)).save(image)
    official = COCOStuffDataset.__new__(COCOStuffDataset)  # read() only: no COCO JSON needed
    official.mode, official.dataset_cfg = "TEST", {"type": "COCOStuffDataset"}
    official.ignore_index, official.auto_correct_invalid_seg_target = -100, True
    theirs = official.read(str(image), str(png))["seg_target"]
    assert theirs.tolist() == [[-100, 0, 90, -100]]
    ours = coco_stuff.convert_stuffthingmap(png)
    assert ours.tolist() == [[0, 1, 80, 255]]  # person, bicycle, banner in the 171 annotated classes
