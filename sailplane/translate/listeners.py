"""Listeners: the outbound HTTP proxy listener and one inbound listener per
workload port (Istio's "bind" mode: no iptables, no privileges)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.v3 import range_pb2
from google.protobuf.message import Message

from sailplane.model.authz import AuthorizationPolicy
from sailplane.model.hosts import is_ip_address
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Protocol
from sailplane.model.sidecar import IngressTLS
from sailplane.model.telemetry import WorkloadTelemetry
from sailplane.translate import names
from sailplane.translate.authz import http_rbac_filters, network_rbac_filters
from sailplane.translate.common import (
    HCM_FILTER,
    TCP_PROXY,
    ads_config_source,
    pack,
    socket_address,
)
from sailplane.translate.egress import BLACKHOLE_CLUSTER, forward_proxy_filter
from sailplane.translate.httproute import CORS_FILTER, FAULT_FILTER
from sailplane.translate.loopguard import with_loop_guards
from sailplane.translate.mtls import inbound_filter_chains, sniffed_filter_chains
from sailplane.translate.proxy import Proxy
from sailplane.translate.sidecar_ingress import ingress_tls_socket
from sailplane.translate.telemetry import decorate_http, decorate_tcp

HCM = hcm_pb2.HttpConnectionManager


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
    )


def outbound_http_filters() -> list[hcm_pb2.HttpFilter]:
    """As Istio's outbound chain: CORS and fault injection (both idle unless a
    route's typed_per_filter_config turns them on), then the router."""
    return [
        hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=pack(cors_pb2.Cors())),
        hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
        forward_proxy_filter(),
        _router(),
    ]


def network_filter(name: str, config: Message) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(name=name, typed_config=pack(config))


def tcp_proxy_chain(
    name: str,
    cluster: str,
    proxy: Proxy,
    telemetry: WorkloadTelemetry | None,
    outbound: bool,
    port: int | None = None,
) -> listener_components_pb2.FilterChain:
    """A filter chain that tcp-proxies to ``cluster`` (on destination
    ``port`` only, when given): the capture listeners' pass-through,
    catch-all and black-hole chains."""
    tcp = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
    decorate_tcp(tcp, proxy, telemetry, outbound=outbound)
    chain = listener_components_pb2.FilterChain(name=name, filters=[network_filter(TCP_PROXY, tcp)])
    if port is not None:
        chain.filter_chain_match.destination_port.value = port
    return chain


def blackhole_chain(
    name: str, port: int, proxy: Proxy, telemetry: WorkloadTelemetry | None, outbound: bool
) -> listener_components_pb2.FilterChain:
    """Istio's ``virtualInbound-blackhole`` / ``virtualOutbound-blackhole``:
    a connection whose original destination is the capture port itself
    would be handed to that port again and again; it is closed at once."""
    return tcp_proxy_chain(name, BLACKHOLE_CLUSTER, proxy, telemetry, outbound, port)


def http_connection_manager(
    stat_prefix: str, route_name: str, extra_filters: Sequence[hcm_pb2.HttpFilter] = ()
) -> hcm_pb2.HttpConnectionManager:
    """An HCM that takes its routes over ADS and accepts absolute-form request
    targets (``GET http://inventory:8080/items``), as clients using a proxy send."""
    return HCM(
        stat_prefix=stat_prefix,
        codec_type=HCM.AUTO,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=route_name),
        http_filters=[*extra_filters, *outbound_http_filters()],
        http_protocol_options=protocol_pb2.Http1ProtocolOptions(allow_absolute_url={"value": True}),
    )


