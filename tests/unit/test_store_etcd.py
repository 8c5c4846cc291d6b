"""The etcd config store against a real etcd: listing, names that keep file
and line, watching (resume after a broken stream, re-list after compaction),
the bounds, and entries that are not mesh objects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from sailplane.config.loader import load_texts
from sailplane.errors import StoreUnavailable
from sailplane.store import Change, EtcdStore, open_etcd, parse_url
from sailplane.store.objects import StoredObject, load_texts_of, objects_in_file
from tests.support.etcd import Etcd

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  selector:
    app: reviews
  ports:
  - name: http
    port: 9080
"""


def vs(host: str = "reviews", name: str = "reviews") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: {host}
"""


def put_file(store: EtcdStore, text: str, origin: str) -> int:
    objects, problems = objects_in_file(text, origin)
    assert problems == []
    return store.commit(objects, [], {})


def test_url_parsing() -> None:
    url = parse_url("etcd://a:1,[::1]:2/mesh/prod/")
    assert url.endpoints == (("a", 1), ("::1", 2))
    assert url.prefix == "/mesh/prod"
    assert parse_url("etcd://a:2379").prefix == "/sailplane"
    for bad in ("http://a:1", "etcd://a", "etcd://a:x", "etcd://a:1/_x"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_objects_keep_their_file_and_line(etcd: Etcd) -> None:
    """A diagnostic of a stored object names its key, the file it came from
    and the line there, as the directory's would."""
    store = open_etcd(etcd.url(), 1 << 20)
    text = SERVICE + "---\n" + vs(host="nowhere")
    put_file(store, text, "mesh/reviews.yaml")
    contents = store.read()
    names = [name for name, _ in contents.texts]
    assert names == [
        "etcd:Service/default/reviews (from mesh/reviews.yaml)",
        "etcd:VirtualService/default/reviews (from mesh/reviews.yaml)",
    ]
    result = load_texts(contents.texts)
    errors = [d for d in result.diagnostics if "nowhere" in d.message]
    assert errors, result.diagnostics
    assert errors[0].file == names[1]
    assert errors[0].position.line == text.splitlines().index("        host: nowhere") + 1
    assert errors[0].obj == "VirtualService default/reviews"
    assert contents.revision == store.revision > 0


def test_two_reads_of_one_revision_hash_alike(etcd: Etcd) -> None:
    """Replicas on one store compute the same content hash."""
    put_file(open_etcd(etcd.url(), 1 << 20), SERVICE, "a.yaml")
    one, two = (load_texts(open_etcd(etcd.url(), 1 << 20).read().texts) for _ in range(2))
    assert one.mesh is not None and two.mesh is not None
    assert one.mesh.digest == two.mesh.digest


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (
            "Service/default/big",
            lambda: json.dumps({"yaml": SERVICE + "#" * 5000}).encode(),
            "over the limit of 4,096",
        ),
        (
            "VirtualService/default/other",
            lambda: StoredObject("VirtualService", "default", "reviews", vs()).encode(),
            "not the object its key names",
        ),
        ("Service/default/x/extra", lambda: b"{}", "not PREFIX/KIND/NAMESPACE/NAME"),
        ("Service/default/junk", lambda: b"\xff not json", "not a sailplane object"),
    ],
    ids=["oversized-value", "kind-name-disagree", "wrong-key-shape", "not-ours"],
)
def test_entries_that_are_not_mesh_objects_fail_the_load(
    etcd: Etcd, key: str, value: object, problem: str
) -> None:
    """Like a file that cannot be read: the load is not applied (the
    configuration in force stays) and the diagnostic names the key."""
    store = open_etcd(etcd.url(), 4096)
    put_file(store, SERVICE, "ok.yaml")
    etcd.client().put(f"/sailplane/{key}".encode(), value())  # type: ignore[operator]
    contents = store.read()
    assert [d.file for d in contents.unread] == [f"etcd:{key}"]
    assert problem in contents.unread[0].message
    assert load_texts(contents.texts, unread=contents.unread).parse_failed


def test_keys_outside_the_prefix_and_reserved_ones_are_not_read(etcd: Etcd) -> None:
    store = open_etcd(etcd.url(), 1 << 20)
    put_file(store, SERVICE, "ok.yaml")
    client = etcd.client()
    evil = StoredObject("Service", "default", "evil", SERVICE.replace("reviews", "evil"))
    client.put(b"/sailplanex/Service/default/evil", evil.encode())
    client.put(b"/other/Service/default/evil", evil.encode())
    client.put(b"/sailplane/_replicas/one", b"not configuration")
    contents = store.read()
    assert [name.split(" ")[0] for name, _ in contents.texts] == ["etcd:Service/default/reviews"]
    assert contents.unread == ()


