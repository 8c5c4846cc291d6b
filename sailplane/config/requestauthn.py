"""Parse ``RequestAuthentication`` (istio.io/latest/docs/reference/config/
security/request_authentication), checked as Istio's validation does
(pkg/config/validation ValidateRequestAuthentication, validateJwtRule).

Keys come inline (``jwks``) or from ``jwksUri``, which the proxy fetches
itself through the cluster of the URI's host (see translate/jwt.py): the
control plane never fetches a URL it read from configuration. A rule with
neither is accepted, as Istio does, but verifies no token (Istio's istiod
would discover the keys through the issuer's OpenID configuration).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from sailplane.config.authorization import target_refs
from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.reader import ObjectReader
from sailplane.config.yamldoc import excerpt
from sailplane.model.mesh import MeshConfig
from sailplane.model.security import JwtHeader, JwtRule, RequestAuthentication
from sailplane.model.source import Diagnostic, FieldPath, Severity, format_field_path

_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")  # Istio's validStrictHeaderNameRegex


def _strings(r: ObjectReader, path: FieldPath, what: str) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(r.sequence(path)):
        if isinstance(item, (dict, list)) or item is None or item == "":
            r.report((*path, i), f"{what} must be a non-empty string", code="IST0106")
            continue
        out.append(str(item))
    return tuple(out)


def _jwks_keys(text: str) -> list[dict[str, Any]] | str:
    """The keys of ``text``, a JWKS (or one JWK); or why it is not one, as
    Istio's jwk.Parse would refuse it. Never quotes the keys."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"jwks is not valid JSON ({exc.msg} at line {exc.lineno})"
    keys = data.get("keys") if isinstance(data, dict) and "keys" in data else [data]
    if not isinstance(keys, list) or not keys:
        return 'jwks must be a JSON Web Key Set: {"keys": [...]}'
    for i, key in enumerate(keys):
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            return f'jwks key at index {i} has no "kty"'
    return keys


def _private_keys(keys: list[dict[str, Any]]) -> list[int]:
    """Indexes of keys holding private material (Istio: warnPrivateJwksKeys)."""
    return [i for i, k in enumerate(keys) if "d" in k or k.get("kty") == "oct"]


def jwks_uri_problem(uri: str) -> str:
    """Istio's ParseJwksURI: http or https, with a host."""
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        return f"jwksUri {excerpt(uri, 80)!r} is not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"jwksUri {excerpt(uri, 80)!r}: URI scheme {parts.scheme!r} is not supported"
    if not parts.hostname:
        return f"jwksUri {excerpt(uri, 80)!r} has no host"
    return ""


