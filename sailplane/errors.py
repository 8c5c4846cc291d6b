"""The exception tree of sailplane: every error it raises on purpose.

::

    SailplaneError
    ├── ConfigError            a configuration file or object is unusable
    │   └── YamlSyntaxError    a file does not parse as YAML
    │       └── AliasBudgetError  aliases expanded past the load's budget
    ├── ProxyRefused           an xDS stream is refused (gRPC PERMISSION_DENIED)
    │   ├── UnknownProxy       its node id names no WorkloadEntry, or bad metadata
    │   └── IdentityMismatch   its certificate proves another identity
    ├── LimitExceeded          a client asked for more than the server's bounds
    │                          (gRPC RESOURCE_EXHAUSTED)
    ├── PortInUseError         a port sailplane must bind is taken
    ├── CAError                CA material is unusable or a certificate cannot be issued
    │   └── SpiffeIdError      a SPIFFE ID or a certificate's identity is malformed
    │                          (also a ValueError, so parsers can be used like int())
    ├── DemoError              ``sailplane demo`` cannot run here (the message says why)
    ├── CaptureError           ``sailplane capture`` cannot change iptables here (a
    │                          missing tool, no CAP_NET_ADMIN, a rejected rule)
    └── StoreError             the configuration store refuses or cannot do a request
        └── StoreUnavailable   no endpoint of the store answers (the message names them)

Errors about configuration carry a diagnostic (file, line, object, field) so
that the message always points at the YAML; CA errors about files start with
the file name. No error carries key material in its message.

This module imports nothing of sailplane: every package may raise these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class SailplaneError(Exception):
    """Root of every error sailplane raises on purpose."""


class _Located(Protocol):
    """What a configuration error carries (a model.source.Diagnostic)."""

    def format(self) -> str: ...


class ConfigError(SailplaneError):
    """A configuration problem, located in a file."""

    def __init__(self, diagnostic: _Located) -> None:
        super().__init__(diagnostic.format())
        self.diagnostic = diagnostic


class YamlSyntaxError(ConfigError):
    """A file that is not valid YAML; nothing from it can be used."""


class AliasBudgetError(YamlSyntaxError):
    """Aliases expanded past the budget of the load (where depends on what
    the load parsed before: not re-parsed to match a cold load)."""


class ProxyRefused(SailplaneError):
    """An xDS client may not have the stream it asked for; the stream ends
    with PERMISSION_DENIED and this message."""


class UnknownProxy(ProxyRefused):
    """An xDS client's node id does not name a WorkloadEntry of the mesh,
    or its node metadata is unusable."""


class IdentityMismatch(ProxyRefused):
    """The client certificate proves an identity that may not claim the node
    (another service account, or no SPIFFE identity at all)."""


class LimitExceeded(SailplaneError):
    """A client asked for more than the server's limits allow; the stream
    ends with RESOURCE_EXHAUSTED and this message."""


class PortInUseError(SailplaneError):
    """A port sailplane must bind is taken by another process."""


class CAError(SailplaneError):
    """CA material is unusable (unreadable, mismatched, not a CA) or issuing failed.

    ``source`` names the offending file (or, for material given in memory, a
    label such as ``"CA certificate"``) and prefixes the message.
    """

    def __init__(self, message: str, *, source: Path | str | None = None) -> None:
        self.source = str(source) if source is not None else None
        self.reason = message
        super().__init__(f"{source}: {message}" if source is not None else message)


class SpiffeIdError(CAError, ValueError):
    """A malformed SPIFFE ID, or a certificate that carries no usable one."""


class DemoError(SailplaneError):
    """``sailplane demo`` cannot run on this machine, or its control plane
    did not start; the message says why."""


class CaptureError(SailplaneError):
    """``sailplane capture`` cannot install or remove its rules here: an
    iptables tool is missing, the caller lacks CAP_NET_ADMIN, or a rule was
    rejected; the message is one line and says which."""


class StoreError(SailplaneError):
    """The configuration store refused a request (the message says why)."""


class StoreUnavailable(StoreError):
    """No endpoint of the configuration store answers; the message names them."""
