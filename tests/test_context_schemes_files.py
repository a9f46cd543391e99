"""The shipped files of the context-schemes comparison: released checkpoints, experiment files."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from harness.config import expand_cells, load_experiment
from harness.official import check_pair, official_checkpoint_name, official_iterations, official_model_settings, \
    official_schedule
from harness.released import load_released, plan_jobs
from models.registry import PLUGIN_FRAMEWORKS, SCHEMES, all_framework_names, carries_plugin

REPO = Path(__file__).resolve().parent.parent
RELEASED = REPO / "experiments" / "released.yaml"
OFFICIAL_BACKBONES = {"resnet50c": "resnet50c", "swin_large_patch4_window12_384": "swin_large"}


def scheme_entries():
    return [e for e in load_released(RELEASED).models if carries_plugin(e.framework)]


def test_released_scheme_entries_name_known_frameworks_and_official_files():
    entries = scheme_entries()
    assert len(entries) == 34  # 10 similarity, 3 ISNet, 4 MCIBI, 16 MCIBI++ R50-D8, 1 MCIBI++ Swin-L
    assert {e.framework for e in entries} == set(PLUGIN_FRAMEWORKS) | set(SCHEMES)  # every scheme released
    assert {e.framework for e in entries} <= set(all_framework_names())
    for e in entries:
        backbone = OFFICIAL_BACKBONES[e.backbone]
        assert e.file == official_checkpoint_name(e.framework, e.dataset, backbone, idr=False), e.file
        assert e.url.endswith("/" + e.file) and e.url.startswith("https://github.com/SegmentationBLWX/modelstore/")
    assert len({e.file for e in load_released(RELEASED).models}) == len(load_released(RELEASED).models)


@pytest.mark.slow
def test_released_scheme_entries_plan_with_their_official_setting():
    listing = load_released(RELEASED)
    jobs = plan_jobs(listing, RELEASED, ["mcibiplusplus_*", "isnet_*", "mcibi_*", "ocrnet_*"])
    assert len(jobs) == 17 + 3 + 4 + 2
    for job in jobs:
        cell = job.cells[0]
        backbone = OFFICIAL_BACKBONES[job.entry.backbone]
        official = official_model_settings(cell.framework, cell.dataset, False, backbone)
        model = cell.model.model_dump()
        for key, value in official.items():
            if key == "plugin_options":
                assert _plugin_options_equal(cell.framework, model[key], value), (job.entry.file, model[key], value)
            else:
                assert model[key] == value, (job.entry.file, key, model[key], value)


def _plugin_options_equal(framework: str, ours: dict, official: dict) -> bool:
    """The same switches once read (defaults filled in); learning rates to 12 digits (the official
    configs write 0.01 * 0.9)."""
    from models.heads.mcibi import MCIBIOptions
    from models.plugins.mcibipp import MCIBIPPOptions

    options = MCIBIOptions if framework == "mcibi" else MCIBIPPOptions

    def read(mapping: dict) -> dict:
        return {k: round(v, 12) if isinstance(v, float) else v for k, v in asdict(options.from_mapping(mapping)).items()}

    return read(ours) == read(official)


def test_context_schemes_cells_follow_the_official_configs():
    cells = expand_cells(load_experiment(REPO / "experiments" / "context_schemes.yaml"))
    assert len(cells) == 65
    assert {c.framework for c in cells} >= set(PLUGIN_FRAMEWORKS) | set(SCHEMES)  # every scheme
    for cell in cells:
        check_pair(cell.framework, cell.dataset, "resnet50c", cell.idr)  # every cell has an official config
        official = official_model_settings(cell.framework, cell.dataset, cell.idr)
        model = cell.model.model_dump()
        for key, value in official.items():
            if key == "plugin_options":
                assert _plugin_options_equal(cell.framework, model[key], value), (cell.cell_id, model[key], value)
            else:
                assert model[key] == value, (cell.cell_id, key, model[key], value)
        schedule = official_schedule(cell.framework, cell.dataset, "resnet50c", cell.idr)
        assert cell.train.batch_size == schedule.batch_size, cell.cell_id
        assert cell.train.iterations == official_iterations(schedule, cell.dataset), cell.cell_id
        assert (cell.train.lr, cell.train.weight_decay) == (schedule.lr, schedule.weight_decay), cell.cell_id
    mcibipp = {(c.framework, c.dataset) for c in cells if c.framework.endswith("_mcibipp")}
    idr = {(f"{c.framework}_mcibipp", c.dataset) for c in cells if c.idr}
    assert mcibipp == idr and len(mcibipp) == 16  # MCIBI++ beside every IDR cell, four datasets
    assert {c.dataset for c in cells if c.framework == "mcibi"} == {"ade20k", "cityscapes", "coco_stuff10k", "lip"}


def test_context_schemes_cpu_has_every_scheme_three_seeds():
    cells = expand_cells(load_experiment(REPO / "experiments" / "context_schemes_cpu.yaml"))
    assert {c.dataset for c in cells} == {"context_scenes"} and {c.seed for c in cells} == {0, 1, 2}
    frameworks = {c.framework for c in cells}
    assert frameworks >= set(PLUGIN_FRAMEWORKS) | set(SCHEMES)  # every scheme
    assert len(cells) == 57 and sum(c.idr for c in cells) == 12
    mcibi = next(c for c in cells if c.framework == "mcibi")
    assert mcibi.model.plugin_options["momentum_lr"] == mcibi.train.lr  # the memory momentum starts at 0.9


def test_context_schemes_cpu_shares_the_idr_study_setting():
    """The four frameworks with and without IDR are idr_study's cells but for the experiment name,
    so the findings can set that study's records beside the schemes'."""
    schemes = {c.cell_id: c for c in expand_cells(load_experiment(REPO / "experiments" / "context_schemes_cpu.yaml"))}
    study = {c.cell_id: c for c in expand_cells(load_experiment(REPO / "experiments" / "idr_study.yaml"))}
    shared = set(schemes) & set(study)
    assert len(shared) == 24 and {schemes[i].framework for i in shared} == {"fcn", "pspnet", "deeplabv3", "upernet"}
    for cell_id in shared:
        assert schemes[cell_id].model_copy(update={"experiment": "idr_study"}) == study[cell_id], cell_id


def test_grid_exclude_drops_matching_cells(tmp_path: Path):
    text = (REPO / "experiments" / "cpu_table.yaml").read_text().replace(
        "seeds: [0, 1, 2]", "seeds: [0, 1, 2]\n  exclude:\n    - {framework: [pspnet, upernet], seed: [1, 2]}")
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    cells = expand_cells(load_experiment(path))
    assert len(cells) == 24 - 8
    assert not any(c.framework in ("pspnet", "upernet") and c.seed > 0 for c in cells)


def test_the_table_has_a_row_for_every_scheme():
    from harness.tables.context_schemes import SCHEME_FRAMEWORKS

    assert SCHEME_FRAMEWORKS >= set(PLUGIN_FRAMEWORKS) | set(SCHEMES)