def _rule(r: ObjectReader, path: FieldPath) -> JwtRule:
    issuer = r.string((*path, "issuer")) or ""
    jwks = r.string((*path, "jwks")) or ""
    jwks_uri = r.string((*path, "jwksUri")) or ""
    if not issuer and not jwks_uri:
        r.report((*path, "issuer"), "issuer or jwksUri must be set", code="IST0106")
    if jwks and jwks_uri:
        r.report((*path, "jwks"), "only one of jwks or jwksUri can be set", code="IST0106")
    if jwks_uri and (problem := jwks_uri_problem(jwks_uri)):
        r.report((*path, "jwksUri"), problem, code="IST0106")
    if jwks:
        keys = _jwks_keys(jwks)
        if isinstance(keys, str):
            r.report((*path, "jwks"), keys, code="IST0106")
        else:
            for index in _private_keys(keys):
                r.report(
                    (*path, "jwks"),
                    f"jwks key at index {index} contains private key material; only "
                    "public keys are used for verification",
                    Severity.WARNING,
                )
    elif not jwks_uri and issuer:
        r.report(
            (*path, "issuer"),
            "no jwks or jwksUri: Istio would discover the keys through the issuer's "
            "OpenID configuration, which sailplane does not fetch; every token of this "
            "issuer is rejected (401) until jwks or jwksUri is set",
            Severity.WARNING,
        )
    headers = []
    for i, _ in enumerate(r.sequence((*path, "fromHeaders"))):
        name = r.string((*path, "fromHeaders", i, "name"))
        if not name:
            r.report(
                (*path, "fromHeaders", i, "name"),
                "location header name must be a non-empty string",
                code="IST0106",
            )
            continue
        headers.append(JwtHeader(name, r.string((*path, "fromHeaders", i, "prefix")) or ""))
    claims = []
    for i, _ in enumerate(r.sequence((*path, "outputClaimToHeaders"))):
        base = (*path, "outputClaimToHeaders", i)
        claim, header = r.string((*base, "claim")), r.string((*base, "header"))
        if not claim or not header:
            r.report(base, "claim and header must be non-empty strings", code="IST0106")
        elif not _HEADER_NAME.match(header):
            r.report((*base, "header"), f"{header!r} is not a valid header name", code="IST0106")
        else:
            claims.append((claim, header))
    payload_header = r.string((*path, "outputPayloadToHeader")) or ""
    if payload_header and not _HEADER_NAME.match(payload_header):
        r.report(
            (*path, "outputPayloadToHeader"),
            f"{payload_header!r} is not a valid header name",
            code="IST0106",
        )
    timeout = r.duration((*path, "timeout"))
    if timeout is not None and timeout <= 0:
        r.report((*path, "timeout"), "timeout must be positive", code="IST0106")
    return JwtRule(
        issuer=issuer,
        audiences=_strings(r, (*path, "audiences"), "an audience"),
        jwks=jwks,
        jwks_uri=jwks_uri,
        from_headers=tuple(headers),
        from_params=_strings(r, (*path, "fromParams"), "a location query"),
        from_cookies=_strings(r, (*path, "fromCookies"), "a cookie name"),
        forward_original_token=bool(r.boolean((*path, "forwardOriginalToken"))),
        output_payload_to_header=payload_header,
        output_claim_to_headers=tuple(claims),
        space_delimited_claims=_strings(r, (*path, "spaceDelimitedClaims"), "a claim name"),
        timeout=timeout,
    )


def parse_request_authentication(r: ObjectReader) -> RequestAuthentication | None:
    check_declared_fields(r)
    refs = target_refs(r)
    selector = r.labels(("spec", "selector", "matchLabels"))
    rules = tuple(
        _rule(r, ("spec", "jwtRules", i)) for i, _ in enumerate(r.sequence(("spec", "jwtRules")))
    )
    if r.failed:
        return None
    return RequestAuthentication(r.name, r.namespace, r.source, selector, rules, refs)


def check_request_authentications(mesh: MeshConfig) -> list[Diagnostic]:
    """A ``jwksUri`` host the registry does not know: the proxy has no
    cluster to fetch the keys through, so every token of that issuer is
    rejected (401), as with Istio's envoy fetch mode. A warning: Istio
    accepts the object (and tells to add a ServiceEntry)."""
    out = []
    for policy in mesh.request_authentications:
        for i, rule in enumerate(policy.rules):
            authority = rule.jwks_authority
            if authority is None:
                continue
            host, port = authority
            service = mesh.services_by_host.get(host)
            if service is not None and any(p.number == port for p in service.ports):
                continue
            path: FieldPath = ("spec", "jwtRules", i, "jwksUri")
            out.append(
                Diagnostic(
                    policy.source.file,
                    policy.source.locate(path),
                    f"no Service or ServiceEntry {host} with port {port}: the proxy cannot "
                    "fetch these keys, so every token of this issuer is rejected (401); "
                    "add a ServiceEntry for the JWKS server",
                    obj=f"RequestAuthentication {policy.key}",
                    field_path=format_field_path(path),
                    severity=Severity.WARNING,
                )
            )
    return out
