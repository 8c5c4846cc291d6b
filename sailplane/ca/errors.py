"""Errors of the certificate authority.

::

    SailplaneError                (sailplane.errors)
    └── CAError                   CA material is unusable or a certificate cannot be issued
        └── SpiffeIdError         a SPIFFE ID or a certificate's identity is malformed
                                  (also a ValueError, so parsers can be used like int())

Messages about files start with the file name, like configuration diagnostics:
``/var/lib/sailplane/ca-key.pem: private key does not match certificate ...``.
"""

from __future__ import annotations

from pathlib import Path

from sailplane.errors import SailplaneError


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
