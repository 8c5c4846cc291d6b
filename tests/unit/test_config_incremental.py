"""Cached loads (a :class:`DocumentCache` kept across loads) give exactly what
cold loads give, and keep the objects of unchanged documents.

The control plane keeps one cache and re-loads its whole directory on every
change; only documents whose text (or place) changed are parsed again. The
series of edits below is what people do to a mesh; after each one the cached
load must equal a cold load of the same files: mesh, diagnostics in order,
records, digest, and the position of every field.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from sailplane.config.assemble import RETAINED
from sailplane.config.incremental import DocumentCache
from sailplane.config.loader import LoadResult, load_texts
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import DestinationRule, VirtualService
from sailplane.model.registry import Service, Workload

Files = dict[str, str]
Located = Service | Workload | DestinationRule | VirtualService


def service(i: int) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: svc-{i}}}
        spec:
          selector: {{app: svc-{i}}}
          ports: [{{name: http, port: 8000}}]
        """
    )


def workload(i: int, replica: int) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {{name: svc-{i}-{replica}}}
        spec:
          address: 10.0.{i}.{replica + 1}
          labels: {{app: svc-{i}, version: v{replica % 2 + 1}}}
        """
    )


def traffic(i: int, v1: int | str = 90) -> str:
    v2 = 100 - v1 if isinstance(v1, int) else 10
    return textwrap.dedent(
        f"""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: svc-{i}}}
        spec:
          host: svc-{i}
          subsets:
          - {{name: v1, labels: {{version: v1}}}}
          - {{name: v2, labels: {{version: v2}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: svc-{i}}}
        spec:
          hosts: [svc-{i}]
          http:
          - route:
            - destination: {{host: svc-{i}, subset: v1}}
              weight: {v1}
            - destination: {{host: svc-{i}, subset: v2}}
              weight: {v2}
        """
    )


def mesh(weights: dict[int, int | str] | None = None, extra: int = 0) -> Files:
    weights = weights or {}
    return {
        "services.yaml": "---\n".join(service(i) for i in range(4)),
        "workloads.yaml": "---\n".join(
            [workload(i, r) for i in range(4) for r in range(2)]
            + [workload(0, 2 + k) for k in range(extra)]
        ),
        "traffic.yaml": "---\n".join(traffic(i, weights.get(i, 90)) for i in range(4)),
    }


def edit(name: str, change: Callable[[str], str]) -> Callable[[Files], Files]:
    return lambda files: {**files, name: change(files[name])}


def replace(name: str, old: str, new: str) -> Callable[[Files], Files]:
    def change(text: str) -> str:
        assert old in text, f"{old!r} not in {name}"
        return text.replace(old, new, 1)

    return edit(name, change)


def delete(name: str) -> Callable[[Files], Files]:
    return lambda files: {k: v for k, v in files.items() if k != name}


UNCUT = "%YAML 1.2\n---\n" + service(7) + "...\n---\n" + workload(7, 0)
CRLF = (service(8) + "---\n" + workload(8, 0)).replace("\n", "\r\n")
SERVICE_ENTRY = textwrap.dedent(
    """\
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: svc-1-external}
    spec:
      hosts: [svc-1.default.svc.cluster.local, api.example.com]
      ports: [{number: 443, name: https, protocol: HTTPS}]
      resolution: DNS
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: app}
    ---
    apiVersion: networking.istio.io/v1
    kind: EnvoyFilter
    metadata: {name: tweak}
    spec: {}
    """
)


def _workloads(result: LoadResult) -> int:
    return len(result.mesh.workloads) if result.mesh else -1


def _retained(result: LoadResult) -> bool:
    return any(o.state == RETAINED for o in result.objects)


def _not_retained(result: LoadResult) -> bool:
    return result.mesh is not None and not _retained(result)


# (what the edit does, the edit, what must hold afterwards so that the edit is
# known to do what it says)
STEPS: list[tuple[str, Callable[[Files], Files], Callable[[LoadResult], bool]]] = [
    ("weight-changed", lambda _: mesh({1: 70}), lambda r: r.mesh is not None),
    ("workload-added", lambda _: mesh({1: 70}, extra=1), lambda r: _workloads(r) == 9),
    ("workload-removed", lambda _: mesh({1: 70}), lambda r: _workloads(r) == 8),
    (
        "flow-collection-left-open",
        replace("traffic.yaml", "hosts: [svc-2]", "hosts: [svc-2"),
        lambda r: r.parse_failed,
    ),
    ("syntax-fixed", lambda _: mesh({1: 70}), lambda r: not r.errors),
    (
        "bad-indentation",
        replace("traffic.yaml", "  host: svc-3\n", "  host: svc-3\n   oops: 1\n"),
        lambda r: r.parse_failed,
    ),
    ("indentation-fixed", lambda _: mesh({1: 70}), lambda r: not r.errors),
    ("invalid-weight-retained", lambda _: mesh({1: 70, 3: "ninety"}), lambda r: _retained(r)),
    ("lines-inserted-above", edit("traffic.yaml", lambda t: "# moved\n\n\n" + t), _retained),
    (
        "document-inserted-in-the-middle",
        edit("workloads.yaml", lambda t: t.replace("---\n", "---\n" + workload(5, 0) + "---\n", 1)),
        lambda r: _workloads(r) == 9,
    ),
    (
        "duplicate",
        edit("services.yaml", lambda t: t + "---\n" + service(2)),
        lambda r: bool(r.errors),
    ),
    ("host-conflict", edit("services.yaml", lambda t: t + "---\n" + SERVICE_ENTRY), _retained),
    (
        "documents-swapped",
        edit("traffic.yaml", lambda t: "---\n".join(reversed(t.split("---\n")))),
        _retained,
    ),
    ("uncut-file-added", lambda f: {**f, "uncut.yaml": UNCUT}, lambda r: _workloads(r) == 10),
    ("uncut-file-edited", replace("uncut.yaml", "10.0.7.1", "10.0.7.9"), _retained),
    ("crlf-file-added", lambda f: {**f, "crlf.yaml": CRLF}, lambda r: _workloads(r) == 11),
    ("crlf-file-edited", replace("crlf.yaml", "10.0.8.1", "10.0.8.9"), _retained),
    (
        "invalid-weight-fixed",
        replace("traffic.yaml", "weight: ninety", "weight: 90"),
        _not_retained,
    ),
    ("file-deleted", delete("workloads.yaml"), lambda r: _workloads(r) == 2),
    (
        "file-renamed",
        lambda f: {**delete("traffic.yaml")(f), "routes.yaml": f["traffic.yaml"]},
        lambda r: r.mesh is not None and len(r.mesh.virtual_services) == 4,
    ),
    ("file-emptied", lambda f: {**f, "uncut.yaml": "# nothing here\n"}, _not_retained),
]


def _positions(mesh: MeshConfig) -> list[object]:
    """Where every object and every field of it is."""
    objects: list[Any] = [
        *mesh.services,
        *mesh.workloads,
        *mesh.virtual_services,
        *mesh.destination_rules,
        *mesh.gateways,
        *mesh.peer_authentications,
        *mesh.authorization_policies,
        *mesh.sidecars,
        *mesh.telemetries,
    ]
    return [(o.source, dict(o.source.positions)) for o in objects]


def assert_same(cached: LoadResult, cold: LoadResult) -> None:
    assert [d.format() for d in cached.diagnostics] == [d.format() for d in cold.diagnostics]
    assert cached.diagnostics == cold.diagnostics
    assert cached.objects == cold.objects
    assert cached.files == cold.files
    assert cached.mesh == cold.mesh
    if cold.mesh is not None:
        assert cached.mesh is not None
        assert cached.mesh.digest == cold.mesh.digest
        assert _positions(cached.mesh) == _positions(cold.mesh)


def test_a_cached_load_equals_a_cold_load_after_every_edit() -> None:
    files = mesh()
    cache = DocumentCache()
    cached = load_texts(sorted(files.items()), cache=cache)
    cold = load_texts(sorted(files.items()))
    assert_same(cached, cold)
    # Each chain falls back on its own configuration in force, as a server does.
    cached_in_force, cold_in_force = cached.in_force(), cold.in_force()
    for label, change, holds in STEPS:
        files = change(files)
        texts = sorted(files.items())
        cached = load_texts(texts, previous=cached_in_force, cache=cache)
        cold = load_texts(texts, previous=cold_in_force)
        assert holds(cold), label
        assert_same(cached, cold)
        if cached.mesh is not None:  # applied
            cached_in_force, cold_in_force = cached.in_force(), cold.in_force()


def objects_by_key(result: LoadResult) -> dict[tuple[str, str], Located]:
    assert result.mesh is not None
    m = result.mesh
    found: dict[tuple[str, str], Located] = {}
    for kind, items in (
        ("Service", m.services),
        ("WorkloadEntry", m.workloads),
        ("DestinationRule", m.destination_rules),
        ("VirtualService", m.virtual_services),
    ):
        found.update(((kind, f"{o.namespace}/{o.name}"), o) for o in items)
    return found


def test_unchanged_objects_are_the_same_objects_and_the_edited_one_is_new() -> None:
    cache = DocumentCache()
    first = load_texts(sorted(mesh().items()), cache=cache)
    second = load_texts(sorted(mesh({1: 70}).items()), cache=cache, previous=first.in_force())
    before, after = objects_by_key(first), objects_by_key(second)
    assert before.keys() == after.keys()
    edited = ("VirtualService", "default/svc-1")
    assert after[edited] is not before[edited]
    assert after[edited] != before[edited]
    assert all(after[key] is before[key] for key in before if key != edited)
    assert cache.stats.pieces_parsed == 1
    assert cache.stats.documents_interpreted == 1
    # Loading the same files again keeps every object.
    third = load_texts(sorted(mesh({1: 70}).items()), cache=cache, previous=second.in_force())
    assert all(o is after[key] for key, o in objects_by_key(third).items())
    assert cache.stats.files_reused == 3
    assert cache.stats.documents_interpreted == 0


def test_documents_that_moved_are_shifted_not_parsed_and_get_new_positions() -> None:
    cache = DocumentCache()
    files = mesh()
    first = load_texts(sorted(files.items()), cache=cache)
    files["traffic.yaml"] = "# three\n# new\n# lines\n" + files["traffic.yaml"]
    second = load_texts(sorted(files.items()), cache=cache, previous=first.in_force())
    # The first piece gained the lines, the seven others only moved.
    assert (cache.stats.pieces_parsed, cache.stats.pieces_shifted) == (1, 7)
    before, after = objects_by_key(first), objects_by_key(second)
    for key in (("VirtualService", "default/svc-2"), ("DestinationRule", "default/svc-0")):
        old, new = before[key], after[key]
        assert new is not old
        assert new.source.position.line == old.source.position.line + 3
    assert after[("Service", "default/svc-0")] is before[("Service", "default/svc-0")]
    assert_same(second, load_texts(sorted(files.items()), previous=first.in_force()))


def test_a_file_that_cannot_be_cut_is_parsed_whole_and_still_cached() -> None:
    cache = DocumentCache()
    files = {"uncut.yaml": UNCUT}
    first = load_texts(sorted(files.items()), cache=cache)
    assert cache.stats.files_parsed_whole == 1
    again = load_texts(sorted(files.items()), cache=cache, previous=first.in_force())
    assert (cache.stats.files_parsed_whole, cache.stats.files_reused) == (0, 1)
    assert (
        objects_by_key(again)[("Service", "default/svc-7")]
        is objects_by_key(first)[("Service", "default/svc-7")]
    )


def test_a_syntax_error_reads_as_in_a_cold_load_and_the_fix_reuses_the_rest() -> None:
    cache = DocumentCache()
    good = mesh()
    first = load_texts(sorted(good.items()), cache=cache)
    broken = replace("traffic.yaml", "hosts: [svc-2]", "hosts: [svc-2")(good)
    for keep_going in (False, True):
        cached = load_texts(sorted(broken.items()), cache=cache, keep_going=keep_going)
        assert cached.parse_failed
        assert_same(cached, load_texts(sorted(broken.items()), keep_going=keep_going))
    fixed = load_texts(sorted(good.items()), cache=cache, previous=first.in_force())
    assert cache.stats.documents_interpreted == 0
    assert all(o is objects_by_key(first)[key] for key, o in objects_by_key(fixed).items())


def test_a_new_domain_suffix_interprets_again() -> None:
    cache = DocumentCache()
    texts = sorted(mesh().items())
    load_texts(texts, cache=cache)
    cached = load_texts(texts, "example.internal", cache=cache)
    assert_same(cached, load_texts(texts, "example.internal"))
    assert cached.mesh is not None
    assert cached.mesh.services[0].hostname == "svc-0.default.svc.example.internal"


# Breakages in the middle of a file, each of which a piece parsed alone would
# report differently (other line, other words) than the whole file does, and
# one that libyaml accepts although the splitter must not cut there.
BROKEN = {
    "quoted-scalar-across-a-marker": ("hosts: [svc-2]", 'hosts: ["svc-2\n---\n  x"]', True),
    "undefined-alias": ("hosts: [svc-2]", "hosts: [*nowhere]", True),
    "unknown-tag": ("  host: svc-2\n", "  host: !!python/name:os.system svc-2\n", True),
    "tab-indentation": ("  host: svc-2\n", "  host: svc-2\n\tbad: 1\n", True),
    "document-end-then-garbage": ("---\napiVersion", "...\n: :\n---\napiVersion", True),
    "directive-in-the-middle": ("---\napiVersion", "%YAML 1.2\n---\napiVersion", False),
}


@pytest.mark.parametrize("old,new,fails", BROKEN.values(), ids=BROKEN.keys())
def test_every_syntax_error_reads_exactly_as_in_a_cold_load(
    old: str, new: str, fails: bool
) -> None:
    cache = DocumentCache()
    good = mesh()
    load_texts(sorted(good.items()), cache=cache)
    broken = sorted(replace("traffic.yaml", old, new)(good).items())
    cold = load_texts(broken)
    assert cold.parse_failed is fails
    assert_same(load_texts(broken, cache=cache), cold)
