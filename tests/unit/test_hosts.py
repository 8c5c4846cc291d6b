"""Host names as Istio resolves them, and sailplane's one ``name.ns`` exception.

Istio (pilot/pkg/model/config.go ``ResolveShortnameToFQDN``) expands only a
name without a dot; ``httpbin.org``, ``sni-proxy.local`` and ``bookinfo.com``
are hosts as written. sailplane reads ``name.ns`` (and ``name.ns.svc``) as
the Service ``name.ns.svc.cluster.local`` only when ``ns`` is a namespace of
the mesh and no ServiceEntry declares the name as written, and says so.
"""

from __future__ import annotations

import textwrap

import pytest

from sailplane.config.incremental import DocumentCache
from sailplane.config.loader import LoadResult, load_texts
from sailplane.model.hosts import namespace_shorthand, resolve_host
from sailplane.model.source import Severity
from sailplane.translate import build_routes, proxy_from_node


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("reviews", "reviews.default.svc.cluster.local"),
        ("httpbin.org", "httpbin.org"),
        ("sni-proxy.local", "sni-proxy.local"),
        ("reviews.prod", "reviews.prod"),
        ("reviews.prod.svc", "reviews.prod.svc"),
        ("reviews.prod.svc.cluster.local", "reviews.prod.svc.cluster.local"),
        ("*", "*"),
        ("*.example.com", "*.example.com"),
        ("10.0.0.1", "10.0.0.1"),
        ("::1", "::1"),  # no dot, and still no expansion: an IP address
    ],
    ids=str,
)
def test_resolve_host_expands_only_names_without_a_dot(host: str, expected: str) -> None:
    assert resolve_host(host, "default") == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("weather-backend.secure", "weather-backend.secure.svc.cluster.local"),
        ("weather-backend.secure.svc", "weather-backend.secure.svc.cluster.local"),
        ("httpbin.org", None),  # "org" is no namespace of the mesh
        ("a.b.secure", None),
        ("*.secure", None),
        ("weather-backend", None),
        (".secure", None),
    ],
    ids=str,
)
def test_namespace_shorthand_needs_a_namespace_of_the_mesh(host: str, expected: str | None) -> None:
    assert namespace_shorthand(host, {"default", "secure"}) == expected


REGISTRY = """\
apiVersion: v1
kind: Service
metadata: {name: weather-backend, namespace: secure}
spec:
  selector: {app: weather-backend}
  ports: [{name: http, port: 5000}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin-ext}
spec:
  hosts: [httpbin.org]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
"""


def load(text: str) -> LoadResult:
    return load_texts([("registry.yaml", REGISTRY), ("case.yaml", textwrap.dedent(text))])


def test_the_talks_name_namespace_host_is_the_service_and_says_so() -> None:
    result = load(
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: mtls-mutual}
        spec:
          host: weather-backend.secure
          trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
        """
    )
    assert result.mesh is not None
    (rule,) = result.mesh.destination_rules
    assert rule.host == "weather-backend.secure.svc.cluster.local"
    assert [d.format() for d in result.diagnostics] == [
        "case.yaml:6:9: info: DestinationRule default/mtls-mutual: spec.host: host "
        "'weather-backend.secure' is read as 'weather-backend.secure.svc.cluster.local' (its "
        "namespace is in the mesh); Istio reads a dotted host literally: write "
        "'weather-backend.secure.svc.cluster.local' to mean the same there"
    ]


def test_a_dotted_name_whose_suffix_is_no_namespace_is_taken_as_written() -> None:
    # The lie: "prod" looks like a namespace, but the mesh has none of that name.
    result = load(
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec: {host: reviews.prod}
        """
    )
    assert result.mesh is not None
    assert [r.host for r in result.mesh.destination_rules] == ["reviews.prod"]
    assert [d.message for d in result.diagnostics] == [
        "no Service or ServiceEntry defines host 'reviews.prod'; this rule applies to nothing"
    ]


