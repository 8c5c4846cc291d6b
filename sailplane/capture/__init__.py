"""Transparent traffic capture, the counterpart of Istio's ``istio-iptables``:
nat-table rules that send a workload's outbound TCP to its proxy's 15001 and
inbound TCP to its 15006.

``rules`` generates them (pure); ``apply`` installs and removes them with
``iptables-restore``. May import ``errors`` only.
"""

from __future__ import annotations

from sailplane.capture.apply import install, remove
from sailplane.capture.rules import (
    CHAINS,
    INBOUND_CAPTURE_PORT,
    OUTBOUND_CAPTURE_PORT,
    CaptureOptions,
    Rule,
    install_script,
    installed,
    nat_rules,
    remove_script,
)

__all__ = [
    "CHAINS",
    "INBOUND_CAPTURE_PORT",
    "OUTBOUND_CAPTURE_PORT",
    "CaptureOptions",
    "Rule",
    "install",
    "install_script",
    "installed",
    "nat_rules",
    "remove",
    "remove_script",
]
