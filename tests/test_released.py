"""Released models: evaluate --checkpoint, the released-models file and command, their table rows.

The checkpoints are tiny models of ours (resnet18, 32-pixel context scenes); the setting files
(experiments/full_table.yaml, sota.yaml) are replaced by a tiny experiment, and harness.convert
(part of the parity work) by a stand-in that copies the weights.
"""
from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from harness import released
from harness.config import expand_cells, load_experiment
from harness.data import build_dataset, dataset_card
from harness.evaluate import evaluate, protocol_kwargs
from harness.evaluate.command import main as evaluate_main
from harness.records import RELEASED, find_records, is_released
from harness.tables import build_tables
from models import build_segmentor
from tests.conftest import REPO, tiny_experiment
from tests.test_tables import make_record

OPTIONS = {"num_train": 4, "num_val": 3, "image_size": 32}


@pytest.fixture
def tiny_setting(write_experiment, monkeypatch):
    """The tiny experiment as the setting file of every backbone family; returns its FCN + IDR cell."""
    path = write_experiment(tiny_experiment("setting", data={"options": {"context_scenes": OPTIONS}}))
    monkeypatch.setattr(released, "SETTING_FILES", {"cnn": path, "swin": path})
    return next(c for c in expand_cells(load_experiment(path)) if c.idr)


def _save_model(cell, path: Path, seed: int = 0) -> torch.nn.Module:
    """A model of ours at random init, saved as model.pt ({"model": state dict})."""
    torch.manual_seed(seed)
    classes = dataset_card(cell.dataset, cell.data_options).num_classes
    model = build_segmentor(cell.framework, cell.idr, classes, cell.model.model_copy(update={"pretrained": None}), 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return model


def _checkpoint_args(checkpoint: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--framework", "fcn", "--idr", "--dataset", "context_scenes",
            "--backbone", "resnet18", "--root", str(tmp_path / "datasets"), "--results", str(tmp_path / "results"),
            "--device", "cpu", *extra]


def test_evaluate_checkpoint_writes_a_released_record(tiny_setting, tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    model = _save_model(tiny_setting, checkpoint)
    source = tmp_path / "idrnet_fcn_tiny.pth"
    source.write_bytes(b"the official file")
    assert evaluate_main(_checkpoint_args(checkpoint, tmp_path, "--source", str(source), "--url", "https://x/y")) == 0
    assert "released model idrnet_fcn_tiny.pth" in capsys.readouterr().out
    [record] = find_records(tmp_path / "results" / "released")
    assert record["cell_id"] == "released_fcn+idr_context_scenes_resnet18_s0@whole_ss" and is_released(record)
    origin = record["provenance"]
    assert origin["kind"] == RELEASED and origin["trained"] is False and origin["url"] == "https://x/y"
    assert origin["source_file"] == "idrnet_fcn_tiny.pth"
    assert origin["source_sha256"] == hashlib.sha256(b"the official file").hexdigest()
    assert origin["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["train_time_s"] is None and record["experiment"] == "released"
    # the figures are those of the same weights evaluated directly
    cell = tiny_setting.model_copy(update={"data_root": str(tmp_path / "datasets")})
    dataset = build_dataset("context_scenes", cell.data_root, "val", cell.data_options, train=False)
    direct = evaluate(model, dataset, torch.device("cpu"), 4, **protocol_kwargs(cell.eval))
    assert record["metrics"]["mIoU"] == pytest.approx(direct["mIoU"])
    assert record["params"] == sum(p.numel() for p in model.parameters())


def test_evaluate_checkpoint_bad_input_one_line(tiny_setting, tmp_path, capsys):
    results = tmp_path / "results"
    assert evaluate_main(_checkpoint_args(tmp_path / "absent.pt", tmp_path)) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'absent.pt'}: no such checkpoint file"
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"backbone.weight": torch.zeros(2)}}, wrong)
    assert evaluate_main(_checkpoint_args(wrong, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{wrong}: does not fit fcn+idr on context_scenes")
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "cfg": types.SimpleNamespace(a=1)}, pickled)
    assert evaluate_main(_checkpoint_args(pickled, tmp_path)) == 2
    assert "cannot load with weights_only=True" in capsys.readouterr().err
    assert evaluate_main(["--checkpoint", str(wrong), "--dataset", "context_scenes"]) == 2
    assert capsys.readouterr().err.strip() == "--checkpoint needs --framework"
    assert not results.exists()


