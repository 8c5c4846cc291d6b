"""Incremental translation gives exactly what a full translation gives.

The controller re-translates only what a change touches (translate/impact.py,
generation.py, routetables.py) and reuses everything else. Here every golden
mesh, and a generated one with subsets and weighted routes, goes through a
seeded series of random edits, each saved to disk and loaded incrementally as
``sailplane serve`` does; after every edit each connected proxy's snapshot must
hold the same bytes as a controller that translated the edited mesh from
scratch, and every type whose content moved must have a new version (or it
would never be pushed).
"""

from __future__ import annotations

import copy
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from benchmarks.meshgen import MeshSpec, generate_texts, write_texts
from sailplane.ca import CertificateAuthority, IdentityStore
from sailplane.config.assemble import InForce
from sailplane.config.incremental import DocumentCache
from sailplane.config.loader import LoadResult, load_dir
from sailplane.errors import UnknownProxy
from sailplane.model.mesh import MeshConfig
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import PUSH_ORDER, SECRET, Snapshot, SnapshotCache

GOLDEN = Path(__file__).parent.parent / "golden"
CASES = sorted(p.name for p in (GOLDEN / "config").iterdir() if (p / "in").is_dir())
EDITS = 12


class _Mesh:
    """A config directory, loaded incrementally like ``sailplane serve`` does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.documents = DocumentCache()
        self.in_force: InForce | None = None

    def load(self) -> MeshConfig | None:
        result: LoadResult = load_dir(self.root, previous=self.in_force, cache=self.documents)
        if result.mesh is not None:
            self.in_force = result.in_force()
        return result.mesh


def _mutate_leaf(rng: random.Random, node: Any) -> bool:
    """Change one scalar somewhere under ``node``: numbers move by one, IPv4
    addresses get another last octet, other strings get a suffix."""
    leaves: list[tuple[Any, Any]] = []

    def walk(value: Any) -> None:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            if isinstance(child, dict | list):
                walk(child)
            elif isinstance(child, int | str) and key not in ("apiVersion", "kind"):
                leaves.append((value, key))

    walk(node)
    if not leaves:
        return False
    parent, key = rng.choice(leaves)
    value = parent[key]
    if isinstance(value, bool):
        parent[key] = not value
    elif isinstance(value, int):
        parent[key] = value + rng.choice((-1, 1))
    elif value.count(".") == 3 and value.replace(".", "").isdigit():
        parent[key] = value.rsplit(".", 1)[0] + f".{rng.randrange(1, 250)}"
    else:
        parent[key] = value + rng.choice(("-x", "2"))
    return True


def _edit(rng: random.Random, root: Path) -> str:
    """One random edit of one document, saved. Returns what was done."""
    files = sorted(root.glob("*.yaml"))
    path = rng.choice(files)
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    index = rng.randrange(len(documents))
    doc = documents[index]
    what = rng.choice(("leaf", "leaf", "leaf", "leaf", "delete", "copy"))
    if what == "delete" and len(documents) > 1:
        del documents[index]
    elif what == "copy" and isinstance(doc.get("metadata"), dict):
        twin = copy.deepcopy(doc)
        twin["metadata"]["name"] = f"{twin['metadata'].get('name', 'x')}-twin{rng.randrange(99)}"
        _mutate_leaf(rng, twin.get("spec") or {})
        documents.append(twin)
    else:
        what = "leaf"
        _mutate_leaf(rng, doc.get("spec") or doc)
    text = yaml.safe_dump_all(documents, sort_keys=False)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return f"{what} {doc.get('kind')} {doc.get('metadata', {}).get('name')} in {path.name}"


def _content(snapshot: Snapshot) -> dict[str, Any]:
    """What a proxy would receive, by type: every resource's bytes (secrets by
    name: their keys are the identity store's, compared as such)."""
    return {
        t: sorted(snapshot.get(t).chunks) if t == SECRET else dict(snapshot.get(t).chunks)
        for t in PUSH_ORDER
    }


