import pytest
import yaml

from harness.config import ConfigError, apply_override, expand_cells, load_experiment
from harness.run import main
from tests.conftest import REPO, tiny_experiment


def test_valid_experiment_expands_to_cells(write_experiment):
    exp = load_experiment(write_experiment(tiny_experiment("t", grid={"seeds": [0, 1]})))
    cells = expand_cells(exp)
    assert [c.cell_id for c in cells] == [
        "fcn_context_scenes_resnet18_s0",
        "fcn+idr_context_scenes_resnet18_s0",
        "fcn_context_scenes_resnet18_s1",
        "fcn+idr_context_scenes_resnet18_s1",
    ]
    assert cells[1].idr and cells[3].seed == 1


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.backbne=resnet18", "model.backbne: unknown key; did you mean model.backbone?"),
        ("model.zzz=1", "model.zzz: unknown key; allowed: backbone, pretrained"),
        ("trian.lr=0.1", "trian: unknown key; did you mean train?"),
        ("zzz.lr=0.1", "zzz: unknown key; allowed: name, description, findings, grid, model, train"),
        ("train.iterations=many", "train.iterations: Input should be a valid integer"),
        ("grid.frameworks=[fcnn]", "grid.frameworks: unknown framework 'fcnn'; allowed: fcn"),
        ("grid.datasets=[ade21k]", "grid.datasets: unknown dataset 'ade21k'; allowed: "),
        ("model.backbone=resnet_nope", "model.backbone: unknown backbone 'resnet_nope'"),
        ("data.options.context_scenes.image_siz=64", "data.options: context_scenes: unknown option 'image_siz'"),
        ("scaling.num_workers=0", "scaling.num_workers: Input should be greater than 0"),
    ],
)
def test_bad_keys_and_values_name_the_key_path(write_experiment, override, expected):
    path = write_experiment(tiny_experiment("t"))
    with pytest.raises(ConfigError) as info:
        load_experiment(path, [override])
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_missing_required_section(write_experiment):
    exp = tiny_experiment("t")
    del exp["train"]
    with pytest.raises(ConfigError, match=r": train: required key is missing"):
        load_experiment(write_experiment(exp))


def test_set_overrides_any_key(write_experiment):
    exp = load_experiment(
        write_experiment(tiny_experiment("t")),
        ["train.lr=0.05", "grid.idr=[true]", "model.dropout=0.2", "data.options.context_scenes.seed=3"],
    )
    assert exp.train.lr == 0.05
    assert exp.grid.idr == [True]
    assert exp.model.dropout == 0.2
    assert exp.data.options["context_scenes"]["seed"] == 3


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_override({}, "train.lr")
    with pytest.raises(ConfigError, match="train.lr is not a section"):
        apply_override({"train": {"lr": 1}}, "train.lr.x=2")