def test_released_rows_stand_apart_in_the_tables(tmp_path):
    """A released checkpoint and a trained model of the same setting: two rows, both beside the paper."""
    results = tmp_path / "results" / "mixed"
    make_record(results, "fcn", "ade20k", idr=True, miou=43.0)
    make_record(results, "fcn", "ade20k", idr=True, miou=43.6, suffix="_released",
                extra={"provenance": {"kind": RELEASED, "trained": False, "source_file": "f.pth"}})
    tables = {t.name: t for t in build_tables(find_records(results), {("fcn", "resnet50c", "ade20k", "ss", "mIoU", "idr"): 43.61})}
    frameworks = tables["frameworks"]
    rows = [dict(zip(frameworks.columns, r)) for r in frameworks.blocks[0].rows if r[0].startswith("FCN")]
    assert [(r["framework"], r["+IDR"], r["paper +IDR"]) for r in rows] == [
        ("FCN", "43.00", "43.61"), ("FCN (released)", "43.60", "43.61")]


# ----------------------------------------------------------------------------- the released-models file


def _listing(tmp_path: Path, files: list[str], **extra) -> Path:
    models = [{"file": f, "url": f"https://example.org/{f}", "framework": "fcn", "idr": True,
               "dataset": "context_scenes", "backbone": "resnet18", "protocols": ["ss", "flip"]} for f in files]
    listing = {"kind": "released_models", "name": "rel", "weights_dir": str(tmp_path / "weights"),
               "data": {"root": str(tmp_path / "datasets"), "options": {"context_scenes": OPTIONS}}, "models": models,
               **extra}
    path = tmp_path / "released.yaml"
    path.write_text(yaml.safe_dump(listing, sort_keys=False))
    return path


def test_shipped_list_names_every_release():
    listing = released.load_released(REPO / "experiments" / "released.yaml")
    files = [m.file for m in listing.models]
    assert len(files) == len(set(files)) == 62 and listing.weights_dir == "weights"  # 28 + 34 context schemes
    assert sum(f.startswith("idrnet_") for f in files) == 20
    assert all(m.url.endswith("/" + m.file) and m.url.startswith("https://github.com/SegmentationBLWX/") for m in listing.models)
    swin = [m for m in listing.models if "swin" in m.file and m.idr]
    assert {m.dataset for m in swin} == {"ade20k", "coco_stuff10k", "lip", "pascal_context59"}
    assert all("ms+flip" in m.protocols for m in swin)