def _difference(got: Snapshot, expected: Snapshot, context: str) -> str:
    lines = [f"{context}: incremental != from scratch"]
    for type_url in PUSH_ORDER:
        mine, theirs = got.get(type_url), expected.get(type_url)
        for name in sorted(mine.chunks.keys() | theirs.chunks.keys()):
            if mine.chunks.get(name) == theirs.chunks.get(name):
                continue
            lines.append(f"  {type_url.rsplit('.', 1)[-1]} {name}:")
            for label, resources in (("incremental", mine), ("scratch", theirs)):
                message = resources.messages.get(name) if name in resources.chunks else None
                text = json_format.MessageToJson(message) if message is not None else "absent"
                lines.append(f"    {label}: {' '.join(text.split())[:1500]}")
    return "\n".join(lines)


def _check_series(root: Path, proxies: dict[str, dict[str, Any]], seed: int) -> int:
    """Returns how many edits changed at least one proxy's snapshot."""
    mesh_dir = _Mesh(root)
    mesh = mesh_dir.load()
    assert mesh is not None
    identities = IdentityStore(CertificateAuthority.create_self_signed())
    cache = SnapshotCache()
    incremental = Controller(cache, identities)
    incremental.apply(mesh)
    admitted = {}
    for node_id, metadata in proxies.items():
        proxy = proxy_from_node(node_id, metadata, mesh)
        admitted[node_id] = incremental.admit(proxy)
    rng = random.Random(seed)
    moved = 0
    for step in range(EDITS):
        what = _edit(rng, root)
        mesh = mesh_dir.load()
        if mesh is None:
            continue  # does not parse: nothing applied, nothing to compare
        incremental.apply(mesh)
        # The same mesh (rejected edits keep their last good version, which
        # only the incremental load knows), translated from scratch.
        fresh = Controller(SnapshotCache(), identities)
        fresh.apply(mesh)
        for node_id, metadata in proxies.items():
            try:
                proxy = proxy_from_node(node_id, metadata, mesh)
            except UnknownProxy:
                continue  # its WorkloadEntry is gone: it keeps its last config
            got = cache.get(node_id)
            assert got is not None
            expected = fresh.snapshot_for(proxy)
            context = f"seed {seed}, edit {step} ({what}), proxy {node_id}"
            assert _content(got) == _content(expected), _difference(got, expected, context)
            before = admitted[node_id]
            for type_url in PUSH_ORDER:
                if before.get(type_url).chunks != got.get(type_url).chunks:
                    assert before.version(type_url) != got.version(type_url), (
                        f"{context}: {type_url} changed but kept its version"
                    )
            moved += any(before.version(t) != got.version(t) for t in PUSH_ORDER)
            admitted[node_id] = got
    return moved


@pytest.mark.parametrize("case", CASES)
def test_every_edit_of_a_golden_mesh_translates_as_from_scratch(case: str, tmp_path: Path) -> None:
    root = tmp_path / "mesh"
    shutil.copytree(GOLDEN / "config" / case / "in", root)
    # The proxies of a case: its translate (or controller) stage lists them.
    settings_file = GOLDEN / "translate" / case / "case.yaml"
    if not settings_file.exists():
        settings_file = GOLDEN / "controller" / case / "case.yaml"
    settings = yaml.safe_load(settings_file.read_text()) if settings_file.exists() else {}
    proxies = {k: v or {} for k, v in (settings or {}).get("proxies", {}).items()}
    if not proxies:  # every workload, as the golden test does
        mesh = load_dir(root).mesh
        assert mesh is not None
        proxies = {w.id: {} for w in mesh.workloads}
    moved = _check_series(root, proxies, seed=sum(map(ord, case)))
    assert moved > 0  # the series did change what some proxy gets


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_edit_of_a_generated_mesh_translates_as_from_scratch(
    seed: int, tmp_path: Path
) -> None:
    spec = MeshSpec(services=6, ports=2, workloads_per_service=2, subsets=2)
    root = tmp_path / "mesh"
    root.mkdir()
    write_texts(root, generate_texts(spec))
    mesh = load_dir(root).mesh
    assert mesh is not None
    proxies: dict[str, dict[str, Any]] = {w.id: {} for w in mesh.workloads}
    assert _check_series(root, proxies, seed) > 0
