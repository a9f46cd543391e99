"""Context flip rate and relation recovery (harness/context_probe.py) on hand-made cases."""
from __future__ import annotations

import json

import pytest
import torch

from harness import context_probe as probe
from harness.data import context_scenes as scenes

NAMES = scenes.CLASS_NAMES
ID = scenes.CLASS_ID
PARTNER = probe.partner_of_objects(NAMES)


def _scene(size: int = 64, index: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(original label, swapped label) of one generated scene."""
    layout = scenes.scene_layout(0, "val", index, size)
    _, original = scenes.render_scene(layout)
    _, swapped = scenes.render_scene(scenes.swap_context(layout))
    return torch.from_numpy(original).long(), torch.from_numpy(swapped).long()


def _slow_flip_rate(pred_o: torch.Tensor, pred_s: torch.Tensor, target: torch.Tensor) -> float:
    flipped = total = 0
    for p_o, p_s, t in zip(pred_o.flatten().tolist(), pred_s.flatten().tolist(), target.flatten().tolist()):
        if NAMES[t] in probe.AMBIGUOUS_OBJECTS:
            total += 1
            flipped += NAMES[p_o] in probe.AMBIGUOUS_OBJECTS and scenes.PARTNER[NAMES[p_o]] == NAMES[p_s]
    return 100.0 * flipped / total


def _rate(pred_o, pred_s, target) -> dict:
    flips, total = probe.flip_counts(pred_o, pred_s, target, PARTNER)
    return probe.flip_rates(flips, total, NAMES)


def test_a_model_that_reads_context_flips_every_ambiguous_pixel():
    original, swapped = _scene()
    result = _rate(original, swapped, original)  # the perfect model: its predictions are the labels
    assert result["pixels"] > 0
    assert result["flip_rate"] == 100.0
    assert all(v == 100.0 for v in result["per_class"].values() if v is not None)


def test_a_model_that_ignores_context_flips_nothing():
    original, _ = _scene()
    result = _rate(original, original, original)  # same prediction whatever the band says
    assert result["flip_rate"] == 0.0


def test_partial_flips_and_other_classes():
    target = torch.tensor([[ID["boat"], ID["boat"], ID["car"], ID["sheep"], ID["goat"], ID["water"], ID["rock"], 255]])
    pred_o = torch.tensor([[ID["boat"], ID["boat"], ID["car"], ID["sheep"], ID["rock"], ID["water"], ID["rock"], 0]])
    pred_s = torch.tensor([[ID["car"], ID["boat"], ID["boat"], ID["goat"], ID["rock"], ID["road"], ID["rock"], 0]])
    result = _rate(pred_o, pred_s, target)
    # counted: the 5 object pixels; flipped: boat->car, car->boat, sheep->goat (rock->rock is no flip)
    assert result["pixels"] == 5
    assert result["flip_rate"] == pytest.approx(60.0)
    assert result["per_class"] == {"boat": 50.0, "car": 100.0, "sheep": 100.0, "goat": 0.0}


def test_flip_counts_match_a_slow_reference_on_random_predictions():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, len(NAMES), (3, 16, 16), generator=g)
    pred_o = torch.randint(0, len(NAMES), (3, 16, 16), generator=g)
    pred_s = torch.where(torch.rand(3, 16, 16, generator=g) < 0.5, PARTNER[pred_o].clamp(min=0), pred_o)
    assert _rate(pred_o, pred_s, target)["flip_rate"] == pytest.approx(_slow_flip_rate(pred_o, pred_s, target))


def test_no_ambiguous_pixel_gives_no_rate():
    target = torch.full((1, 4, 4), ID["ground"])
    assert _rate(target, target, target)["flip_rate"] is None


def _matrix_with(pairs: dict[tuple[str, str], float]) -> torch.Tensor:
    relations = torch.eye(len(NAMES))
    for (row, col), value in pairs.items():
        relations[ID[row], ID[col]] = value
    return relations


def test_true_dependencies_ranked_first_give_reciprocal_rank_one():
    learned = probe.true_relations(NAMES) * 0.3 + torch.eye(len(NAMES))
    result = probe.relation_recovery(learned, NAMES)
    assert result["ranks"] == {"boat": 1, "car": 1, "sheep": 1, "goat": 1}
    assert result["mean_reciprocal_rank"] == 1.0 and result["share_first"] == 100.0


def test_an_untrained_matrix_ranks_every_true_class_last():
    result = probe.relation_recovery(torch.eye(len(NAMES)), NAMES)
    assert set(result["ranks"].values()) == {len(NAMES) - 1}
    assert result["share_first"] == 0.0


def test_swapped_dependencies_rank_the_true_class_second():
    # every object depends most on its partner's context: the true context comes second
    swapped = {(ctx, scenes.PARTNER[obj]): 0.5 for obj, ctx in probe.TRUE_CONTEXT.items()}
    true = {(ctx, obj): 0.2 for obj, ctx in probe.TRUE_CONTEXT.items()}
    result = probe.relation_recovery(_matrix_with({**swapped, **true}), NAMES)
    assert result["ranks"] == {"boat": 2, "car": 2, "sheep": 2, "goat": 2}
    assert result["mean_reciprocal_rank"] == pytest.approx(0.5)


def test_orientation_column_is_the_object_row_the_deleted_class():
    # R[boat, water] (deleting boat hurts water) is the other direction and must not count
    result = probe.relation_recovery(_matrix_with({("boat", "water"): 0.9, ("water", "boat"): -0.1}), NAMES)
    assert result["ranks"]["boat"] == len(NAMES) - 1
    result = probe.relation_recovery(_matrix_with({("water", "boat"): 0.9}), NAMES)
    assert result["ranks"]["boat"] == 1 and result["ranks"]["car"] == len(NAMES) - 1


def test_partner_margin_weighs_the_true_context_against_the_partners_only():
    # a strong unrelated class (rock) outranks both contexts: ranks are poor, yet every object
    # prefers its own context to its partner's, which is all that telling boat from car needs
    pairs = {("rock", obj): 0.9 for obj in probe.TRUE_CONTEXT}
    pairs.update({(ctx, obj): 0.1 for obj, ctx in probe.TRUE_CONTEXT.items()})
    pairs.update({(probe.TRUE_CONTEXT[scenes.PARTNER[obj]], obj): -0.2 for obj in probe.TRUE_CONTEXT})
    result = probe.relation_recovery(_matrix_with(pairs), NAMES)
    assert set(result["ranks"].values()) == {2}
    assert result["partner_margin"] == pytest.approx({obj: 0.3 for obj in probe.AMBIGUOUS_OBJECTS})
    assert result["partner_preferred"] == 100.0
    # the partner's context above the object's own: negative margins, none preferred
    flipped = {(probe.TRUE_CONTEXT[scenes.PARTNER[obj]], obj): 0.4 for obj in probe.TRUE_CONTEXT}
    result = probe.relation_recovery(_matrix_with(flipped), NAMES)
    assert result["partner_margin"] == pytest.approx({obj: -0.4 for obj in probe.AMBIGUOUS_OBJECTS})
    assert result["partner_preferred"] == 0.0


def test_partner_margins_match_a_slow_reference_on_random_matrices():
    torch.manual_seed(0)
    relations = torch.randn(len(NAMES), len(NAMES))
    result = probe.relation_recovery(relations, NAMES)
    for obj in probe.AMBIGUOUS_OBJECTS:
        own, other = probe.TRUE_CONTEXT[obj], probe.TRUE_CONTEXT[scenes.PARTNER[obj]]
        expected = float(relations[ID[own], ID[obj]] - relations[ID[other], ID[obj]])
        assert result["partner_margin"][obj] == pytest.approx(expected)


def test_rescoring_reads_the_relations_of_trained_cells(tmp_path, capsys):
    results = tmp_path / "exp"
    for seed, scale in ((0, 1.0), (1, 3.0)):
        cell = results / "cells" / f"fcn+idr_context_scenes_resnet18_s{seed}"
        cell.mkdir(parents=True)
        learned = probe.true_relations(NAMES) * 0.2 * scale + torch.eye(len(NAMES))
        torch.save({"iteration": 3, "model": {"head.relations_mean": learned, "head.relations_var": learned}},
                   cell / "model.pt")
        record = {"cell_id": cell.name, "dataset": "context_scenes", "idr": True,
                  "per_class_iou": {name: 50.0 for name in NAMES}}
        (cell / "record.json").write_text(json.dumps(record))
    baseline = results / "cells" / "fcn_context_scenes_resnet18_s0"
    baseline.mkdir()
    (baseline / "record.json").write_text(json.dumps({"cell_id": baseline.name, "dataset": "context_scenes",
                                                      "idr": False, "per_class_iou": {}}))
    assert probe.main([str(results)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| fcn+idr_context_scenes_resnet18 |"))
    # two seeds in one row; margins 0.2 and 0.6 average to 0.4
    assert row.split(" | ")[1:5] == ["2", "1.00", "100", "100"] and row.count("+0.400") == 4
    assert probe.main([str(tmp_path / "missing")]) == 2
    assert "no cells/ folder" in capsys.readouterr().err


def test_the_swapped_twin_has_the_partner_labels_and_the_same_geometry():
    original, swapped = _scene()
    objects = PARTNER[original] >= 0
    assert objects.any()
    assert torch.equal(swapped[objects], PARTNER[original[objects]])
    assert torch.equal(original == ID["ground"], swapped == ID["ground"])
