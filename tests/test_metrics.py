import math

import torch

from harness.metrics import confusion_matrix, segmentation_metrics


def test_confusion_matrix_counts_and_ignores():
    target = torch.tensor([[0, 0, 1, 255], [2, 2, 2, 1]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 0, 2, 1]])
    conf = confusion_matrix(pred, target, 3, 255)
    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 2]])
    assert torch.equal(conf, expected)


def test_metrics_against_hand_computed_values():
    # rows: ground truth, columns: prediction
    conf = torch.tensor([[3, 1, 0, 0], [2, 4, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]])
    m = segmentation_metrics(conf, ["a", "b", "c", "d"])
    iou_a = 3 / (4 + 5 - 3)
    iou_b = 4 / (6 + 5 - 4)
    iou_c = 0 / (0 + 1 - 0)  # predicted once, never present: IoU 0, counted
    iou_d = 0 / (1 + 0 - 0)
    assert math.isclose(m["per_class_iou"]["a"], 100 * iou_a)
    assert math.isclose(m["per_class_iou"]["c"], 0.0)
    assert math.isclose(m["mIoU"], 100 * (iou_a + iou_b + iou_c + iou_d) / 4)
    # accuracy: class c has no ground truth -> NaN, left out of mAcc
    assert math.isnan(m["per_class_acc"]["c"])
    assert math.isclose(m["mAcc"], 100 * (3 / 4 + 4 / 6 + 0) / 3)
    assert math.isclose(m["aAcc"], 100 * 7 / 11)


def test_class_absent_everywhere_is_left_out():
    conf = torch.tensor([[5, 0, 0], [0, 0, 0], [0, 0, 5]])
    m = segmentation_metrics(conf, ["a", "b", "c"])
    assert math.isnan(m["per_class_iou"]["b"])
    assert m["mIoU"] == 100.0


def test_confusion_from_pixels_matches_metrics_end_to_end():
    torch.manual_seed(0)
    target = torch.randint(0, 5, (2, 16, 16))
    target[:, :2] = 255
    pred = torch.randint(0, 5, (2, 16, 16))
    conf = confusion_matrix(pred, target, 5, 255)
    assert conf.sum() == (target != 255).sum()
    m = segmentation_metrics(conf, list("abcde"))
    valid = target != 255
    for k, name in enumerate("abcde"):
        inter = ((pred == k) & (target == k) & valid).sum().item()
        union = (((pred == k) | (target == k)) & valid).sum().item()
        assert math.isclose(m["per_class_iou"][name], 100 * inter / union)
