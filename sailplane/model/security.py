"""Istio's security API: PeerAuthentication (and the legacy ``Policy`` kind).

Mode resolution follows istio.io/latest/docs/reference/config/security/
peer_authentication: a workload-selector policy beats a namespace-wide
policy, which beats the mesh-wide policy in the root namespace; ``UNSET``
inherits from the next level; with nothing set, the mesh is PERMISSIVE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from sailplane.model.source import Source

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
MODES: tuple[MtlsMode, ...] = get_args(MtlsMode)
DEFAULT_ROOT_NAMESPACE = "istio-system"
TLS_MODE_LABEL = "security.istio.io/tlsMode"


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    name: str
    namespace: str
    source: Source
    mode: MtlsMode = "UNSET"
    selector: Mapping[str, str] = field(default_factory=dict)
    port_level: Mapping[int, MtlsMode] = field(default_factory=dict)
    # The legacy Policy kind targets services by name rather than by labels.
    target_services: tuple[str, ...] = ()
    legacy: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def workload_scoped(self) -> bool:
        return bool(self.selector or self.target_services)
