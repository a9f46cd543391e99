import json

from harness.config import expand_cells, load_experiment
from harness.records import RECORD_NAME, cell_dir, completed_record, write_record
from tests.conftest import tiny_experiment


def _cell(write_experiment):
    return expand_cells(load_experiment(write_experiment(tiny_experiment("t"))))[0]


def test_completed_record_matches_the_configuration(write_experiment, tmp_path):
    cell = _cell(write_experiment)
    results = tmp_path / "results"
    assert completed_record(results, cell) is None
    config = cell.model_dump(mode="json")
    write_record(results, cell, {"config": config, "metrics": {"mIoU": 1.0}})
    assert completed_record(results, cell)["metrics"]["mIoU"] == 1.0

    # written before eval.probs_before_resize existed: the default stands in, still complete
    older = json.loads(json.dumps(config))
    del older["eval"]["probs_before_resize"]
    write_record(results, cell, {"config": older, "metrics": {"mIoU": 2.0}})
    assert completed_record(results, cell)["metrics"]["mIoU"] == 2.0

    # a different value, an unknown key or a broken file: not this cell's record
    changed = json.loads(json.dumps(config))
    changed["train"]["lr"] = 0.5
    write_record(results, cell, {"config": changed})
    assert completed_record(results, cell) is None
    unknown = json.loads(json.dumps(config))
    unknown["train"]["lrr"] = 0.5
    write_record(results, cell, {"config": unknown})
    assert completed_record(results, cell) is None
    (cell_dir(results, cell) / RECORD_NAME).write_text("{ not json")
    assert completed_record(results, cell) is None
