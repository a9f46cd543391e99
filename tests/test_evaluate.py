"""Test protocols (whole, sliding window, flip, multi-scale) and the saved-prediction scorer."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from harness.config import EvalConfig
from harness.data import build_dataset
from harness.evaluate import aug_probabilities, evaluate, predict, slide_inference, whole_inference, window_starts
from harness.evaluate.command import main
from harness.metrics import confusion_matrix, segmentation_metrics
from tests.conftest import REPO


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


class Probe(torch.nn.Module):
    """A fake segmentor with hand-computable outputs, recording the input shape of every call.

    Channels: 0 = x coordinate of the pixel within the input, 1 = y coordinate, 2 = the input's
    first channel (identity), 3 = input width, 4 = sum of the input's first channel.
    """

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        b, _, h, w = x.shape
        xs = torch.arange(w, dtype=x.dtype).expand(b, 1, h, w)
        ys = torch.arange(h, dtype=x.dtype)[:, None].expand(b, 1, h, w)
        width = torch.full((b, 1, h, w), float(w))
        total = x[:, :1].sum((2, 3), keepdim=True).expand(b, 1, h, w)
        return torch.cat([xs, ys, x[:, :1], width, total], 1)


def test_window_grid_ends_at_the_border():
    assert window_starts(7, 4, 3) == [0, 3]
    assert window_starts(4, 4, 3) == [0]
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]


def test_slide_averages_overlapping_window_logits_by_hand():
    # 4x7 image, crop 4, stride 3: windows x in [0,4) and [3,7); column 3 is covered twice
    image = torch.arange(28, dtype=torch.float32).reshape(1, 1, 4, 7)
    model = Probe()
    out = slide_inference(model, image, (4, 4), (3, 3), window_batch=1)
    assert model.calls == [(1, 1, 4, 4), (1, 1, 4, 4)]
    assert out.shape == (1, 5, 4, 7)
    # local x: window 0 gives 0 1 2 3 at 0..3, window 1 gives 0 1 2 3 at 3..6; column 3 = (3 + 0) / 2
    expected_x = torch.tensor([0, 1, 2, 1.5, 1, 2, 3]).expand(4, 7)
    assert torch.equal(out[0, 0], expected_x)
    assert torch.equal(out[0, 1], torch.arange(4.0)[:, None].expand(4, 7))  # one window row: local y = y
    assert torch.equal(out[0, 2], image[0, 0])  # averaging the identity puts every pixel back in place
    assert torch.equal(out[0, 3], torch.full((4, 7), 4.0))


def test_slide_two_axes_and_windows_batched_over_images():
    # 5x7, crop 4 stride 3: rows in [0,4) and [1,5): local y summed / count = 0, .5, 1.5, 2.5, 3
    images = torch.stack([torch.arange(35.0).reshape(1, 5, 7), -torch.arange(35.0).reshape(1, 5, 7)])
    model = Probe()
    out = slide_inference(model, images, (4, 4), (3, 3), window_batch=3)
    assert model.calls == [(6, 1, 4, 4), (2, 1, 4, 4)]  # 4 windows x 2 images, 3 windows per call
    assert torch.equal(out[:, 1], torch.tensor([0, 0.5, 1.5, 2.5, 3])[:, None].expand(2, 5, 7))
    assert torch.equal(out[:, 0], torch.tensor([0, 1, 2, 1.5, 1, 2, 3]).expand(2, 5, 7))
    assert torch.equal(out[:, 2], images[:, 0])
    # the same with one window per call
    assert torch.equal(slide_inference(Probe(), images, (4, 4), (3, 3), window_batch=1), out)


def test_slide_pads_an_image_smaller_than_the_crop():
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]]])  # 3x2
    model = Probe()
    out = slide_inference(model, image, (4, 4), (3, 3))
    assert model.calls == [(1, 1, 4, 4)]  # padded bottom/right to the crop
    assert out.shape == (1, 5, 3, 2)
    assert torch.equal(out[0, 0], torch.tensor([[0.0, 1.0]] * 3))
    assert torch.equal(out[0, 2], image[0, 0])
    assert torch.equal(out[0, 3], torch.full((3, 2), 4.0))
    assert torch.equal(out[0, 4], torch.full((3, 2), 21.0))  # the padding is zeros
    # shorter but wider than the crop: padded in height only, two windows across
    model = Probe()
    out = slide_inference(model, torch.ones(1, 1, 2, 7), (4, 4), (3, 3))
    assert model.calls == [(2, 1, 4, 4)] and out.shape == (1, 5, 2, 7)
    assert torch.equal(out[0, 0], torch.tensor([0, 1, 2, 1.5, 1, 2, 3]).expand(2, 7))


def test_slide_softmax_per_window_option():
    image = torch.zeros(1, 1, 4, 7)
    out = slide_inference(Probe(), image, (4, 4), (3, 3), probs_before_resize=True)
    assert torch.allclose(out.sum(1), torch.ones(1, 4, 7))
    window0 = torch.softmax(Probe()(image[..., :4]), 1)[..., 3]
    window1 = torch.softmax(Probe()(image[..., 3:]), 1)[..., 0]
    assert torch.allclose(out[..., 3], (window0 + window1) / 2)


def test_whole_equals_slide_when_the_crop_covers_the_image():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1).eval()
    images = torch.randn(2, 3, 6, 9)
    whole = whole_inference(conv, images)
    assert torch.allclose(slide_inference(conv, images, (6, 9), (6, 9)), whole, atol=1e-6)
    # a larger crop pads with zeros, which a single zero-padded 3x3 conv cannot tell apart
    assert torch.allclose(slide_inference(conv, images, (8, 12), (5, 5)), whole, atol=1e-6)
    label_size = (12, 18)
    assert torch.equal(
        predict(conv, images, label_size, mode="slide", crop_size=(6, 9), stride=(4, 4)),
        predict(conv, images, label_size),
    )


class XVsValue(torch.nn.Module):
    """Two classes: logit 0 = x coordinate in the input, logit 1 = the pixel's value. Not flip-invariant."""

    def forward(self, x):
        b, _, h, w = x.shape
        return torch.cat([torch.arange(w, dtype=x.dtype).expand(b, 1, h, w), x[:, :1]], 1)