def test_missing_files_fail_fast_naming_each(tmp_path, tiny_setting, capsys):
    path = _listing(tmp_path, ["a.pth", "b.pth"])
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "b.pth").write_bytes(b"present")
    assert released.main([str(path), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [(f"error: {tmp_path / 'weights' / 'a.pth'}: missing; download it from https://example.org/a.pth "
                    "(nothing is downloaded at run time)")]
    assert not (tmp_path / "results").exists()
    assert released.main([str(path), "--dry-run", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "2 released model(s), 4 evaluation(s); table: " in out and "a.pth: MISSING (from https://example.org/a.pth)" in out
    assert "b.pth: present" in out and "released_fcn+idr_context_scenes_resnet18_s0@whole_flip" in out
    assert not (tmp_path / "results").exists()
    assert released.main([str(path), "--only", "zzz*", "--dry-run"]) == 2
    assert "--only zzz* matches none of the 2 models" in capsys.readouterr().err


def _fake_convert(monkeypatch, problems: list[str] | None = None) -> list[dict]:
    """harness.convert stand-in: copies our model.pt (the 'official' file here) or reports problems."""
    calls: list[dict] = []

    class ConversionError(Exception):
        def __init__(self, problems: list[str]):
            super().__init__("; ".join(problems))
            self.problems = problems

    def convert_file(source: Path, out: Path, *, framework: str, idr: bool, dataset: str, backbone: str = "resnet50c"):
        calls.append({"framework": framework, "idr": idr, "dataset": dataset, "backbone": backbone})
        if problems:
            raise ConversionError(problems)
        torch.save(torch.load(source, weights_only=True), out)

    module = types.ModuleType("harness.convert")
    module.convert_file, module.ConversionError = convert_file, ConversionError
    monkeypatch.setitem(sys.modules, "harness.convert", module)
    return calls


def test_released_converts_evaluates_and_tabulates(tmp_path, tiny_setting, monkeypatch, capsys):
    path = _listing(tmp_path, ["idrnet_fcn_tiny.pth"])
    _save_model(tiny_setting, tmp_path / "weights" / "idrnet_fcn_tiny.pth")
    calls = _fake_convert(monkeypatch)
    assert released.main([str(path), "--results", str(tmp_path / "results"), "--device", "cpu"]) == 0
    assert calls == [{"framework": "fcn", "idr": True, "dataset": "context_scenes", "backbone": "resnet50c"}]
    records = find_records(tmp_path / "results" / "rel")
    assert sorted(r["cell_id"].rsplit("@", 1)[1] for r in records) == ["whole_flip", "whole_ss"]
    assert all(r["provenance"]["source_file"] == "idrnet_fcn_tiny.pth" for r in records)
    table = (tmp_path / "results" / "rel" / "tables" / "released.md").read_text()
    rows = [line for line in table.splitlines() if "idrnet_fcn_tiny.pth" in line]
    assert len(rows) == 2 and all("FCN + IDR" in r for r in rows)
    ss = next(r for r in records if r["cell_id"].endswith("whole_ss"))
    assert f"{ss['metrics']['mIoU']:.2f}" in table and "Released models" in capsys.readouterr().out
    quick = (tmp_path / "results" / "rel" / "table.md").read_text()  # harness.tables' own tables are written too
    assert "context_scenes" in quick


def test_released_with_results_on_s3(tmp_path, tiny_setting, monkeypatch, capsys, s3_server):
    """--results s3://...: records, the converted checkpoint and both tables land on the loopback S3
    server, nothing under a local results folder; the records equal those of a local run."""
    import uuid

    from harness.storage import list_files, parse_location, read_text

    path = _listing(tmp_path, ["idrnet_fcn_tiny.pth"])
    _save_model(tiny_setting, tmp_path / "weights" / "idrnet_fcn_tiny.pth")
    _fake_convert(monkeypatch)
    bucket = f"rel-{uuid.uuid4().hex[:12]}"
    s3_server.make_bucket(bucket)
    uri = s3_server.uri(bucket, "results")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    assert released.main([str(path), "--results", uri, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"s3://{bucket}/results/rel/cells/released_" in out and "Released models" in out
    assert list(workdir.iterdir()) == []
    root = parse_location(uri) / "rel"
    files = set(list_files(root))
    assert {"converted/idrnet_fcn_tiny.pt", "tables/released.md", "table.md"} <= files
    records = find_records(root)
    assert sorted(r["cell_id"].rsplit("@", 1)[1] for r in records) == ["whole_flip", "whole_ss"]
    assert all(r["model_file"] == f"s3://{bucket}/results/rel/converted/idrnet_fcn_tiny.pt" for r in records)
    ss = next(r for r in records if r["cell_id"].endswith("whole_ss"))
    assert f"{ss['metrics']['mIoU']:.2f}" in read_text(root / "tables" / "released.md")

    assert released.main([str(path), "--results", str(tmp_path / "results"), "--device", "cpu"]) == 0
    local = {r["cell_id"]: r["per_class_iou"] for r in find_records(tmp_path / "results" / "rel")}
    assert local == {r["cell_id"]: r["per_class_iou"] for r in records}


def test_released_to_an_unreachable_store_is_one_line(tmp_path, tiny_setting, monkeypatch, capsys):
    path = _listing(tmp_path, ["idrnet_fcn_tiny.pth"])
    _save_model(tiny_setting, tmp_path / "weights" / "idrnet_fcn_tiny.pth")
    calls = _fake_convert(monkeypatch)
    uri = "s3://x/p?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1"
    assert released.main([str(path), "--results", uri, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "cannot reach the endpoint 127.0.0.1:1" in err[0], err
    assert calls == []  # refused before converting anything


def test_released_reports_each_conversion_problem(tmp_path, tiny_setting, monkeypatch, capsys):
    path = _listing(tmp_path, ["idrnet_fcn_tiny.pth"])
    _save_model(tiny_setting, tmp_path / "weights" / "idrnet_fcn_tiny.pth")
    _fake_convert(monkeypatch, ["unmatched key decoder.conv.weight", "shape of aux.cls.weight: [150, 512] vs [4, 8]"])
    assert released.main([str(path), "--results", str(tmp_path / "results"), "--device", "cpu"]) == 2
    source = tmp_path / "weights" / "idrnet_fcn_tiny.pth"
    assert capsys.readouterr().err.splitlines() == [f"error: {source}: unmatched key decoder.conv.weight",
                                                   f"error: {source}: shape of aux.cls.weight: [150, 512] vs [4, 8]"]
    assert not list((tmp_path / "results").glob("rel/**/*"))


def test_run_refuses_the_released_list(capsys):
    from harness.run import main as run_main

    shipped = REPO / "experiments" / "released.yaml"
    assert run_main([str(shipped)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [(f"error: {shipped}: lists released models, not an experiment; run "
                    f"`python -m harness.released {shipped}`")]


def test_bad_released_file_one_line(tmp_path, capsys):
    path = _listing(tmp_path, ["a.pth"])
    raw = yaml.safe_load(path.read_text())
    raw["models"][0]["framework"] = "segformer"
    path.write_text(json.dumps(raw))
    assert released.main([str(path), "--dry-run"]) == 2
    assert "unknown framework 'segformer'" in capsys.readouterr().err
