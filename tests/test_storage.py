"""Results on object storage (a real S3 server on loopback, moto's) and verified checkpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

from harness.storage import (
    StorageError,
    check_reachable,
    describe_failure,
    list_files,
    parse_location,
    read_bytes,
    read_text,
    staged,
    write_bytes,
)
from harness.train import NoIntactCheckpoint, checkpoint_name, intact_checkpoint, save_checkpoint
from tests.conftest import REPO, tiny_experiment

CELL = "fcn+idr_context_scenes_resnet18_s0"


def test_uri_options_come_from_the_query_or_the_environment(monkeypatch):
    location = parse_location("s3://bkt/a/b?endpoint_override=127.0.0.1:9000&scheme=http&region=eu-west-1")
    assert (location.scheme, location.path) == ("s3", "bkt/a/b")
    assert dict(location.options) == {"endpoint_override": "127.0.0.1:9000", "scheme": "http", "region": "eu-west-1"}
    assert parse_location(location.uri) == location and (location / "c").path == "bkt/a/b/c"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.lab:9000")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    from_env = parse_location("s3://bkt/p")
    assert dict(from_env.options) == {"endpoint_override": "minio.lab:9000", "scheme": "http", "region": "us-west-2"}
    assert parse_location("relative/results").path == str(Path("relative/results").absolute())


@pytest.mark.parametrize("uri", ["s3://bkt/p?secret_key=hunter2", "s3://AKIAXX:hunter2@bkt/p", "s3://bkt/p?region=x&token=hunter2"])
def test_credentials_in_the_uri_are_refused_without_echoing_them(uri):
    with pytest.raises(StorageError) as caught:
        parse_location(uri)
    assert "hunter2" not in str(caught.value) and "credential" in str(caught.value)


def _tiny_checkpoints(root: Path, iterations: list[int]) -> None:
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for iteration in iterations:
        folder = root / checkpoint_name(iteration)
        folder.mkdir(parents=True)
        save_checkpoint(folder, model, optimizer, scaler, iteration, rank=0)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_bit])
def test_a_damaged_checkpoint_is_skipped_for_the_newest_intact_one(tmp_path, damage):
    root = tmp_path / "_ray" / CELL
    _tiny_checkpoints(root, [2, 4, 6])
    damage(root / "iter_00000006" / "model.pt")
    lines: list[str] = []
    assert intact_checkpoint(root, tmp_path / "staging", lines.append) == root / "iter_00000004"
    assert len(lines) == 1 and "iter_00000006/model.pt" in lines[0], lines
    for iteration in (2, 4):
        damage(root / checkpoint_name(iteration) / "model.pt")
    with pytest.raises(NoIntactCheckpoint, match="all 3 are damaged"):
        intact_checkpoint(root, tmp_path / "staging", lines.append)


@pytest.fixture
def bucket(s3_server):
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3_server.make_bucket(name)
    return name


def test_checkpoints_on_s3_are_verified_after_download(s3_server, bucket, tmp_path):
    local = tmp_path / "local"
    _tiny_checkpoints(local, [2, 4])
    remote = parse_location(s3_server.uri(bucket, "exp/_ray/" + CELL))
    for path in local.rglob("*"):
        if path.is_file():
            write_bytes(remote / path.relative_to(local).as_posix(), path.read_bytes())
    _flip_a_bit(local / "iter_00000004" / "rng_rank0.pt")
    write_bytes(remote / "iter_00000004/rng_rank0.pt", (local / "iter_00000004" / "rng_rank0.pt").read_bytes())
    lines: list[str] = []
    found = intact_checkpoint(remote, tmp_path / "staging", lines.append)
    assert found == tmp_path / "staging" / "iter_00000002" and (found / "model.pt").is_file()
    assert len(lines) == 1 and "iter_00000004/rng_rank0.pt: checksum differs" in lines[0]


def test_staged_writes_go_back_and_an_endpoint_outage_is_waited_out(s3_server, bucket):
    location = parse_location(s3_server.uri(bucket, "exp"))
    write_bytes(location / "cells/a/record.json", b"{}")
    with staged(location, lambda name: name.endswith("record.json")) as folder:
        assert (folder / "cells/a/record.json").read_bytes() == b"{}"
        (folder / "table.md").write_text("table")
    assert read_bytes(location / "table.md") == b"table"

    s3_server.stop()
    restart = threading.Timer(4.0, s3_server.start)
    restart.start()
    started = time.monotonic()
    write_bytes(location / "cells/a/train.log", b"written while the endpoint was away")
    restart.join()
    waited = time.monotonic() - started
    assert waited >= 3.5
    print(f"recovery figures: S3 endpoint away 4 s during a write [s3]: the write went through {waited:.1f}s after "
          "the endpoint went away, nothing lost")
    assert sorted(list_files(location)) == ["cells/a/record.json", "cells/a/train.log", "table.md"]


def _run(args: list[str], env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    merged = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={key: value for key, value in merged.items() if value is not None})


def test_unusable_object_stores_are_named_in_one_line_before_anything_is_written(
        s3_server, bucket, write_experiment, tmp_path):
    path = write_experiment(tiny_experiment("badstore", grid={"idr": [True]}))
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    cases = {
        "cannot reach the endpoint 127.0.0.1:1": "s3://x/p?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1",
        "bucket 'no-such-bucket' does not exist": s3_server.uri("no-such-bucket", "p"),
        "missing or invalid credentials": s3_server.uri(bucket, "p"),
    }
    no_credentials = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                      "AWS_CONFIG_FILE": str(tmp_path / "none")}
    for expected, uri in cases.items():
        env = no_credentials if "credentials" in expected else None
        done = _run(["harness.run", str(path), "--results", uri], env)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert done.returncode == 2 and len(errors) == 1 and expected in errors[0], done.stderr[-2000:]
        assert secret not in done.stderr + done.stdout
    # moto without IAM enforcement stores an anonymous PUT (S3 refuses it) but refuses to read it back,
    # which is how the missing credentials are found: only that probe object can be left behind
    left = list_files(parse_location(s3_server.uri(bucket)))
    assert all(name.startswith("p/.idrbench-probe-") for name in left) and len(left) <= 1, left


@pytest.mark.parametrize("message, expected", [
    ("AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 7, Could not connect to server; "
     "Details: Failed to connect to 127.0.0.1:1 after 403 ms: Could not connect to server", "cannot reach the endpoint"),
    ("AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 28, Timeout was reached", "cannot reach the endpoint"),
    ("AWS Error ACCESS_DENIED during PutObject operation: Access Denied", "missing or invalid credentials"),
    ("AWS Error UNKNOWN (HTTP status 403) during HeadObject operation: No response body.", "missing or invalid credentials"),
    ("AWS Error NO_SUCH_BUCKET during PutObject operation: The specified bucket does not exist", "does not exist"),
])
def test_store_failures_are_told_apart_by_their_message(message, expected):
    """An unreachable endpoint is never taken for refused credentials, whatever numbers its message holds
    (a connection that failed "after 403 ms" once read as HTTP 403 on a loaded machine)."""
    uri = "s3://b/p?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1"
    assert expected in describe_failure(parse_location(uri), OSError(message))


def quickstart_shrunk(data_root: Path) -> list[str]:
    """`--set`s that make experiments/quickstart.yaml seconds long: 32-pixel scenes, narrow heads; the
    +IDR cell trains 9 iterations with a checkpoint every 3, the baseline 2."""
    return [
        "model.feats_channels=16", "model.head_channels=16", "model.aux_channels=8", "model.refine_channels=8",
        "train.iterations=2", "train.log_interval=3", "train.max_failures=2", "eval.batch_size=4",
        "data.options.context_scenes={seed: 0, num_train: 8, num_val: 4, image_size: 32}", f"data.root={data_root}",
        "overrides=[{match: {idr: true}, set: {train.iterations: 9, train.checkpoint_interval: 3}}]",
    ]


@pytest.mark.slow
@pytest.mark.ray
def test_quickstart_on_s3_end_to_end_with_damaged_checkpoint_and_outage(ray_session, s3_server, bucket, tmp_path):
    """`python -m harness.run experiments/quickstart.yaml --results s3://...` (shrunk with --set): records,
    models, logs, events and tables land there, none locally; harness.tables and harness.report regenerate
    from the URI. Then the +IDR cell's record is removed, its newest checkpoint truncated, and `--resume`
    (the endpoint going away for a few seconds meanwhile) skips it for the intact one and ends with the
    same per-class IoU."""
    from tests.recovery import recovery_figures, report, same_iou

    started = time.monotonic()
    uri = s3_server.uri(bucket, "results")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    sets = [arg for assignment in quickstart_shrunk(tmp_path / "datasets") for arg in ("--set", assignment)]
    command = ["harness.run", str(REPO / "experiments" / "quickstart.yaml"), "--results", uri, *sets,
               "--address", ray_session.address]
    first = _run(command, cwd=workdir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert list(workdir.iterdir()) == []  # nothing under a local results folder
    root = parse_location(uri) / "quickstart"
    files = list_files(root)
    cell = f"cells/{CELL}/"
    for name in ("record.json", "model.pt", "train.log"):
        assert cell + name in files
    assert any(n.startswith(cell + "events.out.tfevents") for n in files)
    assert {"table.md", "table.csv", "tables/frameworks.md"} <= set(files)
    assert f"_ray/{CELL}/iter_00000006/files_rank0.json" in files
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert not any(secret.encode() in read_bytes(root / n) for n in files if not n.endswith(".pt"))

    write_bytes(root / "table.md", b"stale")
    tables = _run(["harness.tables", root.uri], cwd=workdir)
    assert tables.returncode == 0 and read_bytes(root / "table.md") != b"stale", tables.stderr
    report_page = _run(["harness.report", root.uri], cwd=workdir)
    assert report_page.returncode == 0 and b"<html" in read_bytes(root / "report.html"), report_page.stderr[-2000:]
    baseline = "fcn_context_scenes_resnet18_s0"
    evaluated = _run(["harness.evaluate", "--cell", (root / "cells" / baseline).uri, "--flip", "--device", "cpu"], cwd=workdir)
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]
    flipped = [n for n in list_files(root / "cells") if n.startswith(baseline + "@") and n.endswith("/record.json")]
    assert len(flipped) == 1 and json.loads(read_bytes(root / "cells" / flipped[0]))["evaluated_from"] == baseline

    expected = json.loads(read_bytes(root / cell / "record.json"))
    root.filesystem().delete_file((root / cell / "record.json").path)
    model = root / f"_ray/{CELL}/iter_00000006/model.pt"
    write_bytes(model, read_bytes(model)[:1000])

    outage = threading.Thread(target=_outage, args=(s3_server, 15.0, 4.0))
    damaged_at = time.time()
    outage.start()
    resumed = _run([*command, "--resume"], cwd=workdir)
    outage.join()
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    damaged = [line for line in resumed.stderr.splitlines() if "damaged checkpoint skipped" in line]
    assert len(damaged) == 1 and "iter_00000006/model.pt" in damaged[0], resumed.stderr
    record = json.loads(read_bytes(root / cell / "record.json"))
    assert record["resumed_from_iteration"] == 3
    assert same_iou(record["per_class_iou"], expected["per_class_iou"])
    figures = recovery_figures(read_text(root / cell / "train.log"), damaged_at)
    figures["iterations_repeated"] = expected["config"]["train"]["iterations"] - record["resumed_from_iteration"]
    report("damaged checkpoint (--resume, S3 endpoint away 4 s meanwhile)", "s3", figures, True)
    assert list(workdir.iterdir()) == []
    print(f"quickstart end to end on S3: {time.monotonic() - started:.0f}s")


def _outage(server, after: float, seconds: float) -> None:
    time.sleep(after)
    server.stop()
    time.sleep(seconds)
    server.start()


def test_a_node_that_cannot_reach_the_store_is_named(s3_server, bucket):
    from harness.cluster import nodes_missing_the_folder, probe_on_node

    folder = parse_location(s3_server.uri(bucket, "exp"))
    unreachable = "127.0.0.1:1"  # what node b sees: no route to the endpoint

    def run_on_nodes(probe: str, token: str, node_ids: list[str]) -> list[bool]:
        seen_from_b = probe.replace(s3_server.endpoint, unreachable)
        return [probe_on_node(probe if node == "node-a" else seen_from_b, token, node) for node in node_ids]

    assert nodes_missing_the_folder(folder, ["node-a", "node-b"], run_on_nodes) == ["node-b"]
    assert list_files(folder) == {}  # probes removed


def test_resume_with_only_damaged_checkpoints_stops_before_ray_in_one_line(write_experiment, tmp_path, capsys,
                                                                           monkeypatch):
    import ray

    from harness.run import main

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started with no intact checkpoint"))
    path = write_experiment(tiny_experiment("damaged", grid={"idr": [True]}))
    root = tmp_path / "results" / "damaged" / "_ray" / CELL
    _tiny_checkpoints(root, [1, 2])
    _truncate(root / "iter_00000002" / "model.pt")
    _flip_a_bit(root / "iter_00000001" / "model.pt")
    assert main([str(path), "--results", str(tmp_path / "results"), "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and "no intact checkpoint" in errors[0] and CELL in errors[0], err
    assert [line for line in err if line.startswith("warning: damaged checkpoint skipped")] == [
        f"warning: damaged checkpoint skipped: {root}/iter_00000002/model.pt: 1000 bytes, the manifest says "
        f"{(root / 'iter_00000001' / 'model.pt').stat().st_size}",
        f"warning: damaged checkpoint skipped: {root}/iter_00000001/model.pt: checksum differs from the manifest (sha256)",
    ]
    assert not (tmp_path / "results" / "damaged" / "cells").exists()


def test_resume_past_a_damaged_checkpoint_mid_epoch_ends_as_the_uninterrupted_run(write_experiment, tmp_path):
    """On a local disk, through `run_cell`: the newest checkpoint (iteration 6) truncated, the run resumes
    from iteration 3 (mid-epoch: 2 batches per epoch) and ends with the uninterrupted run's per-class IoU."""
    from harness.config import load_experiment
    from harness.run import resolve_cells
    from harness.train import PrintReporter, run_cell

    train = {"iterations": 9, "batch_size": 4, "log_interval": 3, "checkpoint_interval": 3}
    path = write_experiment(tiny_experiment("midepoch", grid={"idr": [True]}, train=train))
    cell = resolve_cells(load_experiment(path))[0]
    root = tmp_path / "checkpoints"
    root.mkdir()
    from tests.recovery import report, same_iou

    class StampedReporter(PrintReporter):
        def __init__(self) -> None:
            super().__init__(root, quiet=True)
            self.lines: list[tuple[float, str]] = []

        def log(self, cell_id: str, line: str) -> None:
            self.lines.append((time.time(), line))

    uninterrupted = run_cell(cell, PrintReporter(root, quiet=True))
    _truncate(root / "iter_00000006" / "model.pt")
    reporter = StampedReporter()
    started = time.time()
    resumed = run_cell(cell, reporter)
    assert resumed["resumed_from_iteration"] == 3
    equal = same_iou(resumed["metrics"]["per_class_iou"], uninterrupted["metrics"]["per_class_iou"])
    resumed_at = next(t for t, line in reporter.lines if line.startswith("resumed from "))
    report("damaged checkpoint (truncated newest, run_cell)", "local", {
        "time_to_recover_s": resumed_at - started, "resumed_from": 3,
        "iterations_repeated": cell.train.iterations - resumed["resumed_from_iteration"]}, equal)
    assert equal
