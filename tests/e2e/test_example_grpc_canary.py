"""examples/grpc-canary (#21) runs as its README says, with real grpcio xDS
clients and servers and no Envoy: the canary split, a live weight edit, the
servers' mTLS and AuthorizationPolicy, and no NACK.

Bounds: 500 calls at 80/20 have a standard deviation of ~9 (1.8%), at 50/50
~11 (2.2%); the bounds are 4 of them (±7% and ±9%), so that a fair run fails
about once in 15,000. The acceptance's ±5% is held by test_proxyless_grpc.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import PYTHON

pytestmark = pytest.mark.e2e

RUN = Path(__file__).resolve().parents[2] / "examples" / "grpc-canary" / "run.py"


def test_the_grpc_canary_example() -> None:
    # Its own process group: whatever happens, everything it started is stopped.
    run = subprocess.Popen(
        [PYTHON, str(RUN), "--calls", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = run.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert run.returncode == 0, out + err
    result = json.loads(out.splitlines()[-1])
    before, after = result["before"], result["after"]
    assert sum(before.values()) == sum(after.values()) == 500, result
    assert 0.73 <= before["v1"] / 500 <= 0.87, result
    assert 0.41 <= after["v1"] / 500 <= 0.59, result
    assert result["outsider"] == {"UNAVAILABLE": 3}, result  # no certificate: mTLS refuses
    assert result["denied"] == {"PERMISSION_DENIED": 3}, result  # not the allowed identity
    assert result["nacks"] == [], result
    assert result["proxies"] == [
        "echo-client.default",
        "echo-v1.default",
        "echo-v2.default",
        "intruder.default",
    ]
