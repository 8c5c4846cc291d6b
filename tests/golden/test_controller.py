"""Golden tests through the Controller: config -> xDS snapshots, end to end.

One case, ``controller/weather-canary`` (the reference scenario): the model
of ``config/weather-canary/in`` is applied to a
``sailplane.server.controller.Controller``, and each proxy of ``case.yaml``
gets the snapshot it would be served on the mTLS xDS port (its identity
proven), which must be consistent (``Snapshot.consistent()``). Its
resources go to ``controller/<case>/<node-id>.yaml``, secrets by name
only, shared blocks as ``{$ref: NAME}`` (see test_translate.py).

Every other case is checked stage by stage (test_config.py,
test_translate.py); :func:`test_translate_stage_is_what_the_controller_serves`
holds the translate stage to what the Controller serves, for every case.

Regenerate with ``pytest tests/golden --update-golden`` and review the diff;
orphaned outputs are removed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from sailplane.model.mesh import MeshConfig
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import PUSH_ORDER, SECRET, Snapshot, SnapshotCache
from sailplane.xds.types import SHORT_NAMES
from tests.golden.cases import (
    CONTROLLER,
    TRANSLATE,
    case_names,
    case_proxies,
    check_outputs,
    load_case,
    translate_mesh,
    translate_proxy,
    view_snapshot,
)
from tests.golden.render import Tree, proto_tree
from tests.golden.shared import render_shared

CASES = case_names(CONTROLLER)


def controller_snapshots(mesh: MeshConfig, case: str) -> dict[str, Snapshot]:
    """Node id -> the snapshot the Controller serves it (identity proven)."""
    controller = Controller(SnapshotCache())

    async def apply() -> None:  # the Controller's readiness event wants a running loop
        controller.apply(mesh)

    asyncio.run(apply())
    snapshots = {}
    for node_id, metadata in case_proxies(case_dir(case)).items():
        proxy = proxy_from_node(node_id, metadata, mesh)
        identity = mesh.spiffe_id(proxy.namespace, proxy.workload.service_account)
        proven = dataclasses.replace(proxy, proven_identity=identity)
        snapshots[node_id] = controller.snapshot_for(proven)
    return snapshots


def case_dir(case: str) -> Path:
    """Where the case's proxies are listed: the controller case, else the translate one."""
    return CONTROLLER / case if (CONTROLLER / case).is_dir() else TRANSLATE / case


def render_controller_case(name: str) -> dict[str, str]:
    mesh = load_case(name).mesh
    assert mesh is not None, f"config/{name} does not load"
    outputs = {}
    for node_id, snapshot in controller_snapshots(mesh, name).items():
        problems = snapshot.consistent()
        assert not problems, f"{node_id}: inconsistent snapshot: {problems}"
        document: dict[str, Tree] = {}
        for type_url in PUSH_ORDER:
            messages = snapshot.get(type_url).messages.values()
            if type_url == SECRET:
                # Key material differs every run: record which secrets, not their bytes.
                document["secrets"] = sorted(m.name for m in messages)
            elif messages:
                document[SHORT_NAMES[type_url]] = [proto_tree(m) for m in messages]
        outputs[f"{node_id}.yaml"] = render_shared(document)
    return outputs


@pytest.mark.parametrize("case", CASES)
def test_controller_golden(case: str, request: pytest.FixtureRequest) -> None:
    outputs = render_controller_case(case)
    check_outputs(CONTROLLER / case, outputs, bool(request.config.getoption("--update-golden")))


@pytest.mark.parametrize("case", sorted({*case_names(TRANSLATE), *CASES}))
def test_translate_stage_is_what_the_controller_serves(case: str) -> None:
    """The translate goldens call the pure functions without the Controller;
    here the Controller's snapshots (shared generation, spliced route tables,
    Sidecar scopes) must hold exactly the same resources."""
    mesh = load_case(case).mesh
    assert mesh is not None
    wide = translate_mesh(mesh)
    proxies = case_proxies(case_dir(case))
    for node_id, served in controller_snapshots(mesh, case).items():
        metadata = proxies[node_id]
        view = translate_proxy(mesh, wide, proxy_from_node(node_id, metadata, mesh))
        translated = view_snapshot(wide, view)
        for type_url in PUSH_ORDER:
            got, want = served.get(type_url).messages, translated.get(type_url).messages
            if type_url == SECRET:
                assert sorted(got) == sorted(want), node_id  # names: the keys differ
            else:
                assert dict(got) == dict(want), f"{node_id}: {SHORT_NAMES[type_url]} differ"
