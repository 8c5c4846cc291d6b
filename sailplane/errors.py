"""The exception tree of sailplane.

::

    SailplaneError
    ├── ConfigError          a configuration file or object is unusable
    │   └── YamlSyntaxError  a file does not parse as YAML
    ├── UnknownProxyError    an xDS client names a node that is not in the mesh
    └── BootstrapError       a bootstrap cannot be written for a workload

Errors about configuration carry a :class:`~sailplane.model.source.Diagnostic`
so that the message always points at a file, line and field.
"""

from __future__ import annotations

from sailplane.model.source import Diagnostic


class SailplaneError(Exception):
    """Root of every error sailplane raises on purpose."""


class ConfigError(SailplaneError):
    """A configuration problem, located in a file."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.format())
        self.diagnostic = diagnostic


class YamlSyntaxError(ConfigError):
    """A file that is not valid YAML; nothing from it can be used."""


class UnknownProxyError(SailplaneError):
    """An xDS client's node id does not name a WorkloadEntry of the mesh."""


class BootstrapError(SailplaneError):
    """A bootstrap cannot be written (unknown workload, bad address)."""