def build_outbound_listener(
    proxy: Proxy, telemetry: WorkloadTelemetry | None = None
) -> listener_pb2.Listener:
    """The app's ``HTTP_PROXY``: accepts absolute-form requests
    (``GET http://inventory:8080/items``) and origin-form with a Host header,
    and routes by Host through RDS."""
    address, port = proxy.outbound_address
    name = names.listener_name(address, port)
    manager = http_connection_manager(f"outbound_{name}", names.OUTBOUND_ROUTE_NAME)
    # CONNECT reaches routing only where a route says connect_matcher: the
    # VirtualService tls rules (connect.py); elsewhere it gets a 404.
    manager.upgrade_configs.append(HCM.UpgradeConfig(upgrade_type="CONNECT"))
    decorate_http(manager, proxy, telemetry, outbound=True)
    return listener_pb2.Listener(
        name=name,
        address=socket_address(address, port),
        traffic_direction=2,  # OUTBOUND
        filter_chains=[
            listener_components_pb2.FilterChain(filters=[network_filter(HCM_FILTER, manager)])
        ],
    )


def inbound_ports(proxy: Proxy, mesh: MeshConfig) -> dict[int, Protocol]:
    """Workload port -> protocol, over every service that selects this workload."""
    ports: dict[int, Protocol] = {}
    endpoint = proxy.workload.endpoint()
    for service in mesh.services_of(proxy.workload):
        for port in service.ports:
            workload_port = endpoint.port_for(port)
            known = ports.get(workload_port)
            if known is None or known is Protocol.UNKNOWN:
                ports[workload_port] = port.protocol
    return dict(sorted(ports.items()))


def serves_http(protocol: Protocol) -> bool:
    """Inbound ports of unknown protocol are served as HTTP, as Istio's
    sniffing would mostly decide; they get an HCM and an inbound route."""
    return protocol.is_http or protocol is Protocol.UNKNOWN


def bind_address(address: str) -> str:
    """Listeners bind IP addresses; a workload named by DNS (a compose service)
    binds every address of its own network namespace instead."""
    return address if is_ip_address(address) else "0.0.0.0"


def inbound_chains(
    proxy: Proxy,
    workload_port: int,
    protocol: Protocol,
    mtls_mode: str = "PERMISSIVE",
    trust_domain: str = "cluster.local",
    policies: Sequence[AuthorizationPolicy] = (),
    telemetry: WorkloadTelemetry | None = None,
    tls: IngressTLS | None = None,
    jwt: Sequence[hcm_pb2.HttpFilter] = (),
    sniff: bool = False,
) -> tuple[list[listener_components_pb2.FilterChain], bool]:
    """The filter chains of one inbound port, and whether they need a TLS
    inspector: the port's PeerAuthentication mode decides plaintext / mTLS
    (see mtls.py); a Sidecar ingress's ``tls`` terminates TLS where that
    mode is DISABLE (sidecar_ingress.py). Shared by the bound listener of
    proxy mode and the port's chains in virtualInbound (transparent_inbound.py).

    ``sniff`` (virtualInbound, where every connection is captured): a port
    of unknown protocol gets Istio's sniffed chains, HTTP and TCP side by
    side (mtls.sniffed_filter_chains; the listener adds http_inspector).
    Proxy mode's bound listener serves it as HTTP (serves_http): it faces
    the clients of the HTTP proxy.

    HTTP ports take their routes, and with them their AuthorizationPolicies,
    over RDS (``inbound|PORT||``, see routes.build_inbound_route_config):
    their chains do not change with policy. Plain TCP ports have no
    routes: their network RBAC is in the chain, so a policy change there
    reaches new connections only (existing ones drain)."""
    cluster = names.inbound_cluster_name(workload_port)
    http = serves_http(protocol)

    def filters(tls: bool, http: bool = http) -> list[listener_components_pb2.Filter]:
        if not http:
            tcp = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
            decorate_tcp(tcp, proxy, telemetry, outbound=False)
            return [
                *network_rbac_filters(list(policies), f"inbound_{workload_port}"),
                network_filter(TCP_PROXY, tcp),
            ]
        manager = HCM(
            stat_prefix=f"inbound_{workload_port}",
            codec_type=HCM.AUTO,
            rds=hcm_pb2.Rds(
                config_source=ads_config_source(),
                route_config_name=names.inbound_route_name(workload_port),
            ),
            # jwt_authn (RequestAuthentication) verifies a token before RBAC
            # reads its claims (translate/jwt.py).
            http_filters=[*jwt, *http_rbac_filters(), _router()],
            # As Istio: the app learns the caller's SPIFFE identity; a header
            # a caller sent itself is never trusted.
            forward_client_cert_details=HCM.SANITIZE_SET,
            set_current_client_cert_details=HCM.SetCurrentClientCertDetails(uri=True),
        )
        decorate_http(manager, proxy, telemetry, outbound=False)
        return [network_filter(HCM_FILTER, manager)]

    if tls is not None and mtls_mode == "DISABLE":
        chain = listener_components_pb2.FilterChain(
            name="tls", filters=filters(True), transport_socket=ingress_tls_socket(tls, http)
        )
        return [chain], False
    if sniff and protocol is Protocol.UNKNOWN:
        chains = sniffed_filter_chains(
            mtls_mode, trust_domain, lambda http, tls: filters(tls, http)
        )
        return chains, mtls_mode != "DISABLE"
    return inbound_filter_chains(mtls_mode, trust_domain, filters, plain_tls=not http)


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    return listener_components_pb2.ListenerFilter(
        name="envoy.filters.listener.tls_inspector",
        typed_config=pack(tls_inspector_pb2.TlsInspector()),
    )


