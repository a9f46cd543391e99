"""benchmarks/chaos.py, small: on a 2-cell grid on two simulated nodes with results on S3, the driver
SIGKILLed and resumed and the S3 endpoint away for a few seconds, at seeded random moments; the records
equal the fault-free run's. (A node lost and replaced, on S3 and on a local disk, is
tests/test_multinode.py; the script's full 10-fault run is in the notes of issue 24.)"""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # its own cluster: never beside the shared session


def test_two_faults_lose_no_record_and_change_no_result():
    pytest.importorskip("moto.server")
    command = [sys.executable, "benchmarks/chaos.py", "--faults", "2", "--cells", "2", "--iterations", "20",
               "--gap", "5", "10", "--seed", "1", "--timeout", "600",
               "--schedule", "driver_kill,s3_outage"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "faults injected: 2 (driver_kill 1, s3_outage 1)" in out, out
    assert "faults survived: 2" in out and "cells finished: 2 of 2" in out
    assert "records lost: 0" in out and "records different from the fault-free run (per-class IoU): 0" in out
