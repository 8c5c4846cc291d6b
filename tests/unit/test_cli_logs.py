"""One log line per event, text or JSON; and the flags that choose."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from sailplane.cli import build_parser
from sailplane.cli.diff import format_diff
from sailplane.cli.status import format_proxy
from sailplane.logs import configure, event


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    stream = io.StringIO()
    logger = logging.getLogger("sailplane.test")
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        yield stream, logger
    finally:
        for handler in list(root.handlers):
            if handler not in saved[1]:
                root.removeHandler(handler)
        root.setLevel(saved[0])


def test_text_lines_carry_the_message_and_fields(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, logger = captured
    configure("info", "text", stream)
    event(
        logger,
        logging.INFO,
        "config.applied",
        "config applied",
        version="3f2a1b",
        objects=12,
        dir="/etc/mesh dir",
        detail={"changes": ["update VirtualService default/a"]},
    )
    line = stream.getvalue()
    assert line.endswith(
        ' INFO sailplane.test: config applied version=3f2a1b objects=12 dir="/etc/mesh dir"\n'
    )
    assert line[:4].isdigit() and line[10] == "T"  # an ISO 8601 timestamp first


def test_json_lines_are_one_object_each(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, logger = captured
    configure("info", "json", stream)
    event(
        logger,
        logging.WARNING,
        "proxy.nack",
        "proxy a.default rejected routes version 1: bad",
        proxy="a.default",
        detail={"error": "bad"},
    )
    logger.info("a plain %s", "line")
    logger.debug("below the level")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "warning" and first["event"] == "proxy.nack"
    assert (first["proxy"], first["error"]) == ("a.default", "bad")
    assert first["time"].endswith("Z")
    assert second == {
        "time": second["time"],
        "level": "info",
        "logger": "sailplane.test",
        "msg": "a plain line",
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-format", "json", "serve"],
        ["serve", "--log-format", "json"],
        ["--log-level", "debug", "serve", "--log-format", "json"],
    ],
    ids=["before", "after", "mixed"],
)
def test_logging_flags_go_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.log_format == "json"
    assert args.debounce == 0.1 and args.debounce_max == 1.0


def test_proxy_config_table() -> None:
    view = {
        "proxy": "web.default",
        "connected": True,
        "streams": [{"stream": 1, "peer": "ipv4:127.0.0.1:5"}],
        "types": {
            "clusters": {
                "version": "abc",
                "state": "NACKED",
                "sent": "abc",
                "acked": "old",
                "error": "bad cluster",
                "resources": [{"name": "outbound|80||a.default.svc.cluster.local", "version": "1"}],
            },
            "secrets": {"version": "s", "state": "NOT_SENT", "resources": []},
        },
    }
    assert format_proxy(view) == (
        "PROXY web.default (connected, 1 stream)\n"
        "\n"
        "CLUSTERS  version abc  NACKED (proxy has old)\n"
        "  NACK: bad cluster\n"
        "  NAME                                      VERSION  STATE\n"
        "  outbound|80||a.default.svc.cluster.local  1        NACKED\n"
        "\n"
        "SECRETS  version s  NOT_SENT\n"
        "  (none)\n"
    )


def test_diff_listing() -> None:
    result = {
        "verdict": "applied",
        "diagnostics": [
            {
                "file": "vs.yaml",
                "line": 3,
                "column": 5,
                "severity": "warning",
                "code": "IST0131",
                "object": "VirtualService default/a",
                "field": "spec.http[1]",
                "message": "not used",
            }
        ],
        "objects": [{"kind": "VirtualService", "event": "update", "name": "default/a"}],
        "proxies": [
            {
                "proxy": "a.default",
                "changes": {"routes": {"added": [], "removed": [], "changed": ["80"]}},
            },
            {"proxy": "b.default", "changes": {}},
        ],
    }
    assert format_diff(result) == (
        "vs.yaml:3:5: warning: IST0131: VirtualService default/a: spec.http[1]: not used\n"
        "objects: 1 changed\n"
        "  ~ VirtualService default/a\n"
        "proxies: 1 of 2 connected would change\n"
        "  a.default:\n"
        "    ~ route 80\n"
        "  b.default: no change\n"
    )
