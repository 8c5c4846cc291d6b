"""Parse ``Gateway`` (istio.io/latest/docs/reference/config/networking/gateway)."""

from __future__ import annotations

from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.reader import ObjectReader, host_problem
from sailplane.model.networking import SERVER_TLS_MODES, Gateway, GatewayServer, ServerTLS
from sailplane.model.source import FieldPath, Severity

PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS", "MONGO")


def _split_host(host: str, namespace: str) -> tuple[str, str]:
    """Gateway server hosts are ``[namespace/]host``; ``./host`` is the Gateway's
    own namespace; no namespace means any (``*/``)."""
    if "/" in host:
        ns, _, name = host.partition("/")
        return (namespace if ns == "." else ns), name
    return "*", host


def _check_tls(r: ObjectReader, path: FieldPath, tls: ServerTLS) -> None:
    """Istio's validateTLSOptions: one certificate source; a certificate for
    SIMPLE and MUTUAL (MUTUAL from files also needs the CA); none for
    ISTIO_MUTUAL; passthrough modes ignore certificates (a warning)."""
    files = bool(tls.server_certificate or tls.private_key)
    if tls.mode == "ISTIO_MUTUAL":
        if files or tls.ca_certificates or tls.credential_name:
            r.report(
                path,
                "ISTIO_MUTUAL uses the gateway's mesh identity; it cannot have "
                "serverCertificate, privateKey, caCertificates or credentialName",
                code="IST0106",
            )
        return
    if tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
        if files or tls.ca_certificates or tls.credential_name:
            r.report(
                path,
                f"{tls.mode} mode does not use certificates, they will be ignored",
                Severity.WARNING,
            )
        return
    if files and tls.credential_name:
        r.report(
            path,
            "only one of credentialName and serverCertificate/privateKey should be specified",
            code="IST0106",
        )
    elif tls.credential_name:
        return  # fetched from the Secret (Istio: "credentials are fetched remotely")
    elif not (tls.server_certificate and tls.private_key):
        r.report(
            path,
            f"{tls.mode} needs credentialName, or serverCertificate and privateKey",
            code="IST0106",
        )
    elif tls.mode in ("MUTUAL", "OPTIONAL_MUTUAL") and not tls.ca_certificates:
        r.report(path, f"{tls.mode} needs caCertificates", code="IST0106")


def parse_gateway(r: ObjectReader) -> Gateway | None:
    check_declared_fields(r)
    servers = []
    for i, _ in enumerate(r.sequence(("spec", "servers"), required=True)):
        base = ("spec", "servers", i)
        number = r.port((*base, "port", "number"), required=True)
        # Istio's protocol.Parse ignores case: "https" is HTTPS.
        path = (*base, "port", "protocol")
        written = r.raw(path)
        folded = written.upper() if isinstance(written, str) else ""
        protocol = folded if folded in PROTOCOLS else r.enum(path, PROTOCOLS, "HTTP")
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
        if tls is not None:
            _check_tls(r, (*base, "tls"), tls)
        elif protocol in ("HTTPS", "TLS"):
            r.report(
                base,
                f"{protocol} servers need tls (a mode, and a certificate unless it passes "
                "TLS through)",
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