def test_too_many_keys_is_an_error(etcd: Etcd) -> None:
    store = EtcdStore(parse_url(etcd.url()), 1 << 20, max_keys=1)
    put_file(store, SERVICE + "---\n" + vs(), "two.yaml")
    contents = store.read()
    assert contents.texts == ()
    assert "more than 1 keys" in contents.unread[0].message


def test_unreachable_names_every_endpoint() -> None:
    store = open_etcd("etcd://127.0.0.1:1,127.0.0.1:2", 1 << 20)
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1.*127\.0\.0\.1:2"):
        store.read()
    assert store.problem is not None


async def next_change(changes: AsyncIterator[Change], timeout: float = 10.0) -> Change:
    return await asyncio.wait_for(anext(changes), timeout)


async def test_watch_reports_a_write_without_polling(etcd: Etcd) -> None:
    store = open_etcd(etcd.url(), 1 << 20)
    store.read()
    changes = store.changes()
    try:
        pending = asyncio.ensure_future(next_change(changes))
        await asyncio.sleep(0.3)
        revision = await asyncio.to_thread(put_file, store, SERVICE, "a.yaml")
        change = await pending
        assert (change.reason, change.revision) == ("changed", revision)
    finally:
        await changes.aclose()
        store.stop()


async def test_watch_resumes_after_a_broken_stream(etcd: Etcd) -> None:
    """etcd restarts: the watch says it is back (a resync), resumes from the
    last revision it saw, and the writes made meanwhile are not lost."""
    store = open_etcd(etcd.url(), 1 << 20)
    store.read()
    changes = store.changes()
    try:
        pending = asyncio.ensure_future(next_change(changes))
        await asyncio.sleep(0.3)
        first = await asyncio.to_thread(put_file, store, SERVICE, "a.yaml")
        assert (await pending).revision == first
        await asyncio.to_thread(etcd.stop)
        pending = asyncio.ensure_future(next_change(changes, 30))
        await asyncio.sleep(0.5)
        assert store.problem is not None  # the broken stream is reported
        await asyncio.to_thread(etcd.start)
        later = await asyncio.to_thread(put_file, store, vs(), "b.yaml")
        seen = [await pending]
        while seen[-1].revision < later:
            seen.append(await next_change(changes))
        assert seen[0].reason == "reconnected"
        assert "compacted" not in {c.reason for c in seen}
        names = [name for name, _ in await asyncio.to_thread(lambda: store.read().texts)]
        assert len(names) == 2
        assert store.problem is None
    finally:
        await changes.aclose()
        store.stop()


async def test_compacted_revision_forces_a_clean_relist(etcd: Etcd) -> None:
    """The watch starts from a revision etcd compacted away: the store asks
    for a re-list, then watches on from the revision that re-list read."""
    store = open_etcd(etcd.url(), 1 << 20)
    store.read()  # revision r0
    writer = open_etcd(etcd.url(), 1 << 20)
    for number in range(3):
        latest = put_file(writer, SERVICE.replace("reviews", f"svc{number}"), f"{number}.yaml")
    etcd.client().compact(latest)
    changes = store.changes()
    try:
        change = await next_change(changes)
        assert change.reason == "compacted"
        contents = await asyncio.to_thread(store.read)  # what the reloader does
        assert len(contents.texts) == 3
        pending = asyncio.ensure_future(next_change(changes))
        await asyncio.sleep(0.3)
        revision = await asyncio.to_thread(put_file, writer, vs(), "vs.yaml")
        change = await pending
        assert (change.reason, change.revision) == ("changed", revision)
    finally:
        await changes.aclose()
        store.stop()


def test_claimed_line_numbers_cost_a_bounded_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored origin line is the writer's word: the blank lines that put
    documents at their lines are bounded per load, past which a document
    starts at line 1 (and still loads)."""
    monkeypatch.setattr("sailplane.store.objects.PADDING_BUDGET", 2_500)
    objects = [
        StoredObject("VirtualService", "default", f"vs{i}", vs(name=f"vs{i}"), "x.yaml", 1_000)
        for i in range(4)
    ]
    texts = load_texts_of(objects)
    assert [text.count("\n") - vs().count("\n") for _, text in texts] == [999, 999, 0, 0]
    result = load_texts(texts)
    assert result.mesh is not None and not result.errors
    assert len(result.mesh.virtual_services) == 4
