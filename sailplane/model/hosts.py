"""Host names as Istio resolves them.

Short names resolve in the namespace of the object that names them:
``weather-backend`` in namespace ``default`` is
``weather-backend.default.svc.cluster.local``; ``weather-backend.secure`` is
``weather-backend.secure.svc.cluster.local`` (istio.io, VirtualService
``hosts`` and DestinationRule ``host``: "short names are interpreted as
NAME.NAMESPACE.svc.cluster.local where NAMESPACE is the rule's namespace").
"""

from __future__ import annotations

import functools
import ipaddress

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
    """Expand a short host name to its FQDN; FQDNs and wildcards pass through."""
    if host == "*" or host.startswith("*."):
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.{domain_suffix}"
    if len(parts) == 2:
        return f"{host}.svc.{domain_suffix}"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.{domain_suffix}"
    return host


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