def test_flip_averages_with_the_flipped_back_prediction():
    values = [0.0, 0.5, 3.0, 1.0]
    image = torch.tensor(values).reshape(1, 1, 1, 4)
    probs = aug_probabilities(XVsValue(), image, (1, 4), flip=True)
    # plain: p0 = sigmoid(x - v); mirrored then flipped back: x becomes 3 - x, v stays in place
    expected = [(sigmoid(x - v) + sigmoid(3 - x - v)) / 2 for x, v in enumerate(values)]
    assert probs[0, 0, 0].tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(1, 1, 4))
    plain = [sigmoid(x - v) for x, v in enumerate(values)]
    assert aug_probabilities(XVsValue(), image, (1, 4))[0, 0, 0].tolist() == pytest.approx(plain, abs=1e-6)


class LeftHalf(torch.nn.Module):
    """Three classes: class 1 scores 2 on the left half of its input, otherwise all logits 0."""

    def forward(self, x):
        b, _, h, w = x.shape
        out = torch.zeros(b, 3, h, w)
        out[:, 1, :, : w // 2] = 2.0
        return out


def test_flip_exchanges_left_right_class_pairs():
    image = torch.zeros(1, 1, 2, 4)
    p_high = math.exp(2) / (math.exp(2) + 2)
    left = [(1 - p_high) / 2 / 2 + 1 / 6, (p_high + 1 / 3) / 2, (1 - p_high) / 2 / 2 + 1 / 6]
    swapped = aug_probabilities(LeftHalf(), image, (2, 4), flip=True, flip_swap=[(1, 2)])
    assert swapped[0, :, 0, 0].tolist() == pytest.approx(left, abs=1e-6)
    right = [left[0], left[2], left[1]]  # the mirror's "left half" is the right half, as class 2
    assert swapped[0, :, 0, 3].tolist() == pytest.approx(right, abs=1e-6)
    assert predict(LeftHalf(), image, (2, 4), flip=True, flip_swap=[(1, 2)])[0, 0].tolist() == [1, 1, 2, 2]
    assert predict(LeftHalf(), image, (2, 4), flip=True)[0, 0].tolist() == [1, 1, 1, 1]


class XVsWidth(torch.nn.Module):
    """Two classes: logit 0 = x coordinate in the input, logit 1 = input width / 4 (scale dependent)."""

    def forward(self, x):
        b, _, h, w = x.shape
        return torch.cat([torch.arange(w, dtype=x.dtype).expand(b, 1, h, w), torch.full((b, 1, h, w), w / 4)], 1)


def test_multi_scale_flip_averages_softmax_probabilities_by_hand():
    image = torch.zeros(1, 1, 2, 4)
    probs = aug_probabilities(XVsWidth(), image, (2, 4), flip=True, scales=[1.0, 0.5])
    # scale 1: logit0 - logit1 = x - 1 ; mirrored and flipped back: (3 - x) - 1
    d_full = [-1.0, 0.0, 1.0, 2.0]
    d_full_flip = [2.0, 1.0, 0.0, -1.0]
    # scale 0.5: the input is 1x2, logit0 = (0, 1) upsampled bilinearly to width 4 = (0, .25, .75, 1),
    # logit1 = 2 / 4; mirrored: (1, .75, .25, 0)
    d_half = [-0.5, -0.25, 0.25, 0.5]
    d_half_flip = [0.5, 0.25, -0.25, -0.5]
    expected = [
        (sigmoid(a) + sigmoid(b) + sigmoid(c) + sigmoid(d)) / 4
        for a, b, c, d in zip(d_full, d_full_flip, d_half, d_half_flip)
    ]
    assert probs.shape == (1, 2, 2, 4)
    assert probs[0, 0, 0].tolist() == pytest.approx(expected, abs=1e-6)
    assert probs[0, 0, 1].tolist() == pytest.approx(expected, abs=1e-6)
    # averaging probabilities is not averaging logits: the two conventions differ here
    mean_logit_gap = [(a + b + c + d) / 4 for a, b, c, d in zip(d_full, d_full_flip, d_half, d_half_flip)]
    assert [sigmoid(g) for g in mean_logit_gap] != pytest.approx(expected, abs=1e-4)


def test_multi_scale_with_slide_windows_each_scale():
    model = Probe()
    image = torch.zeros(1, 1, 4, 7)
    aug_probabilities(model, image, (4, 7), mode="slide", crop_size=(4, 4), stride=(3, 3), scales=[1.0, 1.5])
    # scale 1: 4x7 -> 2 windows in one call; scale 1.5: 6x11 (10.5 rounded) -> rows (0, 2) x
    # columns (0, 3, 6, 7) = 8 windows in two calls of 4
    assert model.calls == [(2, 1, 4, 4), (4, 1, 4, 4), (4, 1, 4, 4)]


def test_single_scale_prediction_is_the_argmax_of_resized_logits():
    torch.manual_seed(1)
    images = torch.randn(2, 3, 8, 8)

    def coarse(x):  # answers at half resolution
        return torch.nn.functional.avg_pool2d(torch.cat([x, -x], 1), 2)

    logits = torch.nn.functional.interpolate(coarse(images), size=(8, 8), mode="bilinear", align_corners=False)
    logits = torch.nn.functional.interpolate(logits, size=(5, 7), mode="bilinear", align_corners=False)
    assert torch.equal(predict(coarse, images, (5, 7)), logits.argmax(1))


def test_eval_config_validation():
    assert EvalConfig().mode == "whole" and EvalConfig().scales == [1.0]
    cfg = EvalConfig(mode="slide", crop_size=[640, 640], stride=[426, 426], flip=True, scales=[0.5, 1.75])
    assert cfg.crop_size == (640, 640) and cfg.stride == (426, 426)
    with pytest.raises(ValidationError, match="needs crop_size and stride"):
        EvalConfig(mode="slide", crop_size=(512, 512))
    with pytest.raises(ValidationError, match="must not exceed"):
        EvalConfig(mode="slide", crop_size=(512, 512), stride=(341, 600))
    with pytest.raises(ValidationError):
        EvalConfig(scales=[1.0, -0.5])
    with pytest.raises(ValidationError):
        EvalConfig(scales=[])
    with pytest.raises(ValidationError):
        EvalConfig(mode="sliding")
    with pytest.raises(ValidationError):
        EvalConfig(mode="slide", crop_size=(0, 4), stride=(0, 4))


# ----------------------------------------------------------------------------- evaluate() and the CLI

OPTIONS = {"num_train": 4, "num_val": 3, "image_size": 32}


@pytest.fixture
def scenes(tmp_path):
    root = tmp_path / "datasets"
    return root, build_dataset("context_scenes", root, "val", OPTIONS, train=False)


def test_evaluate_protocols_on_context_scenes(scenes):
    _, dataset = scenes
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, dataset.card.num_classes, 3, padding=1)
    device = torch.device("cpu")
    whole = evaluate(conv, dataset, device, batch_size=2)
    slide = evaluate(conv, dataset, device, batch_size=2, mode="slide", crop_size=(32, 32), stride=(32, 32))
    assert slide["per_class_iou"] == whole["per_class_iou"]
    aug = evaluate(conv, dataset, device, mode="slide", crop_size=(24, 24), stride=(16, 16), flip=True, scales=[0.75, 1.0])
    assert aug["num_images"] == 3 and 0.0 <= aug["aAcc"] <= 100.0
    with pytest.raises(ValueError, match="crop_size and stride"):
        evaluate(conv, dataset, device, mode="slide")


