"""Parse ``Gateway`` (istio.io/latest/docs/reference/config/networking/gateway)."""

from __future__ import annotations

from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.reader import ObjectReader, host_problem
from sailplane.model.networking import SERVER_TLS_MODES, Gateway, GatewayServer, ServerTLS

PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS", "MONGO")


def _split_host(host: str, namespace: str) -> tuple[str, str]:
    """Gateway server hosts are ``[namespace/]host``; ``./host`` is the Gateway's
    own namespace; no namespace means any (``*/``)."""
    if "/" in host:
        ns, _, name = host.partition("/")
        return (namespace if ns == "." else ns), name
    return "*", host


def parse_gateway(r: ObjectReader) -> Gateway | None:
    check_declared_fields(r)
    servers = []
    for i, _ in enumerate(r.sequence(("spec", "servers"), required=True)):
        base = ("spec", "servers", i)
        number = r.port((*base, "port", "number"), required=True)
        protocol = r.enum((*base, "port", "protocol"), PROTOCOLS, "HTTP")
        hosts = []
        for j, raw in enumerate(r.sequence((*base, "hosts"), required=True)):
            host = str(raw)
            problem = host_problem(host.rpartition("/")[2])
            if problem:
                r.report((*base, "hosts", j), problem, code="IST0106")
            else:
                hosts.append(host)
        tls = None
        if r.mapping((*base, "tls")) is not None:
            t = (*base, "tls")
            tls = ServerTLS(
                mode=r.enum((*t, "mode"), SERVER_TLS_MODES, "SIMPLE"),
                credential_name=r.string((*t, "credentialName")) or "",
                server_certificate=r.string((*t, "serverCertificate")) or "",
                private_key=r.string((*t, "privateKey")) or "",
                ca_certificates=r.string((*t, "caCertificates")) or "",
                https_redirect=bool(r.boolean((*t, "httpsRedirect"))),
            )
        if (
            protocol in ("HTTPS", "TLS")
            and (tls is None or tls.mode != "PASSTHROUGH")
            and (tls is None or not (tls.server_certificate or tls.credential_name))
        ):
            r.report(
                base,
                f"{protocol} servers need tls with serverCertificate/privateKey or "
                "credentialName (credentialName needs the built-in CA; not supported yet)",
                code="IST0106",
            )
        if number is not None:
            servers.append(
                GatewayServer(
                    port=number,
                    port_name=r.string((*base, "port", "name")) or "",
                    protocol=protocol,
                    hosts=tuple(_split_host(h, r.namespace) for h in hosts),
                    tls=tls,
                    name=r.string((*base, "name")) or "",
                )
            )
    if r.failed:
        return None
    return Gateway(r.name, r.namespace, r.source, r.labels(("spec", "selector")), tuple(servers))
