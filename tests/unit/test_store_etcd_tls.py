"""etcd over TLS (`etcds://...?ca=&cert=&key=`), against a real etcd with
--client-cert-auth: the store and the CLI work with the right files; a
client without a certificate, one that does not trust etcd's CA, and a
plaintext client are refused with a clear error, never a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from sailplane.cli import main
from sailplane.errors import StoreUnavailable
from sailplane.store import open_etcd, parse_url
from sailplane.store.etcdclient import EtcdClient
from sailplane.store.etcdpb import rpc_pb2
from tests.support.etcd import Etcd, make_etcd_certs
from tests.unit.test_config_serve import REGISTRY, split


def test_url_with_tls_files() -> None:
    url = parse_url("etcds://a:1,b:2/mesh?ca=/c/ca.pem&cert=/c/me.pem&key=/c/me-key.pem")
    assert url.endpoints == (("a", 1), ("b", 2)) and url.prefix == "/mesh"
    assert url.tls is not None and url.tls.key == Path("/c/me-key.pem")
    assert str(url) == "etcds://a:1,b:2/mesh?ca=/c/ca.pem&cert=/c/me.pem&key=/c/me-key.pem"
    assert parse_url("etcds://a:1").tls is not None  # the system's roots, no client cert
    for bad, why in (
        ("etcd://a:1?ca=/x", "for etcds://"),
        ("etcds://a:1?cert=/x", "go together"),
        ("etcds://a:1?ca=/x&ca=/y", "once"),
        ("etcds://a:1?pin=abc", "give ca=FILE"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_url(bad)
    with pytest.raises(ValueError, match=r"cannot read /nonexistent/ca\.pem"):
        open_etcd("etcds://127.0.0.1:1?ca=/nonexistent/ca.pem", 1 << 20)


def test_the_cli_and_the_store_over_tls(
    etcd_tls: Etcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "registry.yaml").write_text(REGISTRY)
    (mesh / "vs.yaml").write_text(split(90, 10))
    url = etcd_tls.url()
    assert main(["apply", "-f", str(mesh), "--config-store", url]) == 0
    assert main(["get", "virtualservice", "--config-store", url]) == 0
    assert "weight: 90" in capsys.readouterr().out
    contents = open_etcd(url, 1 << 20).read()
    assert any("VirtualService/default/backend" in name for name, _ in contents.texts)


def test_the_lies_are_refused(etcd_tls: Etcd, tmp_path: Path) -> None:
    assert etcd_tls.certs is not None
    endpoint = [("127.0.0.1", etcd_tls.client_port)]
    stranger = make_etcd_certs(tmp_path / "other")  # another CA altogether
    refused = {
        "no client certificate": EtcdClient(endpoint, 2.0, etcd_tls.certs.tls(client=False)),
        "a CA that did not sign etcd's": EtcdClient(endpoint, 2.0, stranger.tls()),
        "a client certificate of another CA": EtcdClient(
            endpoint, 2.0, stranger.tls(ca=etcd_tls.certs.ca)
        ),
        "plaintext": EtcdClient(endpoint, 2.0),
    }
    for what, client in refused.items():
        with pytest.raises(StoreUnavailable, match="unreachable"):
            client.range(rpc_pb2.RangeRequest(key=b"/"))
        client.close()
        assert what  # each is refused, none hangs past the call timeout
    assert etcd_tls.client().range(rpc_pb2.RangeRequest(key=b"/")).header.revision >= 1