def _write_predictions(dataset, directory: Path) -> list[np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    labels = []
    for i, sample in enumerate(dataset.samples):
        _, label = dataset.load(i)
        labels.append(label)
        Image.fromarray(label.astype(np.uint8), mode="L").save(directory / f"{Path(sample.label).stem}.png")
    return labels


def _cli(root, preds, *extra):
    return main(
        ["--dataset", "context_scenes", "--split", "val", "--root", str(root), "--predictions", str(preds),
         "--options", json.dumps(OPTIONS), *extra]
    )


def test_cli_scores_saved_predictions(scenes, tmp_path, capsys):
    root, dataset = scenes
    preds = tmp_path / "preds"
    labels = _write_predictions(dataset, preds)
    out_json = tmp_path / "perfect.json"
    assert _cli(root, preds, "--json", str(out_json)) == 0
    printed = capsys.readouterr().out
    assert "mIoU 100.00" in printed and "aAcc 100.00" in printed and "boat" in printed
    record = json.loads(out_json.read_text())
    assert record["mIoU"] == 100.0 and record["num_images"] == 3 and record["dataset"] == "context_scenes"

    # one wrong prediction: the first image's ground pixels predicted as rock
    wrong = labels[0].copy()
    wrong[wrong == 0] = 9
    stem = Path(dataset.samples[0].label).stem
    Image.fromarray(wrong, mode="L").save(preds / f"{stem}.png")
    assert _cli(root, preds, "--json", str(out_json)) == 0
    k = dataset.card.num_classes
    conf = sum(
        confusion_matrix(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(l.astype(np.int64)), k, 255)
        for p, l in zip([wrong, labels[1], labels[2]], labels)
    )
    expected = segmentation_metrics(conf, dataset.card.class_names)
    record = json.loads(out_json.read_text())
    assert record["mIoU"] < 100.0
    assert record["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-9)
    assert record["aAcc"] == pytest.approx(expected["aAcc"], abs=1e-9)
    assert record["per_class_iou"]["rock"] == pytest.approx(expected["per_class_iou"]["rock"], abs=1e-9)


def test_cli_ignore_valued_prediction_is_a_miss(scenes, tmp_path):
    root, dataset = scenes
    preds = tmp_path / "preds"
    labels = _write_predictions(dataset, preds)
    blank = labels[1].copy()
    ground_total = sum(int((l == 0).sum()) for l in labels)
    missed = int((blank == 0).sum())
    blank[blank == 0] = 255  # "no prediction" on this image's ground pixels
    Image.fromarray(blank, mode="L").save(preds / f"{Path(dataset.samples[1].label).stem}.png")
    out_json = tmp_path / "m.json"
    assert _cli(root, preds, "--json", str(out_json)) == 0
    record = json.loads(out_json.read_text())
    iou = record["per_class_iou"]
    assert iou["ground"] == pytest.approx(100.0 * (ground_total - missed) / ground_total)
    assert all(v == 100.0 for name, v in iou.items() if name != "ground" and not math.isnan(v))
    assert record["unassigned_pixels"] == missed


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_cli_errors_exit_2_with_one_line(scenes, tmp_path, capsys):
    root, dataset = scenes
    preds = tmp_path / "preds"
    _write_predictions(dataset, preds)
    stems = [Path(s.label).stem for s in dataset.samples]

    (preds / f"{stems[1]}.png").unlink()
    assert _cli(root, preds) == 2
    err = _one_line_error(capsys)
    assert f"{stems[1]}.png" in err and "1 of 3" in err

    _write_predictions(dataset, preds)
    bad = np.zeros((32, 32), dtype=np.uint8)
    bad[5, 7] = 10  # context scenes have classes 0..9
    Image.fromarray(bad, mode="L").save(preds / f"{stems[2]}.png")
    assert _cli(root, preds) == 2
    err = _one_line_error(capsys)
    assert f"{stems[2]}.png" in err and "value 10" in err

    Image.fromarray(np.zeros((16, 32), dtype=np.uint8), mode="L").save(preds / f"{stems[2]}.png")
    assert _cli(root, preds) == 2
    err = _one_line_error(capsys)
    assert f"{stems[2]}.png" in err and "32x16" in err

    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(preds / f"{stems[2]}.png")
    assert _cli(root, preds) == 2
    assert "mode RGB" in _one_line_error(capsys)

    assert main(["--dataset", "nope", "--split", "val", "--root", str(root), "--predictions", str(preds)]) == 2
    assert "unknown dataset" in _one_line_error(capsys)
    assert _cli(root, tmp_path / "absent") == 2
    assert "no such predictions folder" in _one_line_error(capsys)


def test_cli_as_a_module(scenes, tmp_path):
    root, dataset = scenes
    preds = tmp_path / "preds"
    _write_predictions(dataset, preds)
    (preds / f"{Path(dataset.samples[0].label).stem}.png").unlink()
    args = ["--dataset", "context_scenes", "--split", "val", "--root", str(root), "--predictions", str(preds)]
    proc = subprocess.run(
        [sys.executable, "-m", "harness.evaluate", *args, "--options", json.dumps(OPTIONS)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "prediction file missing" in proc.stderr


def test_experiment_eval_section_reaches_evaluate(write_experiment, monkeypatch):
    import harness.train
    from harness.config import ConfigError, load_experiment
    from harness.run import resolve_cells
    from harness.train import PrintReporter, run_cell
    from tests.conftest import tiny_experiment

    seen = {}

    def recording_evaluate(*args, **kwargs):
        seen.update(kwargs)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(harness.train, "evaluate", recording_evaluate)

    protocol = {"mode": "slide", "crop_size": [24, 24], "stride": [16, 16], "flip": True, "scales": [0.75, 1.0]}
    exp = tiny_experiment("protocol", grid={"idr": [False]}, train={"iterations": 1, "batch_size": 4}, eval=protocol)
    cell = resolve_cells(load_experiment(write_experiment(exp)))[0]
    assert cell.eval.mode == "slide" and cell.eval.crop_size == (24, 24) and cell.eval.scales == [0.75, 1.0]
    result = run_cell(cell, PrintReporter(quiet=True))
    assert 0.0 <= result["metrics"]["aAcc"] <= 100.0
    assert seen == {"mode": "slide", "crop_size": (24, 24), "stride": (16, 16), "flip": True, "scales": [0.75, 1.0],
                    "probs_before_resize": False}
    bad = tiny_experiment("protocol", eval={"mode": "slide", "crop_size": [24, 24]})
    with pytest.raises(ConfigError, match=r"eval: mode slide needs crop_size and stride"):
        load_experiment(write_experiment(bad, "bad.yaml"))


# ----------------------------------------------------------------------------- re-evaluating a finished cell


@pytest.fixture(scope="module")
def finished_cell(tmp_path_factory):
    """A tiny trained cell written as harness.run writes it: record.json + model.pt."""
    from harness.config import load_experiment
    from harness.records import store_cell
    from harness.run import resolve_cells
    from harness.train import PrintReporter, run_cell
    from tests.conftest import tiny_experiment

    import yaml

    tmp = tmp_path_factory.mktemp("finished")
    exp = tiny_experiment("reeval", grid={"idr": [True]}, train={"iterations": 2, "batch_size": 4})
    exp["data"]["root"] = str(tmp / "datasets")
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    cell = resolve_cells(load_experiment(path))[0]
    results = tmp / "results" / "reeval"
    record = store_cell(results, cell, run_cell(cell, PrintReporter(quiet=True)), wall_time_s=1.0)
    return results / "cells" / cell.cell_id, cell, record


def test_cell_reevaluated_with_another_protocol(finished_cell, tmp_path, capsys):
    from harness.records import find_records
    from harness.tables import main_rows
    from models import build_segmentor

    directory, cell, record = finished_cell
    out_json = tmp_path / "ms.json"
    assert main(["--cell", str(directory), "--protocol", "ms+flip", "--scales", "0.75", "1.0", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    derived_dir = directory.parent / f"{cell.cell_id}@whole_ms0.75-1+flip"
    assert f"record {derived_dir / 'record.json'}" in printed
    derived = json.loads((derived_dir / "record.json").read_text())
    assert derived["evaluated_from"] == cell.cell_id and derived["cell_id"] == derived_dir.name
    assert derived["config"]["eval"]["flip"] is True and derived["config"]["eval"]["scales"] == [0.75, 1.0]
    assert {k: derived[k] for k in ("train_time_s", "params", "complexity")} == {
        k: record[k] for k in ("train_time_s", "params", "complexity")}
    assert not (derived_dir / "model.pt").exists() and derived["model_file"] == f"../{cell.cell_id}/model.pt"
    # the flip rate was measured under the training cell's protocol: not carried over; the relations were learned
    assert "context_flip" in record and "context_flip" not in derived
    assert derived["relation_recovery"] == record["relation_recovery"]

    # the same figures as evaluating the saved model directly under that protocol
    dataset = build_dataset(cell.dataset, cell.data_root, "val", cell.data_options, train=False)
    model = build_segmentor(cell.framework, cell.idr, dataset.card.num_classes, cell.model, dataset.card.ignore_index)
    model.load_state_dict(torch.load(directory / "model.pt", weights_only=True)["model"])
    direct = evaluate(model, dataset, torch.device("cpu"), flip=True, scales=[0.75, 1.0])
    assert derived["per_class_iou"] == pytest.approx(direct["per_class_iou"], nan_ok=True)
    assert json.loads(out_json.read_text())["mIoU"] == pytest.approx(direct["mIoU"])
    single = evaluate(model, dataset, torch.device("cpu"))
    assert record["per_class_iou"] == pytest.approx(single["per_class_iou"], nan_ok=True)  # the saved model is the final one

    # tables keep the two protocols apart
    rows = main_rows(find_records(directory.parent.parent))
    assert len(rows) == 2


def test_cell_reevaluation_errors_exit_2_and_write_nothing(finished_cell, tmp_path, capsys):
    directory, cell, _ = finished_cell
    before = sorted(p.name for p in directory.parent.iterdir())
    cases = [
        (["--cell", str(tmp_path / "nope")], "no record.json; expected the folder of a finished cell"),
        (["--cell", str(directory)], "give the protocol to evaluate with"),
        (["--cell", str(directory), "--protocol", "ss"], "already evaluated with this protocol (whole_ss)"),
        (["--cell", str(directory), "--mode", "slide"], "eval: Value error, mode slide needs crop_size and stride"),
        (["--cell", str(directory), "--flip", "--predictions", str(tmp_path)], "give one of --predictions"),
        (["--cell", str(directory), "--flip", "--batch-size", "0"], "eval.batch_size: Input should be greater than 0"),
        (["--cell", str(directory), "--crop-size", "64"], "--crop-size: expected HEIGHTxWIDTH"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, (argv, err)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "record.json").write_text((directory / "record.json").read_text())
    (broken / "model.pt").write_bytes(b"not a checkpoint")
    assert main(["--cell", str(broken), "--flip"]) == 2
    assert "model.pt: damaged (its sha256 differs from the record's model_sha256)" in capsys.readouterr().err
    assert sorted(p.name for p in directory.parent.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]
