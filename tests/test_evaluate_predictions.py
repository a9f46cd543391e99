"""`harness.evaluate --predictions` on other code bases' namings and encodings.

The Cityscapes checks compare with cityscapesscripts' own evaluator run on the same files.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
from cityscapesscripts.helpers.labels import labels as cs_labels
from PIL import Image

from harness.data.base import Sample
from harness.evaluate import PredictionError, prediction_paths
from harness.evaluate.command import main
from tests.test_evaluate import OPTIONS, scenes  # noqa: F401  (the fixture)

H, W = 20, 28
# (city, <city>_<seq>_<frame>) of the fixture's val images
CITY_VAL = [("frankfurt", "frankfurt_000000_000019"), ("frankfurt", "frankfurt_000001_000058"),
            ("lindau", "lindau_000003_000019")]
LABEL_IDS = np.array([label.id for label in cs_labels if 0 <= label.id < 256])
TRAIN_TO_LABEL = {label.trainId: label.id for label in cs_labels if 0 <= label.trainId < 19}


def _png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_cityscapes_val(root: Path, rng: np.random.Generator) -> list[Path]:
    """Official layout with random raw label ids (void ones included); returns the label files."""
    base = root / "cityscapes"
    labels = []
    for city, triple in CITY_VAL:
        _png(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), base / "leftImg8bit" / "val" / city / f"{triple}_leftImg8bit.png")
        label = base / "gtFine" / "val" / city / f"{triple}_gtFine_labelIds.png"
        _png(rng.choice(LABEL_IDS, (H, W)).astype(np.uint8), label)
        labels.append(label)
    return labels


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # 255 (no class) -> 0, the void id "unlabeled"
    for train_id, label_id in TRAIN_TO_LABEL.items():
        lut[train_id] = label_id
    return lut[train_ids]


def cityscapesscripts_miou(predictions: list[Path], labels: list[Path]) -> tuple[float, dict]:
    """mIoU (in %) and per-class IoU of cityscapesscripts' pixel-level evaluator."""
    args = cs_eval.args
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    result = cs_eval.evaluateImgLists([str(p) for p in predictions], [str(p) for p in labels], args)
    per_class = {name: 100.0 * v for name, v in result["classScores"].items() if not math.isnan(v)}
    return 100.0 * result["averageScoreClasses"], per_class


