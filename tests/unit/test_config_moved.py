"""Moving documents in their files (lines added above, order changed) gives
what a cold load gives, for every kind sailplane reads: the cache shifts what
it read from a moved document instead of reading it again, and nothing may
tell the difference."""

from __future__ import annotations

from pathlib import Path

import pytest

from sailplane.config.incremental import DocumentCache
from sailplane.config.loader import load_texts
from sailplane.config.yamldoc import split_documents
from tests.unit.test_config_incremental import assert_same

# Documents whose diagnostics come from every stage of reading one document:
# the envelope, the kind's parser, a fail-closed policy, a non-object.
ZOO = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken-policy}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/x], requestPrincipals: ["*"]}
---
- not
- a mapping
---
apiVersion: networking.istio.io/v9
kind: VirtualService
metadata: {name: future}
---
apiVersion: v1
kind: Service
metadata:
  name: annotated
  annotations: {sidecar.istio.io/inject: "false", istio.io/nonsense: x}
spec:
  ports: [{name: http, port: 80, targetPort: web}]
---
apiVersion: v1
kind: Service
metadata: {name: Bad_Name}
spec: {ports: []}
---
apiVersion: networking.istio.io/v1
kind: EnvoyFilter
metadata: {name: tweak}
spec: {}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
"""
GOLDEN = Path(__file__).parents[1] / "golden" / "config"
MESHES = {
    **{p.parent.name: p for p in sorted(GOLDEN.glob("*/in"))},
    "weather": Path(__file__).parents[2] / "sailplane" / "examples" / "weather" / "mesh",
}


def _reversed(text: str) -> str:
    pieces = split_documents(text)
    assert pieces is not None
    marked = [p if p.startswith("---") else "---\n" + p for _, p in pieces if p.strip()]
    return "".join(reversed(marked))


@pytest.mark.parametrize("root", MESHES.values(), ids=MESHES.keys())
def test_moved_documents_read_as_in_a_cold_load(root: Path) -> None:
    """Moving a document shifts what was read from it; nothing may tell."""
    files = {p.name: p.read_text() for p in sorted(root.glob("*.yaml"))} | {"zoo.yaml": ZOO}
    cache = DocumentCache()
    cached = load_texts(sorted(files.items()), cache=cache)
    cold = load_texts(sorted(files.items()))
    edits = [
        {name: "# two lines\n# above\n" + text for name, text in files.items()},
        {name: _reversed(text) for name, text in files.items()},
        files,
    ]
    for files in edits:
        texts = sorted(files.items())
        cached = load_texts(texts, previous=cached.in_force(), cache=cache)
        cold = load_texts(texts, previous=cold.in_force())
        assert cache.stats.documents_shifted > 0
        assert_same(cached, cold)
