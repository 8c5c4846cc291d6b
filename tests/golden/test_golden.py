"""Golden tests: tests/golden/<case>/in/*.yaml -> tests/golden/<case>/out/.

For each case, every proxy (all WorkloadEntries, or those listed in
``case.yaml``) is translated and its resources written as YAML to
``out/<proxy-id>.yaml``; diagnostics go to ``out/diagnostics.txt``.
Regenerate with ``pytest tests/golden --update-golden`` and review the diff;
orphaned outputs are removed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from sailplane.config.loader import load_dir
from sailplane.model.source import Severity
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import SnapshotCache
from sailplane.xds.types import PUSH_ORDER, SECRET, SHORT_NAMES

ROOT = Path(__file__).parent
CASES = sorted(p.name for p in ROOT.iterdir() if (p / "in").is_dir())


def render_case(case: Path) -> dict[str, str]:
    """File name -> expected text, for every output of the case."""
    settings: dict[str, Any] = {}
    if (case / "case.yaml").exists():
        settings = yaml.safe_load((case / "case.yaml").read_text()) or {}
    result = load_dir(case / "in")
    outputs: dict[str, str] = {}
    lines = [d.format() for d in result.diagnostics if d.severity is not Severity.INFO]
    outputs["diagnostics.txt"] = "".join(f"{line}\n" for line in lines)
    if result.mesh is None:
        return outputs
    mesh = result.mesh
    controller = Controller(SnapshotCache())

    async def build() -> None:
        controller.apply(mesh)

    asyncio.run(build())
    proxies: dict[str, dict[str, Any]] = settings.get("proxies") or {
        w.id: {} for w in mesh.workloads
    }
    for node_id, metadata in proxies.items():
        proxy = proxy_from_node(node_id, metadata or {}, mesh)
        # As on the mTLS xDS port, where the client certificate proves it.
        identity = mesh.spiffe_id(proxy.namespace, proxy.workload.service_account)
        snapshot = controller.snapshot_for(dataclasses.replace(proxy, proven_identity=identity))
        problems = snapshot.consistent()
        assert not problems, f"{node_id}: inconsistent snapshot: {problems}"
        document = {}
        for type_url in PUSH_ORDER:
            messages = snapshot.get(type_url).messages.values()
            if type_url == SECRET:
                # Key material differs every run: record which secrets, not their bytes.
                document["secrets"] = sorted(m.name for m in messages)
            elif messages:
                document[SHORT_NAMES[type_url]] = [
                    json.loads(
                        json_format.MessageToJson(
                            m, preserving_proto_field_name=True, sort_keys=True
                        )
                    )
                    for m in messages
                ]
        outputs[f"{node_id}.yaml"] = yaml.safe_dump(document, sort_keys=False, width=100)
    return outputs


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, request: pytest.FixtureRequest) -> None:
    case_dir = ROOT / case
    out_dir = case_dir / "out"
    outputs = render_case(case_dir)
    if request.config.getoption("--update-golden"):
        out_dir.mkdir(exist_ok=True)
        for orphan in out_dir.iterdir():
            if orphan.name not in outputs:
                orphan.unlink()
        for name, text in outputs.items():
            (out_dir / name).write_text(text)
        return
    expected = {p.name: p.read_text() for p in out_dir.iterdir()} if out_dir.is_dir() else {}
    assert sorted(expected) == sorted(outputs), "outputs differ; run with --update-golden"
    for name, text in outputs.items():
        assert text == expected[name], f"{case}/out/{name} differs; run with --update-golden"