def test_a_service_entry_declaring_the_dotted_name_wins_over_the_namespace() -> None:
    entry = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: literal}
        spec:
          hosts: [weather-backend.secure]
          location: MESH_EXTERNAL
          resolution: DNS
          ports: [{number: 80, name: http, protocol: HTTP}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: literal}
        spec:
          hosts: [weather-backend.secure]
          http: [{route: [{destination: {host: weather-backend.secure}}]}]
        """
    result = load(entry)
    assert result.mesh is not None
    assert "weather-backend.secure" in result.mesh.services_by_host
    (vs,) = result.mesh.virtual_services
    assert vs.hosts == ("weather-backend.secure",)
    assert vs.http[0].route[0].destination.host == "weather-backend.secure"
    assert result.diagnostics == ()


def test_dotted_external_hosts_route_as_written() -> None:
    # Corpus docs-traffic/15: rejected before, as httpbin.org.svc.cluster.local.
    result = load(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: httpbin-ext}
        spec:
          hosts: [httpbin.org]
          http:
          - timeout: 3s
            route:
            - destination: {host: httpbin.org}
              weight: 100
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: bookinfo}
        spec:
          hosts: [bookinfo.com]
          http: [{route: [{destination: {host: httpbin.org}}]}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: httpbin}
        spec: {host: httpbin.org, trafficPolicy: {tls: {mode: SIMPLE}}}
        """
    )
    assert result.mesh is not None
    assert result.diagnostics == ()
    assert sorted(h for vs in result.mesh.virtual_services for h in vs.hosts) == [
        "bookinfo.com",
        "httpbin.org",
    ]
    rule = result.mesh.destination_rule_for("httpbin.org")
    assert rule is not None and rule.name == "httpbin"


def test_a_virtual_service_without_routes_is_rejected_as_istio_rejects_it() -> None:
    result = load(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: empty}
        spec: {hosts: [httpbin.org]}
        """
    )
    assert [d.format() for d in result.errors] == [
        "case.yaml:5:7: IST0106: VirtualService default/empty: spec: "
        "http, tcp or tls must be provided in virtual service"
    ]
    assert result.mesh is not None and result.mesh.virtual_services == ()


@pytest.mark.parametrize("written", ["https", "Https", "HTTPS"])
def test_gateway_protocols_ignore_case(written: str) -> None:
    result = load(
        f"""
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {{name: gw}}
        spec:
          selector: {{istio: ingressgateway}}
          servers:
          - port: {{number: 443, name: https, protocol: {written}}}
            hosts: ["*"]
            tls: {{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}}
        """
    )
    assert result.mesh is not None
    (gateway,) = result.mesh.gateways
    assert gateway.servers[0].protocol == "HTTPS"
    assert not result.errors


def test_an_unknown_gateway_protocol_is_still_an_error() -> None:
    result = load(
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          selector: {istio: ingressgateway}
          servers: [{port: {number: 80, name: web, protocol: htp}, hosts: ["*"]}]
        """
    )
    assert [d.severity for d in result.errors] == [Severity.ERROR]
    assert "unknown value 'htp'" in result.errors[0].message


def test_a_dotted_virtual_service_host_matches_the_gateway_host_as_written() -> None:
    # Corpus docs-concepts/03: before, bookinfo.com became
    # bookinfo.com.svc.cluster.local and matched no gateway host.
    result = load(
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: gw}
        spec: {address: 10.0.0.9, labels: {istio: ingressgateway}, ports: {http: 8080}}
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          selector: {istio: ingressgateway}
          servers: [{port: {number: 80, name: http, protocol: http}, hosts: [bookinfo.com]}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: bookinfo}
        spec:
          hosts: [bookinfo.com]
          gateways: [gw]
          http: [{route: [{destination: {host: httpbin.org}}]}]
        """
    )
    assert result.mesh is not None and not result.errors
    proxy = proxy_from_node("gw.default", {}, result.mesh)
    (config,) = build_routes(result.mesh, proxy)
    (vhost,) = config.virtual_hosts
    assert "bookinfo.com" in vhost.domains
    assert vhost.routes[0].route.cluster == "outbound|80||httpbin.org"


def test_an_unchanged_rule_is_read_again_when_its_namespace_appears() -> None:
    """Reads are remembered by object from one load to the next (the
    incremental loader hands unchanged objects on): only while the mesh's
    namespaces and declared hosts are the same."""
    cache = DocumentCache()
    rule = (
        "case.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: reviews}\nspec: {host: reviews.prod}\n",
    )
    prod = (
        "prod.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: prod}\n"
        "spec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n",
    )
    hosts = []
    for texts in ([rule], [rule, prod], [rule]):
        result = load_texts([("registry.yaml", REGISTRY), *texts], cache=cache)
        assert result.mesh is not None
        hosts.append([r.host for r in result.mesh.destination_rules])
    assert hosts == [
        ["reviews.prod"],
        ["reviews.prod.svc.cluster.local"],  # the namespace exists now
        ["reviews.prod"],
    ]
