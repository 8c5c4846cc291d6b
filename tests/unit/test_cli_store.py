"""`sailplane apply`, `get`, `delete` and `validate --config-store` on a real
etcd: only valid objects are written, in one transaction; references
resolve against what the store holds; --prune; Secrets refused; an
unreachable store is one clear line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sailplane.cli import main
from sailplane.store.etcdclient import range_end
from sailplane.store.etcdpb import rpc_pb2
from tests.support.etcd import Etcd
from tests.unit.test_config_serve import REGISTRY, split

BAD_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [other]
  http:
  - route:
    - destination: {host: backend, subset: v1}
      weight: 50
    - destination: {host: backend, subset: v2}
      weight: 40
"""

SECRET = """\
apiVersion: v1
kind: Secret
metadata: {name: gateway-cert}
type: kubernetes.io/tls
data: {tls.crt: eA==, tls.key: eA==}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    root = tmp_path / "mesh"
    root.mkdir()
    (root / "registry.yaml").write_text(REGISTRY)
    (root / "vs.yaml").write_text(split(90, 10))
    return root


def test_apply_get_delete(etcd: Etcd, mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = etcd.url()
    code, out, _ = run(capsys, "apply", "-f", str(mesh), "--config-store", url)
    assert code == 0
    assert "virtualservice default/backend created" in out.splitlines()
    assert len(out.splitlines()) == 7
    code, out, _ = run(capsys, "apply", "-f", str(mesh), "--config-store", url)
    assert set(line.rsplit(" ", 1)[1] for line in out.splitlines()) == {"unchanged"}
    (mesh / "vs.yaml").write_text(split(50, 50))
    code, out, _ = run(capsys, "apply", "-f", str(mesh / "vs.yaml"), "--config-store", url)
    assert (code, out) == (0, "virtualservice default/backend configured\n")
    code, out, _ = run(capsys, "get", "virtualservices", "backend", "--config-store", url)
    assert code == 0
    assert "# /sailplane/VirtualService/default/backend (from vs.yaml:1)" in out
    assert "weight: 50" in out
    code, out, _ = run(capsys, "validate", "--config-store", url)
    assert code == 0, out
    code, out, _ = run(capsys, "delete", "VirtualService", "backend", "--config-store", url)
    assert (code, out) == (0, "virtualservice default/backend deleted\n")
    code, _, err = run(capsys, "delete", "VirtualService", "backend", "--config-store", url)
    assert code == 1 and "not found" in err
    code, _, err = run(capsys, "get", "virtualservice", "--config-store", url)
    assert code == 1


def test_apply_writes_only_valid_objects(
    etcd: Etcd, mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rejected object is not written and its diagnostics name its file and
    line, as `validate` would; the valid ones are written all the same."""
    (mesh / "broken.yaml").write_text(BAD_VS)
    (mesh / "secret.yaml").write_text(SECRET)
    code, out, err = run(capsys, "apply", "-f", str(mesh), "--config-store", etcd.url())
    assert code == 1
    assert "virtualservice default/broken rejected" in out
    assert "secret default/gateway-cert refused" in out
    assert "virtualservice default/backend created" in out
    assert "broken.yaml:8:5: IST0106" in err and "weights sum to 90" in err, err
    assert "private key" in err
    code, out, _ = run(capsys, "get", "--config-store", etcd.url())
    assert "broken" not in out and "gateway-cert" not in out
    assert "name: backend" in out


def test_references_resolve_against_the_store(
    etcd: Etcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The VirtualService applied alone names subsets defined by a
    DestinationRule already in the store: accepted. Then --prune makes the
    store equal to a directory."""
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "registry.yaml").write_text(REGISTRY)
    (second / "vs.yaml").write_text(split(90, 10))
    assert run(capsys, "apply", "-f", str(first), "--config-store", etcd.url())[0] == 0
    code, out, err = run(capsys, "apply", "-f", str(second), "--config-store", etcd.url())
    assert (code, out) == (0, "virtualservice default/backend created\n"), err
    # The directory without the VirtualService, with --prune: the store
    # equals it (the deletion is in the same transaction as any writes).
    code, out, err = run(capsys, "apply", "--prune", "-f", str(first), "--config-store", etcd.url())
    assert code == 0, err
    assert "virtualservice default/backend pruned" in out.splitlines(), out
    code, out, _ = run(capsys, "get", "virtualservice", "--config-store", etcd.url())
    assert code == 1


def test_an_apply_is_one_transaction(
    etcd: Etcd, mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A watcher sees every object of one apply in one response, at one
    revision: no replica can read half of it."""

    async def watch_first_response() -> rpc_pb2.WatchResponse:
        client = etcd.client()
        prefix = b"/sailplane/"
        request = rpc_pb2.WatchCreateRequest(key=prefix, range_end=range_end(prefix))
        async for response in client.watch(0, request):
            if response.events:
                return response
        raise AssertionError("the watch ended")

    async def scenario() -> rpc_pb2.WatchResponse:
        watching = asyncio.ensure_future(watch_first_response())
        await asyncio.sleep(0.5)
        code = await asyncio.to_thread(
            main, ["apply", "-f", str(mesh), "--config-store", etcd.url()]
        )
        assert code == 0
        return await asyncio.wait_for(watching, 10)

    response = asyncio.run(scenario())
    assert len(response.events) == 7
    assert len({e.kv.mod_revision for e in response.events}) == 1


def test_unreachable_store_is_one_clear_line(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "etcd://127.0.0.1:1,127.0.0.1:2/x"
    for argv in (
        ["apply", "-f", str(mesh)],
        ["get"],
        ["delete", "vs", "x"],
        ["validate"],
    ):
        code, _, err = run(capsys, *argv, "--config-store", url)
        assert code == 2, argv
        assert err.startswith("sailplane: etcd is unreachable (127.0.0.1:1: unavailable; ")
        assert "127.0.0.1:2" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    code, _, err = run(capsys, "get", "--config-store", "http://x:1")
    assert code == 2 and "not an etcd URL" in err
