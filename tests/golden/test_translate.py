"""Golden tests of the translate stage: model + proxy -> Envoy resources.

The model of ``config/<case>/in`` goes through sailplane's pure translate
functions, called as the Controller calls them but without it (see
cases.translate_mesh / translate_proxy; test_controller.py checks that the
two agree). Each ``translate/<case>/`` holds:

* ``case.yaml``: the proxies (node id -> node metadata);
* ``mesh-wide.clusters.yaml``, ``mesh-wide.endpoints.yaml``: the outbound
  clusters and ClusterLoadAssignments every proxy of the mesh shares
  (every proxy is sent all the endpoints);
* per proxy ``<node-id>.clusters.yaml`` (``mesh-wide``: ``all``, or the names
  its Sidecar lets it see; ``own``: its inbound and tracing clusters),
  ``.listeners.yaml``, ``.routes.yaml``, and ``.secrets.yaml`` (names only:
  the key material is minted at run time), and ``.endpoints.yaml`` when its
  locality gives it other assignments than the mesh-wide ones.

Blocks such as Istio's default retry policy are written once, in
``translate/_shared.yaml``, and appear as ``{$ref: NAME}`` where a subtree
is exactly equal to one; a large subtree repeated within one file (the two
filter chains of a PERMISSIVE port) is written once there, and its repeat is
``{$ref: '#/JSON/pointer'}`` to the first. See shared.py and render.py;
every file is checked to expand back to exactly what was translated.

Regenerate with ``pytest tests/golden --update-golden`` and review the diff;
orphaned outputs are removed.
"""

from __future__ import annotations

import pytest
import yaml

from sailplane.translate import proxy_from_node
from tests.golden.cases import (
    CONTROLLER,
    TRANSLATE,
    case_names,
    case_proxies,
    check_file,
    check_outputs,
    load_case,
    translate_mesh,
    translate_proxy,
    view_snapshot,
)
from tests.golden.render import expand, proto_tree, references
from tests.golden.shared import SHARED, SHARED_FILE, render_shared, render_shared_file

CASES = case_names(TRANSLATE)


def render_translate_case(name: str) -> dict[str, str]:
    mesh = load_case(name).mesh
    assert mesh is not None, f"config/{name} does not load"
    wide = translate_mesh(mesh)
    outputs = {
        "mesh-wide.clusters.yaml": render_shared([proto_tree(c) for c in wide.clusters]),
        "mesh-wide.endpoints.yaml": render_shared([proto_tree(e) for e in wide.endpoints]),
    }
    for node_id, metadata in case_proxies(TRANSLATE / name).items():
        view = translate_proxy(mesh, wide, proxy_from_node(node_id, metadata, mesh))
        problems = view_snapshot(wide, view).consistent()
        assert not problems, f"{node_id}: inconsistent resources: {problems}"
        everything = len(view.shared_clusters) == len(wide.clusters)
        clusters = {
            "mesh-wide": "all" if everything else list(view.shared_clusters),
            "own": [proto_tree(c) for c in view.own_clusters],
        }
        outputs[f"{node_id}.clusters.yaml"] = render_shared(clusters)
        outputs[f"{node_id}.listeners.yaml"] = render_shared(
            [proto_tree(x) for x in view.listeners]
        )
        outputs[f"{node_id}.routes.yaml"] = render_shared([proto_tree(r) for r in view.routes])
        outputs[f"{node_id}.secrets.yaml"] = yaml.safe_dump([s.name for s in view.secrets])
        if view.endpoints is not None:  # its locality changes them
            outputs[f"{node_id}.endpoints.yaml"] = render_shared(
                [proto_tree(e) for e in view.endpoints]
            )
    return outputs


@pytest.mark.parametrize("case", CASES)
def test_translate_golden(case: str, request: pytest.FixtureRequest) -> None:
    outputs = render_translate_case(case)
    check_outputs(TRANSLATE / case, outputs, bool(request.config.getoption("--update-golden")))


def test_shared_blocks(request: pytest.FixtureRequest) -> None:
    update = bool(request.config.getoption("--update-golden"))
    check_file(SHARED_FILE, render_shared_file(), update)
    # The file, read back and expanded, gives exactly the blocks the goldens were cut by.
    written = yaml.safe_load(SHARED_FILE.read_text())
    assert {name: expand(block, written) for name, block in written.items()} == SHARED
    if update:
        return
    used: set[str] = set()
    for path in [*TRANSLATE.rglob("*.yaml"), *CONTROLLER.rglob("*.yaml")]:
        if path != SHARED_FILE:
            used |= references(yaml.safe_load(path.read_text()))
    unused = sorted(set(SHARED) - used)
    assert not unused, f"no golden file refers to {unused}: drop them from tests/golden/shared.py"