def _score(root: Path, preds: Path, out: Path, *extra: str) -> dict:
    argv = ["--dataset", "cityscapes", "--split", "val", "--root", str(root), "--predictions", str(preds),
            "--json", str(out), *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_cityscapes_three_namings_match_cityscapesscripts(tmp_path, capsys):
    rng = np.random.default_rng(3)
    labels = write_cityscapes_val(tmp_path, rng)
    train_preds = [rng.choice(np.r_[np.arange(19), 255], (H, W)).astype(np.uint8) for _ in labels]
    # a prediction agreeing with the ground truth on part of the image, so IoUs are not all tiny
    for pred, label in zip(train_preds, labels):
        raw = np.asarray(Image.open(label))
        for train_id, label_id in TRAIN_TO_LABEL.items():
            pred[:, : W // 2][raw[:, : W // 2] == label_id] = train_id
    by_label_stem, official, mmseg = tmp_path / "stem", tmp_path / "official", tmp_path / "mmseg"
    official_files = []
    for (city, triple), pred in zip(CITY_VAL, train_preds):
        _png(pred, by_label_stem / f"{triple}_gtFine_labelIds.png")
        official_files.append(official / city / f"{triple}_pred.png")
        _png(to_label_ids(pred), official_files[-1])
        _png(to_label_ids(pred), mmseg / f"{triple}_leftImg8bit.png")

    runs = [_score(tmp_path, by_label_stem, tmp_path / "a.json"), _score(tmp_path, official, tmp_path / "b.json"),
            _score(tmp_path, mmseg, tmp_path / "c.json", "--ids", "labelids")]
    printed = capsys.readouterr().out
    assert "ids: trainIds detected" in printed and "ids: labelIds detected" in printed
    assert [r["ids"] for r in runs] == ["trainids", "labelids", "labelids"]
    for run in runs[1:]:
        assert run["per_class_iou"] == pytest.approx(runs[0]["per_class_iou"], nan_ok=True)
        assert (run["mIoU"], run["aAcc"]) == pytest.approx((runs[0]["mIoU"], runs[0]["aAcc"]))
    official_miou, official_iou = cityscapesscripts_miou(official_files, labels)
    assert 5.0 < runs[0]["mIoU"] < 95.0
    assert runs[0]["mIoU"] == pytest.approx(official_miou, abs=1e-9)
    ours = {name: v for name, v in runs[0]["per_class_iou"].items() if not math.isnan(v)}
    assert ours == pytest.approx(official_iou, abs=1e-9)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_cityscapes_ambiguous_missing_and_wrong_ids(tmp_path, capsys):
    rng = np.random.default_rng(4)
    write_cityscapes_val(tmp_path, rng)
    preds = tmp_path / "preds"
    for _, triple in CITY_VAL:
        _png(np.full((H, W), 26, np.uint8), preds / f"{triple}_leftImg8bit.png")
    argv = ["--dataset", "cityscapes", "--split", "val", "--root", str(tmp_path), "--predictions", str(preds)]
    _png(np.zeros((H, W), np.uint8), preds / "colour" / f"{CITY_VAL[1][1]}_color.png")
    assert main(argv) == 2
    err = _one_line(capsys)
    assert f"{CITY_VAL[1][1]}_leftImg8bit.png" in err and f"{CITY_VAL[1][1]}_color.png" in err
    assert "two predictions" in err

    (preds / "colour" / f"{CITY_VAL[1][1]}_color.png").unlink()
    (preds / f"{CITY_VAL[2][1]}_leftImg8bit.png").unlink()
    assert main(argv) == 2
    err = _one_line(capsys)
    assert CITY_VAL[2][1] in err and "1 of 3" in err

    _png(np.full((H, W), 26, np.uint8), preds / f"{CITY_VAL[2][1]}_leftImg8bit.png")
    assert main([*argv, "--ids", "trainids"]) == 2
    assert "value 26" in _one_line(capsys)
    assert main([*argv, "--ids", "labelids"]) == 0


def _fake_dataset(name: str, pairs: list[tuple[str, str]]) -> SimpleNamespace:
    samples = [Sample(Path("images") / image, Path("labels") / label) for image, label in pairs]
    return SimpleNamespace(card=SimpleNamespace(name=name), samples=samples)


def test_other_datasets_by_image_stem_or_label_stem(tmp_path):
    dataset = _fake_dataset("coco_stuff164k", [("0139.jpg", "0139_labelTrainIds.png"), ("0285.jpg", "0285_labelTrainIds.png")])
    for name in ("0139.png", "0285_labelTrainIds.png", "notes.png"):
        _png(np.zeros((2, 2), np.uint8), tmp_path / name)
    assert prediction_paths(dataset, tmp_path) == [tmp_path / "0139.png", tmp_path / "0285_labelTrainIds.png"]
    _png(np.zeros((2, 2), np.uint8), tmp_path / "sub" / "0139_labelTrainIds.png")
    with pytest.raises(PredictionError, match="two predictions") as err:
        prediction_paths(dataset, tmp_path)
    assert "0139.png" in str(err.value) and "sub/0139_labelTrainIds.png" in str(err.value)
    (tmp_path / "0285_labelTrainIds.png").unlink()
    (tmp_path / "sub" / "0139_labelTrainIds.png").unlink()
    with pytest.raises(PredictionError, match="1 of 2") as err:
        prediction_paths(dataset, tmp_path)
    assert "0285_labelTrainIds.png or 0285.png" in str(err.value)
    clash = _fake_dataset("ade20k", [("a.jpg", "b.png"), ("b.jpg", "c.png")])
    with pytest.raises(PredictionError, match="would be ambiguous"):
        prediction_paths(clash, tmp_path)


def test_ids_is_for_cityscapes_only(scenes, tmp_path, capsys):  # noqa: F811
    root, dataset = scenes
    preds = tmp_path / "preds"
    for i, sample in enumerate(dataset.samples):
        _png(dataset.load(i)[1].astype(np.uint8), preds / f"{Path(sample.image).stem}.png")
    argv = ["--dataset", "context_scenes", "--split", "val", "--root", str(root), "--predictions", str(preds),
            "--options", json.dumps(OPTIONS)]
    assert main(argv) == 0
    assert "mIoU 100.00" in capsys.readouterr().out
    assert main([*argv, "--ids", "labelids"]) == 2
    assert "--ids applies to cityscapes only" in _one_line(capsys)