def http_inspector(
    ports: Sequence[int] = (),
) -> listener_components_pb2.ListenerFilter:
    """Envoy's http_inspector: reports http/1.0, http/1.1 or h2c as the
    connection's application protocol, for chains that sniff. Given
    ``ports``, it runs for connections to those destination ports only
    (Istio's buildHTTPInspector: the others never wait for it)."""
    inspector = listener_components_pb2.ListenerFilter(
        name="envoy.filters.listener.http_inspector",
        typed_config=pack(http_inspector_pb2.HttpInspector()),
    )
    predicate = listener_components_pb2.ListenerFilterChainMatchPredicate
    rules = [
        predicate(destination_port_range=range_pb2.Int32Range(start=p, end=p + 1))
        for p in sorted(set(ports))
    ]
    if len(rules) == 1:
        inspector.filter_disabled.not_match.CopyFrom(rules[0])
    elif rules:
        inspector.filter_disabled.not_match.or_match.rules.extend(rules)
    return inspector


def build_inbound_listener(
    proxy: Proxy,
    workload_port: int,
    protocol: Protocol,
    mtls_mode: str = "PERMISSIVE",
    trust_domain: str = "cluster.local",
    policies: Sequence[AuthorizationPolicy] = (),
    telemetry: WorkloadTelemetry | None = None,
    tls: IngressTLS | None = None,
    jwt: Sequence[hcm_pb2.HttpFilter] = (),
) -> listener_pb2.Listener:
    """Bind the workload address on its port and forward to the app through
    :func:`inbound_chains` (proxy mode: Istio's NONE interception)."""
    address = bind_address(proxy.workload.address)
    name = names.listener_name(address, workload_port)
    chains, inspect = inbound_chains(
        proxy, workload_port, protocol, mtls_mode, trust_domain, policies, telemetry, tls, jwt
    )
    # Refuse the proxy's own connections to its app, come back here (loopguard.py).
    chains = with_loop_guards(chains, workload_port)
    listener = listener_pb2.Listener(
        name=name,
        address=socket_address(address, workload_port),
        traffic_direction=1,  # INBOUND
        filter_chains=chains,
        # DEFAULT, deliberately: drain on modification and also on
        # /healthcheck/fail, so a workload being shut down sheds its inbound
        # connections (Envoy's advice: MODIFY_ONLY is for egress listeners).
        # Policy never waits for a drain: it travels over RDS (see above).
        drain_type=listener_pb2.Listener.DEFAULT,
    )
    if inspect:
        listener.listener_filters.append(tls_inspector())
    return listener
