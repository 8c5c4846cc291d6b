"""The scenarios: each is a function of :class:`Params` returning sections of
metrics (``{section: {metric: value}}``), so a new scenario is one function
plus one line in :data:`SCENARIOS`.

Each scenario runs in a process of its own (``python -m benchmarks.one NAME
PARAMS``), so that its peak RSS and CPU are its own and not what an
earlier scenario left behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.abuse import ABUSERS, run_abuse
from benchmarks.fanout import run_fanout
from benchmarks.meshgen import MeshSpec
from benchmarks.reload import run_reload
from benchmarks.report import rss_metrics
from benchmarks.translation import run_translation

Sections = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Params:
    services: int = 1000
    ports: int = 1  # per service
    workloads: int = 2  # per service (versions v1, v2)
    subsets: int = 2  # DestinationRule subsets (and a weighted VirtualService) per service
    proxies: int = 2000  # simulated proxies (one per workload at most)
    delta: bool = False  # simulated proxies speak delta xDS
    per_connection: int = 10  # simulated proxies sharing one HTTP/2 connection
    changes: int = 10  # saves of each kind of change, for p50/p99
    repeat: int = 3  # translation runs, median reported
    abusers: int = ABUSERS  # never-ACKing streams of the abuse scenario

    @property
    def spec(self) -> MeshSpec:
        return MeshSpec(self.services, self.ports, self.workloads, subsets=self.subsets)


def translate(params: Params) -> Sections:
    sections = run_translation(params.spec, params.repeat)
    sections["translate"]["peak_rss_mb"] = rss_metrics()["peak_mb"]
    return sections


def reload(params: Params) -> Sections:
    return run_reload(params.spec, params.proxies, params.repeat)


def fanout(params: Params) -> Sections:
    return asyncio.run(
        run_fanout(
            params.spec,
            params.proxies,
            delta=params.delta,
            changes=params.changes,
            per_connection=params.per_connection,
        )
    )


def abuse(params: Params) -> Sections:
    return asyncio.run(
        run_abuse(
            params.spec,
            params.abusers,
            changes=params.changes,
            per_connection=params.per_connection,
        )
    )


SCENARIOS: dict[str, Callable[[Params], Sections]] = {
    "translate": translate,
    "reload": reload,
    "fanout": fanout,
    "abuse": abuse,
}
# What runs unless scenarios are named (abuse: ``--abuse`` or ``--only abuse``).
DEFAULT = ("translate", "reload", "fanout")


def run(params: Params, names: list[str] | None = None) -> Sections:
    """The default scenarios (or those named), each in a fresh process."""
    root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in (os.environ.get("PYTHONPATH", ""), root) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    sections: Sections = {}
    for name in names or DEFAULT:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.one",
                name,
                json.dumps(dataclasses.asdict(params)),
            ],
            env=env,
            stdout=subprocess.PIPE,
            check=True,
            text=True,
        )
        sections.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return sections
