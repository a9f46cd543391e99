"""MCIBI (DeepLabV3): the vectorised memory update against a per-class loop, the training-state
hook (momentum from the current lr, memory loss from the second epoch), and, where
sssegmentation 1.7.0 is installed, parity with the official model as tests/test_scheme_parity.py
holds the other schemes: eval logits, a float64 training step (every loss, the gradient norm,
the memory and stage 2's BatchNorm statistics after it), parameter counts, a one-layer change
that fails, and the converter's round trip."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from harness.config import ModelConfig
from models.heads.mcibi import MCIBIOptions, updated_class_vectors
from models.registry import build_segmentor
from models.training_state import BEFORE_TRAINING, TrainingProgress, epoch_of, hand_progress
from tests.memory_cases import (
    C,
    IGNORE,
    K,
    assert_matches_loop,
    check_a_one_by_one_fuse_fails,
    labelled_features,
    per_class_loop,
    training_batch,
)


def _official_update(momentum: float):
    """The official FeaturesMemory.update (cosine_similarity, one vector per class) of one class."""
    def update(vector: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        if (vector == 0).all():
            return pixels.mean(0)
        similarity = F.cosine_similarity(pixels, vector.expand_as(pixels))
        weight = (1 - similarity) / (1 - similarity).sum()
        return (1 - momentum) * vector + momentum * (pixels * weight.unsqueeze(-1)).sum(0)

    return update


def test_memory_update_matches_the_per_class_loop():
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(K, C, generator=g, dtype=torch.float64)
    memory[2] = 0.0  # first sight of class 2: its plain mean
    feats, target = labelled_features(g)
    ours = updated_class_vectors(memory, feats, target, IGNORE, 0.45)
    assert_matches_loop(ours, per_class_loop(memory, feats, target, _official_update(0.45)), memory)


def test_momentum_follows_the_learning_rate():
    options = MCIBIOptions(memory_momentum=0.9, momentum_lr=0.01)
    assert options.momentum_at(0.005) == pytest.approx(0.45)
    assert options.momentum_at(None) == 0.9  # never told the lr: the base momentum
    assert MCIBIOptions(momentum_lr=None).momentum_at(0.005) == 0.9
    with pytest.raises(ValueError, match="unknown key 'memory_momentun'"):
        MCIBIOptions.from_mapping({"memory_momentun": 0.5})


def test_epoch_of_counts_micro_batches():
    assert [epoch_of(i, 4) for i in range(9)] == [1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert [epoch_of(i, 4, accumulation_steps=2) for i in range(5)] == [1, 1, 2, 2, 3]
    with pytest.raises(ValueError, match="epoch 0"):
        TrainingProgress(iteration=0, epoch=0, lr=0.01)


def _tiny(**options):
    cfg = ModelConfig(backbone="resnet18", feats_channels=C, aux_channels=C, refine_channels=C, plugin_options=options)
    return build_segmentor("mcibi", False, K, cfg)


def test_memory_loss_joins_in_the_second_epoch_and_momentum_follows_lr():
    model = _tiny()
    images, target = training_batch()
    assert model.head.progress == BEFORE_TRAINING
    first = model(images, target)
    assert set(first) == {"aux", "stage1", "stage2"}  # epoch 1: no memory loss
    assert (model.head.memory.memory.abs().sum(-1) > 0).all()  # every class seen: its mean
    assert hand_progress(model, TrainingProgress(iteration=7, epoch=2, lr=0.0)) == 1
    before = model.head.memory.memory.clone()
    second = model(images, target)
    assert set(second) == {"aux", "stage1", "stage2", "memory"}
    sum(second.values()).backward()
    assert model.head.stage2[2].weight.grad is not None
    assert torch.equal(model.head.memory.memory, before)  # lr 0 -> momentum 0: the memory stays
    hand_progress(model, TrainingProgress(iteration=8, epoch=2, lr=0.01))
    model(images, target)
    assert not torch.equal(model.head.memory.memory, before)
    off = _tiny(memory_loss=False)
    hand_progress(off, TrainingProgress(iteration=7, epoch=2, lr=0.01))
    assert "memory" not in off(images, target)  # the Cityscapes / COCO-Stuff / LIP configs


def test_the_training_loop_hands_progress():
    from harness.train import progress_at

    run = SimpleNamespace(sampler=list(range(10)), per_rank_batch=2, cell=SimpleNamespace(train=SimpleNamespace(accumulation_steps=1)))
    assert progress_at(run, 4, 0.01) == TrainingProgress(iteration=4, epoch=1, lr=0.01)
    assert progress_at(run, 5, 0.002) == TrainingProgress(iteration=5, epoch=2, lr=0.002)


def test_the_memory_is_in_the_state_dict():
    model = _tiny()
    model(*training_batch())
    state = model.state_dict()
    assert state["head.memory.memory"].shape == (K, 1, C)
    fresh = _tiny()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.head.memory.memory, model.head.memory.memory)


# ------------------------------------------------------------------------------- official parity


def _official():
    pytest.importorskip("ssseg", reason="sssegmentation==1.7.0 is not installed (pip install '.[parity]')")
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    from ssseg.modules.utils import SSSegInputStructure

    return BuildSegmentor, SSSegInputStructure


def _randomize_memory(official, ours, k: int) -> None:
    """A non-trivial memory on both sides, one class left at zero (the first-sight branch)."""
    memory = torch.randn(k, 1, 512, generator=torch.Generator().manual_seed(5))
    memory[1] = 0.0
    official.memory_module.memory.data.copy_(memory)
    ours.head.memory.memory.copy_(memory)


def _check_train_step(official, ours, epoch: int, lr: float) -> None:
    """One float64 training step, dropout off: losses, grad norm, memory and stage 2's BN stats after."""
    from tests.test_official_parity import TOL, TRAIN_SIZE, _grad_norm, _no_dropout, _relative, _targets

    _, SSSegInputStructure = _official()
    for model in (official, ours):
        model.double().train()
        _no_dropout(model)
    x = torch.randn(2, 3, TRAIN_SIZE, TRAIN_SIZE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = _targets(TRAIN_SIZE)
    result = official(SSSegInputStructure(mode="TRAIN", images=x, seg_targets=target), epoch=epoch, learning_rate=lr)
    result.loss.backward()
    hand_progress(ours, TrainingProgress(iteration=0, epoch=epoch, lr=lr))
    losses = ours(x, target)
    sum(losses.values()).backward()
    names = {"loss_aux": "aux", "loss_cls_stage1": "stage1", "loss_cls_stage2": "stage2", "loss_memory": "memory"}
    official_losses = {k: v for k, v in result.losses_log_dict.items() if k != "loss_total"}
    assert {names[k] for k in official_losses} == set(losses)
    for official_name, value in official_losses.items():
        assert abs(value - losses[names[official_name]].item()) <= TOL * abs(value), official_name
    assert abs(_grad_norm(official) - _grad_norm(ours)) <= TOL * _grad_norm(official)
    assert _relative(official.memory_module.memory.data[:, 0], ours.head.memory.memory[:, 0]) < TOL, "memory"
    bn_theirs, bn_ours = official.decoder_stage2[1].running_mean, ours.head.stage2[0][1].running_mean
    assert _relative(bn_theirs, bn_ours) < TOL, "stage-2 BatchNorm statistics"


@pytest.mark.parametrize(("dataset", "epoch", "lr"), [("ade20k", 2, 0.005), ("cityscapes", 1, 0.004), ("lip", 3, 0.01)])
def test_same_eval_logits_and_training_step(tmp_path, dataset, epoch, lr):
    """ADE20K in its second epoch (memory loss on, momentum 0.45); Cityscapes in its first
    (memory loss off in its config anyway; momentum 0.9 / 0.009 x 0.004); LIP (LeakyReLU in the
    heads, no memory loss) in its third."""
    _official()
    from tests.test_official_parity import K as PARITY_K, _check_eval, build_pair

    official, ours = build_pair(tmp_path, "mcibi", dataset, False)
    _randomize_memory(official, ours, PARITY_K)
    _check_eval(official, ours)
    _check_train_step(official, ours, epoch, lr)
    if dataset == "ade20k":
        assert "memory" in ours.head.loss_defaults


def _millions(module) -> float:
    return round(sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6, 2)


def test_parameter_counts():
    """Issue 23: official MCIBI (DeepLabV3) ADE20K = 91.41 M at 150 classes (R50-D8 V1c, aux, BN)."""
    BuildSegmentor, _ = _official()
    from harness.convert import build_official_model
    from harness.official import official_segmentor_cfg

    official = BuildSegmentor(official_segmentor_cfg("mcibi", "ade20k", False, num_classes=150), mode="TRAIN")
    ours, _ = build_official_model("mcibi", False, "ade20k", num_classes=150)
    assert _millions(official) == _millions(ours) == 91.41
    rest = _millions(official.backbone_net) + _millions(official.auxiliary_decoder)
    assert _millions(ours.head) == pytest.approx(_millions(official) - rest, abs=0.011)
    assert _millions(ours.head.memory) == _millions(official.memory_module)


@pytest.mark.parametrize("dataset", ["ade20k", "cityscapes", "coco_stuff10k", "lip"])
def test_every_official_config_has_the_same_tree(dataset):
    BuildSegmentor, _ = _official()
    from harness.convert import build_official_model, convert_state_dict
    from harness.official import official_segmentor_cfg
    from tests.test_official_parity import K as PARITY_K

    official = BuildSegmentor(official_segmentor_cfg("mcibi", dataset, False, num_classes=PARITY_K), mode="TRAIN")
    ours, _ = build_official_model("mcibi", False, dataset, num_classes=PARITY_K)
    convert_state_dict(official.state_dict(), ours, "mcibi", False)  # raises on any misfit
    assert _millions(official) == _millions(ours)


def test_a_one_layer_change_fails_the_parity_check(tmp_path, monkeypatch):
    """The memory's context fusion conv 3x3 -> 1x1 on our side only: the converter names the
    misfit; with the layer's weight cut to fit (its centre tap), the logits differ."""
    _official()
    from models.heads import mcibi

    check_a_one_by_one_fuse_fails(tmp_path, monkeypatch, "mcibi", mcibi.ClassMemory, "context_fuse",
                                  "memory_module.bottleneck_ms.0.weight")


def test_convert_cli_round_trips_a_checkpoint(tmp_path):
    """An official MCIBI checkpoint -> `python -m harness.convert` -> our model: the memory and
    the heads' tensors equal, and the converted file loads into the model built for it."""
    BuildSegmentor, _ = _official()
    from harness.convert import build_official_model, main
    from harness.official import official_segmentor_cfg

    official = BuildSegmentor(official_segmentor_cfg("mcibi", "cityscapes", False), mode="TRAIN")
    with torch.no_grad():
        official.memory_module.memory.data.uniform_(-1.0, 1.0)
    torch.save({"model": official.state_dict(), "epoch": 1}, tmp_path / "mcibi.pth")
    argv = [str(tmp_path / "mcibi.pth"), "--framework", "mcibi", "--dataset", "cityscapes", "--out", str(tmp_path / "model.pt")]
    assert main(argv) == 0
    saved = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    ours, _ = build_official_model("mcibi", False, "cityscapes")
    ours.load_state_dict(saved["model"])
    assert torch.equal(ours.head.memory.memory, official.memory_module.memory.data)
    assert torch.equal(ours.head.memory.context_fuse[0].weight, official.memory_module.bottleneck_ms[0].weight)
    assert saved["source"]["framework"] == "mcibi"
    assert saved["source"]["model_config"]["plugin_options"]["momentum_lr"] == pytest.approx(0.009)


# ------------------------------------------------------------------------------- through the training loop


@pytest.mark.slow
def test_the_loop_starts_the_memory_loss_in_epoch_two_and_resumes_to_the_same_result(write_experiment, tmp_path):
    """8 training images in batches of 4: 2 iterations per epoch, so iterations 3-4 carry the memory
    loss; a run stopped after iteration 2 resumes (memory from the checkpoint, epoch from the
    iteration) to the uninterrupted result."""
    from harness.config import load_experiment
    from harness.run import resolve_cells
    from harness.train import PrintReporter, run_cell
    from tests.conftest import tiny_experiment

    class Lines(PrintReporter):
        def __init__(self, root=None):
            super().__init__(root, quiet=True)
            self.lines: list[str] = []

        def log(self, cell_id: str, line: str) -> None:
            self.lines.append(line)

    exp = tiny_experiment("mcibi", grid={"frameworks": ["mcibi"], "idr": [False]},
                          train={"iterations": 4, "batch_size": 4, "checkpoint_interval": 2})
    cell = resolve_cells(load_experiment(write_experiment(exp)))[0]
    reporter = Lines()
    uninterrupted = run_cell(cell, reporter)
    steps = [line for line in reporter.lines if line.startswith("iter ")]
    assert [" memory " in line for line in steps] == [False, False, True, True]
    root = tmp_path / "ckpt"
    assert run_cell(cell, Lines(root), stop_after=2) is None
    resumed = run_cell(cell, Lines(root))
    assert resumed["resumed_from_iteration"] == 2
    assert resumed["metrics"]["per_class_iou"] == uninterrupted["metrics"]["per_class_iou"]
