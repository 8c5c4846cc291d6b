"""Host names as Istio resolves them.

Istio (``ResolveShortnameToFQDN``, pilot/pkg/model/config.go) expands only a
name without a dot: ``weather-backend`` in namespace ``default`` is
``weather-backend.default.svc.cluster.local``. Any dotted name is taken as
written: ``httpbin.org`` is ``httpbin.org``, and so is ``reviews.prod``.

One sailplane exception (:func:`namespace_shorthand`): a ``name.ns`` or
``name.ns.svc`` whose ``ns`` is a namespace of the mesh, and that no
ServiceEntry declares literally, means ``name.ns.svc.cluster.local``, as
the talk's ``host: weather-backend.secure`` expects. The loader reports each
use, naming the FQDN that Istio would need.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Container

DEFAULT_DOMAIN_SUFFIX = "cluster.local"


@functools.lru_cache(maxsize=65536)
def is_ip_address(host: str) -> bool:
    """An IPv4 or IPv6 literal (as opposed to a DNS name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_host(host: str, namespace: str, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> str:
    """Istio's resolution: a name without a dot becomes
    ``NAME.NAMESPACE.svc.DOMAIN``; wildcards, IP addresses and dotted names
    are taken as written."""
    if "." in host or host == "*" or is_ip_address(host):
        return host
    return f"{host}.{namespace}.svc.{domain_suffix}"


def namespace_shorthand(
    host: str, namespaces: Container[str], domain_suffix: str = DEFAULT_DOMAIN_SUFFIX
) -> str | None:
    """The FQDN sailplane reads ``name.ns`` or ``name.ns.svc`` as, when
    ``ns`` is one of the mesh's ``namespaces`` (None otherwise). The caller
    checks first that no ServiceEntry declares ``host`` as written."""
    parts = host.split(".")
    if len(parts) == 3 and parts[2] == "svc":
        parts = parts[:2]
    if len(parts) != 2 or "*" in host or not all(parts) or parts[1] not in namespaces:
        return None
    return f"{parts[0]}.{parts[1]}.svc.{domain_suffix}"


def host_aliases(
    fqdn: str, client_namespace: str, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX
) -> list[str]:
    """The names a client in ``client_namespace`` may use for ``fqdn``.

    As Istio's sidecar routes: the FQDN, ``name.ns.svc``, ``name.ns``, and the
    bare ``name`` only for clients in the same namespace.
    """
    suffix = f".svc.{domain_suffix}"
    if not fqdn.endswith(suffix):
        return [fqdn]
    name_ns = fqdn[: -len(suffix)]
    parts = name_ns.split(".")
    if len(parts) != 2:
        return [fqdn]
    name, namespace = parts
    aliases = [fqdn, f"{name_ns}.svc", name_ns]
    if namespace == client_namespace:
        aliases.append(name)
    return aliases


def host_matches(pattern: str, hostname: str) -> bool:
    """Istio host matching: ``*`` matches everything, ``*.example.com`` any name
    ending in ``.example.com``; otherwise names must be equal."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:]) or (
            hostname.startswith("*.") and hostname.endswith(pattern[1:])
        )
    return pattern == hostname
