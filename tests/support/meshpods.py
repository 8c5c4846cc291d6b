"""sailplane and sidecars in network-namespace pods (tests/support/netns.py):
what the transparent-capture tests share.

The control plane runs in a pod of its own (``serve``); a workload's pod gets
``sailplane capture`` and then its sidecar (``sidecar``): a bootstrap from
the real ``sailplane bootstrap`` with credentials from the control plane's CA,
and Envoy running as the proxy uid that capture lets by.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.support.netns import Pod, PodNetwork
from tests.support.procs import ENVOY

PROXY_UID = 1337  # Istio's, and `sailplane capture`'s default
APP_UID = 1000  # anyone else: captured


def sailplane(net: PodNetwork, pod: Pod, *argv: str, uid: int | None = None) -> str:
    """Run a sailplane command in ``pod``; its stdout (it must succeed)."""
    done = net.run(pod, [sys.executable, "-m", "sailplane", *argv], uid=uid)
    assert done.returncode == 0, f"sailplane {argv[0]}: {done.stderr}"
    return done.stdout


def serve(net: PodNetwork, pod: Pod, config: Path, ca: Path) -> None:
    """``sailplane serve`` in ``pod``: xDS on 15010/15012, the monitor on 15014."""
    net.spawn(
        pod,
        [
            *(sys.executable, "-m", "sailplane", "serve", "--config-dir", str(config)),
            *("--ca-dir", str(ca), "--xds-address", f"{pod.ip}:15010"),
            *("--secure-xds-address", f"{pod.ip}:15012"),
            *("--monitor-address", f"{pod.ip}:15014", "--debounce", "0.1"),
        ],
    )


def sidecar(
    net: PodNetwork,
    pod: Pod,
    name: str,
    control_plane: Pod,
    config: Path,
    ca: Path,
    work: Path,
    *bootstrap_flags: str,
) -> None:
    """WorkloadEntry ``name``'s Envoy in ``pod``, on the mTLS xDS port."""
    boot = work / f"{name}.yaml"
    sailplane(
        net,
        pod,
        *("bootstrap", name, "--config-dir", str(config), "--ca-dir", str(ca)),
        *("--xds-address", f"{control_plane.ip}:15012", "-o", str(boot), *bootstrap_flags),
    )
    for path in work.glob(f"{name}*"):  # the bootstrap and its credentials
        os.chown(path, PROXY_UID, PROXY_UID)
    argv = [ENVOY, "-c", str(boot), "--concurrency", "1", "--disable-hot-restart"]
    argv += ["--drain-time-s", "1", "--log-level", "warning"]
    net.spawn(pod, argv, uid=PROXY_UID)
