"""One log line per event: human-readable by default, JSON on request.

Code logs events with :func:`event`: a short message, a dotted event name
(``config.applied``, ``proxy.nack``) and fields. The text formatter writes
``TIME LEVEL logger: message key=value ...``; the JSON formatter writes one
object per line with the same fields, plus ``detail`` fields that would only
clutter a terminal. Plain ``log.info(...)`` calls work with both.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")

# LogRecord attributes set by :func:`event`.
_EVENT = "sailplane_event"
_FIELDS = "sailplane_fields"
_DETAIL = "sailplane_detail"


def event(
    logger: logging.Logger,
    level: int,
    name: str,
    message: str,
    *,
    detail: Mapping[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Log ``message`` as event ``name``; ``fields`` show in both formats,
    ``detail`` only in JSON."""
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "%s",
            message,
            extra={_EVENT: name, _FIELDS: fields, _DETAIL: dict(detail or {})},
        )


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c in text for c in ' "='):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields: Mapping[str, Any] = getattr(record, _FIELDS, {})
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        name = getattr(record, _EVENT, None)
        if name:
            out["event"] = name
        out["msg"] = record.getMessage()
        for key, value in {
            **getattr(record, _FIELDS, {}),
            **getattr(record, _DETAIL, {}),
        }.items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Set up the root logger for the ``sailplane`` command (again: replaces
    the handler a previous call installed, and nothing else)."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name("sailplane")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "sailplane":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries chatter at debug level; keep them at info.
    for name in ("watchdog", "grpc", "asyncio"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