def test_misspelt_key_exits_2_before_ray_starts(write_experiment, tmp_path, capsys, monkeypatch):
    import ray

    started = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append(1))
    path = write_experiment(tiny_experiment("t", train={"iterations": 3, "batch_size": 4, "lrr": 0.1}))
    code = main([str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "train.lrr: unknown key" in err[0] and str(path) in err[0]
    assert not started
    assert not (tmp_path / "results").exists()


def test_batch_not_divisible_by_workers(write_experiment, tmp_path, capsys):
    path = write_experiment(tiny_experiment("t", scaling={"num_workers": 3}))
    assert main([str(path), "--dry-run"]) == 2
    assert "train.batch_size: 4 is not divisible by scaling.num_workers 3" in capsys.readouterr().err


def test_missing_pretrained_file(write_experiment, capsys, tmp_path):
    path = write_experiment(tiny_experiment("t", model={"backbone": "resnet18", "pretrained": "/nowhere/r18.pth"}))
    assert main([str(path), "--dry-run"]) == 0  # the plan does not need the weights
    capsys.readouterr()
    assert main([str(path), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.pretrained: /nowhere/r18.pth does not exist" in err[0]
    assert not (tmp_path / "r").exists()


def test_missing_datasets_are_each_named_with_their_prepare_command(write_experiment, capsys, tmp_path):
    path = write_experiment(tiny_experiment("t", grid={"datasets": ["ade20k", "cityscapes", "context_scenes"]}))
    assert main([str(path), "--dry-run"]) == 0
    capsys.readouterr()
    assert main([str(path), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "ade20k:" in err and "python -m harness.prepare ade20k" in err
    assert "cityscapes:" in err and "python -m harness.prepare cityscapes" in err
    assert "context_scenes:" not in err
    assert not (tmp_path / "r").exists()


def test_dry_run_prints_every_cell(write_experiment, capsys, tmp_path):
    path = write_experiment(tiny_experiment("t", grid={"seeds": [0, 1, 2]}))
    assert main([str(path), "--dry-run", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "6 cells" in out and out.count("1 worker(s) x 1 CPU") == 6
    assert out.count("context_scenes") >= 6 and "fcn+idr_context_scenes_resnet18_s2" in out
    assert not (tmp_path / "r").exists()


def test_shipped_experiments_validate():
    from tests.conftest import REPO

    from harness.released import LIST_KIND, load_released

    for path in sorted((REPO / "experiments").glob("*.yaml")):
        if yaml.safe_load(path.read_text()).get("kind") == LIST_KIND:  # released.yaml: harness.released's format
            assert load_released(path).models
            with pytest.raises(ConfigError, match=f"run `python -m harness.released {path}`"):
                load_experiment(path)
            continue
        load_experiment(path)


def test_sweep_expands_cells_and_validates_values(write_experiment):
    exp = load_experiment(
        write_experiment(tiny_experiment("t", grid={"idr": [True], "sweep": {"train.lr": [0.01, 0.02]}}))
    )
    cells = expand_cells(exp)
    assert [c.cell_id for c in cells] == [
        "fcn+idr_context_scenes_resnet18_s0_lr0.01",
        "fcn+idr_context_scenes_resnet18_s0_lr0.02",
    ]
    assert [c.train.lr for c in cells] == [0.01, 0.02]
    with pytest.raises(ConfigError, match="cannot sweep 'scaling.num_workers'"):
        load_experiment(write_experiment(tiny_experiment("t", grid={"sweep": {"scaling.num_workers": [1, 2]}})))
    with pytest.raises(ConfigError, match=r"cell fcn/context_scenes: train.lr: Input should be a valid number"):
        load_experiment(write_experiment(tiny_experiment("t", grid={"sweep": {"train.lr": ["fast"]}})))
    with pytest.raises(ConfigError, match=r"grid.sweep: 'train.nope.x' is not a key"):
        load_experiment(write_experiment(tiny_experiment("t", grid={"sweep": {"train.nope.x": [1]}})))


def test_only_selects_cells_by_pattern(write_experiment, capsys):
    path = write_experiment(tiny_experiment("t", grid={"seeds": [0, 1]}))
    assert main([str(path), "--dry-run", "--only", "fcn+idr*s1"]) == 0
    out = capsys.readouterr().out
    assert "1 cells" in out and "fcn+idr_context_scenes_resnet18_s1" in out
    assert main([str(path), "--dry-run", "--only", "pspnet*"]) == 2
    assert "--only pspnet* matches none of the 4 cells" in capsys.readouterr().err


def test_overrides_apply_to_matching_cells(write_experiment):
    overrides = [
        {"match": {"idr": True}, "set": {"model.feats_channels": 32, "train.lr": 0.05}},
        {"match": {"framework": "fcn", "seed": 1}, "set": {"scaling.num_workers": 2}},
    ]
    exp = load_experiment(write_experiment(tiny_experiment("t", grid={"seeds": [0, 1]}, overrides=overrides)))
    by_id = {c.cell_id: c for c in expand_cells(exp)}
    assert by_id["fcn_context_scenes_resnet18_s0"].model.feats_channels == 16
    assert by_id["fcn+idr_context_scenes_resnet18_s0"].model.feats_channels == 32
    assert by_id["fcn+idr_context_scenes_resnet18_s0"].train.lr == 0.05
    assert by_id["fcn_context_scenes_resnet18_s1"].scaling.num_workers == 2
    assert by_id["fcn_context_scenes_resnet18_s0"].scaling.num_workers == 1


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"match": {"dataset": "context_scenes"}, "set": {"train.lrr": 1}}, "overrides.0.set: 'train.lrr' is not a key"),
        ({"match": {"datset": "x"}, "set": {"train.lr": 1}}, "overrides.0.match.datset"),
        ({"set": {"data.root": "x"}}, "cannot set 'data.root'"),
        ({"set": {"model.dropout": 2.0}}, "cell fcn/context_scenes: model.dropout: Input should be less than 1"),
    ],
)
def test_bad_overrides(write_experiment, override, expected):
    with pytest.raises(ConfigError) as info:
        load_experiment(write_experiment(tiny_experiment("t", overrides=[override])))
    assert expected in str(info.value)


def test_every_dataset_accepts_crop_and_scale_options(write_experiment, tmp_path):
    from harness.data import build_dataset, dataset_card

    card = dataset_card("ade20k", {"crop_size": [640, 640], "base_scale": [2560, 640]})
    assert card.crop_size == (640, 640) and card.base_scale == (2560, 640)
    assert dataset_card("ade20k").crop_size == (512, 512)
    opts = {"num_train": 4, "num_val": 2, "image_size": 32, "crop_size": [24, 24]}
    image, label = build_dataset("context_scenes", tmp_path, "train", opts, train=True)[0]
    assert tuple(label.shape) == (24, 24)
    with pytest.raises(ConfigError, match=r"ade20k.crop_size: expected two positive integers"):
        load_experiment(write_experiment(tiny_experiment("t")), ["data.options.ade20k.crop_size=[640]"])


def test_drop_path_reaches_the_backbone():
    from harness.config import ModelConfig
    from models import build_segmentor

    model = build_segmentor("fcn", False, 5, ModelConfig(backbone="resnet18", drop_path_rate=0.2, head_channels=8,
                                                         aux_channels=8))
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)


def test_misspelt_required_key_is_named_as_written(write_experiment):
    exp = tiny_experiment("t")
    exp["train"]["iteratons"] = exp["train"].pop("iterations")
    with pytest.raises(ConfigError) as info:
        load_experiment(write_experiment(exp))
    path = write_experiment(exp)
    assert str(info.value) == f"{path}: train.iteratons: unknown key; did you mean train.iterations?"


def test_every_problem_at_once_one_line_each(write_experiment, capsys):
    exp = tiny_experiment("t", model={"backbne": "resnet18", "dropout": 2.0})
    exp["train"]["iteratons"] = exp["train"].pop("iterations")
    exp["train"]["lr"] = -1
    exp["scaling"] = {"num_workerz": 2, "frobnicate": 1}
    path = write_experiment(exp)
    assert main([str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert sorted(lines) == sorted([
        f"error: {path}: model.backbne: unknown key; did you mean model.backbone?",
        f"error: {path}: model.dropout: Input should be less than 1 (got 2.0)",
        f"error: {path}: train.iteratons: unknown key; did you mean train.iterations?",
        f"error: {path}: train.lr: Input should be greater than 0 (got -1)",
        f"error: {path}: scaling.num_workerz: unknown key; did you mean scaling.num_workers?",
        f"error: {path}: scaling.frobnicate: unknown key; allowed: num_workers, use_gpu, cpus_per_worker, "
        "max_concurrent_cells, placement",
    ])


def test_config_module_imports_neither_torch_nor_ray():
    import subprocess
    import sys

    code = "import sys, harness.config; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_variants_add_cells_for_matching_grid_cells_only(write_experiment):
    variants = [
        {"match": {"framework": ["fcn", "pspnet"], "idr": True}, "set": {"model.idr_relations": "uniform"}},
        {"match": {"idr": True, "seed": 0, "framework": "pspnet"}, "set": {"model.coarse_refine": "before"}},
    ]
    grid = {"frameworks": ["fcn", "pspnet"], "seeds": [0, 1], "variants": variants}
    exp = load_experiment(write_experiment(tiny_experiment("t", grid=grid, train={"eval_interval": 2})))
    by_id = {c.cell_id: c for c in expand_cells(exp)}
    assert len(by_id) == 8 + 4 + 1
    uniform = by_id["pspnet+idr_context_scenes_resnet18_s1_idr_relationsuniform"]
    assert uniform.model.idr_relations == "uniform" and uniform.sweep == {"model.idr_relations": "uniform"}
    assert by_id["pspnet+idr_context_scenes_resnet18_s0_coarse_refinebefore"].model.coarse_refine == "before"
    assert by_id["fcn+idr_context_scenes_resnet18_s0"].model.idr_relations == "deletion"
    assert not any("idr_relations" in cid for cid in by_id if "+idr" not in cid)
    assert all(c.train.eval_interval == 2 for c in by_id.values())


def test_bad_variants_are_one_line_errors(write_experiment):
    def load(variants):
        return load_experiment(write_experiment(tiny_experiment("t", grid={"variants": variants})))

    with pytest.raises(ConfigError, match="cannot vary 'scaling.num_workers'"):
        load([{"set": {"scaling.num_workers": 2}}])
    with pytest.raises(ConfigError, match=r"grid.variants: 'model.nope' is not a key"):
        load([{"set": {"model.nope": 1}}])
    with pytest.raises(ConfigError, match=r"model.idr_relations: Input should be 'deletion', 'uniform' or 'none'"):
        load([{"set": {"model.idr_relations": "random"}}])
    with pytest.raises(ConfigError, match="two cells are both fcn_context_scenes_resnet18_s0_lr0.01"):
        load([{"set": {"train.lr": 0.01}}, {"set": {"train.lr": 0.01}}])
    with pytest.raises(ConfigError, match="train.eval_interval: Input should be greater than or equal to 0"):
        load_experiment(write_experiment(tiny_experiment("t", train={"eval_interval": -1})))
