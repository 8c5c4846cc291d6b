"""Golden tests of ``sailplane capture``: the iptables-restore input its
``--dry-run`` prints, per set of flags, in ``capture/<case>.rules``.

Compare them with Istio's own goldens
(tools/istio-iptables/pkg/capture/testdata/*.golden): same chains, same
order; no ``--dport 15008`` (no HBONE tunnel here) and no DNS rules.
Regenerate with ``pytest tests/golden --update-golden`` and review the diff.
"""

from __future__ import annotations

import shlex

import pytest

from sailplane.cli import main
from tests.golden.cases import ROOT, check_outputs

CAPTURE = ROOT / "capture"

CASES: dict[str, list[str]] = {
    "default": [],
    "inbound-ports-list": ["--inbound-ports", "8080,9090", "--exclude-inbound-ports", "9090"],
    "inbound-none": ["--inbound-ports", ""],
    "outbound-ranges-and-ports": [
        "--include-outbound-cidrs",
        "10.0.0.0/8,172.16.0.0/12",
        "--exclude-outbound-cidrs",
        "10.96.0.0/12",
        "--exclude-outbound-ports",
        "3306,6379",
        "--include-outbound-ports",
        "31000",
    ],
    "outbound-none-but-ports": ["--include-outbound-cidrs", "", "--include-outbound-ports", "443"],
    "loopback-included": ["--include-outbound-cidrs", "127.0.0.0/8,10.0.0.0/8"],
    "uid-gid-ports-ipv6": [
        "--proxy-uid",
        "101",
        "--proxy-gid",
        "102",
        "--exclude-inbound-ports",
        "8081,15020",
        "--exclude-outbound-cidrs",
        "192.0.2.0/24,2001:db8::/32",
        "--dual-stack",
    ],
    "remove": ["--remove"],
}


def test_every_case_has_a_golden_and_no_golden_is_orphaned(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = {}
    for case, argv in CASES.items():
        assert main(["capture", "--dry-run", *argv]) == 0
        out, err = capsys.readouterr()
        assert err == ""
        outputs[f"{case}.rules"] = f"# sailplane capture {shlex.join(argv)}".rstrip() + "\n" + out
    CAPTURE.mkdir(exist_ok=True)
    check_outputs(CAPTURE, outputs, bool(request.config.getoption("--update-golden")))
