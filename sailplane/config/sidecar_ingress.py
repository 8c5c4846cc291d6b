"""Parse Sidecar ``ingress``: explicit inbound listeners, checked as Istio's
validation checks them (pkg/config/validation, ValidateSidecar).

``defaultEndpoint`` says where the sidecar forwards: ``127.0.0.1:PORT`` or
``0.0.0.0:PORT`` (and their IPv6 forms) both name the app, which sailplane
reaches at its own local address (``sailplane.app_address``), on PORT;
``unix:///path`` a unix socket; unset, the app on the listener's port.
``tls`` terminates TLS at the sidecar with certificate files (SIMPLE, or
MUTUAL with a client CA): Istio applies it only where the port's
PeerAuthentication mode is DISABLE, as translation does.
"""

from __future__ import annotations

from sailplane.config.reader import ObjectReader
from sailplane.model.registry import Protocol
from sailplane.model.sidecar import IngressTLS, SidecarIngress
from sailplane.model.source import FieldPath

_APP_HOSTS = ("127.0.0.1", "0.0.0.0", "::1", "::", "")
_ISTIO_ERRORS = {
    "subjectAltNames": "subjectAltNames is not supported in ingress tls",
    "httpsRedirect": "httpsRedirect is not supported",
    "credentialName": "credentialName is not currently supported",
    "credentialNames": "credentialNames is not currently supported",
    "tlsCertificates": "tls_certificates is not currently supported",
}


def parse_ingress(r: ObjectReader) -> tuple[SidecarIngress, ...]:
    found: list[SidecarIngress] = []
    seen: set[int] = set()
    for i, _ in enumerate(r.sequence(("spec", "ingress"))):
        path: FieldPath = ("spec", "ingress", i)
        port = r.port((*path, "port", "number"), required=True)
        if r.has((*path, "port", "targetPort")):
            r.report(
                (*path, "port", "targetPort"),
                "targetPort has no impact on Sidecars",
                code="IST0106",
            )
        if port is None:
            continue
        if port in seen:
            r.report(
                (*path, "port", "number"),
                f"sidecar: ports on IP bound listeners must be unique ({port} is repeated)",
                code="IST0106",
            )
            continue
        seen.add(port)
        name = r.string((*path, "port", "name")) or ""
        protocol = Protocol.from_port(r.string((*path, "port", "protocol")), name)
        endpoint_port, unix_path = _endpoint(r, (*path, "defaultEndpoint"))
        found.append(
            SidecarIngress(
                port=port,
                protocol=protocol,
                name=name,
                endpoint_port=endpoint_port,
                unix_path=unix_path,
                tls=_tls(r, (*path, "tls")),
            )
        )
    return tuple(found)


def _endpoint(r: ObjectReader, path: FieldPath) -> tuple[int, str]:
    text = r.string(path)
    if not text:
        return 0, ""
    if text.startswith("unix://"):
        socket = text.removeprefix("unix://")
        if not socket.startswith("/"):
            r.report(path, f"{text!r}: a unix address needs an absolute path", code="IST0106")
        return 0, socket
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or host not in _APP_HOSTS:
        r.report(
            path,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,"
            "[::1]:port,[::]:port,unix://filepath or unset",
            code="IST0106",
        )
        return 0, ""
    if not port.isdigit() or not 0 < int(port) < 65536:
        r.report(path, f"sidecar: defaultEndpoint port ({port}) is not a port", code="IST0106")
        return 0, ""
    return int(port), ""


def _tls(r: ObjectReader, path: FieldPath) -> IngressTLS | None:
    if not r.has(path):
        return None
    for field, message in _ISTIO_ERRORS.items():
        if r.has((*path, field)):
            r.report((*path, field), f"sidecar: {message}", code="IST0106")
    mode = r.enum(
        (*path, "mode"),
        ("PASSTHROUGH", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "AUTO_PASSTHROUGH", "OPTIONAL_MUTUAL"),
        "PASSTHROUGH",
    )
    if mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
        r.report(
            (*path, "mode"), f"sidecar: ingress tls mode {mode} is not supported", code="IST0106"
        )
        return None
    if mode not in ("SIMPLE", "MUTUAL"):
        r.report(
            (*path, "mode"),
            f"ingress tls mode {mode} is not supported by sailplane (SIMPLE or MUTUAL)",
            code="IST0106",
        )
        return None
    certificate = r.string((*path, "serverCertificate"))
    key = r.string((*path, "privateKey"))
    ca = r.string((*path, "caCertificates")) or ""
    if not certificate or not key:
        r.report(
            path, f"{mode} ingress tls needs serverCertificate and privateKey files", code="IST0106"
        )
        return None
    if mode == "MUTUAL" and not ca:
        r.report(
            path, "MUTUAL ingress tls needs caCertificates to verify clients with", code="IST0106"
        )
        return None
    return IngressTLS("MUTUAL" if mode == "MUTUAL" else "SIMPLE", certificate, key, ca)
