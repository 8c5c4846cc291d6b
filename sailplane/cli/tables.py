"""Plain-text tables for the ``sailplane`` command (``status``, ``diff``):
pure functions from the monitor's JSON to text."""

from __future__ import annotations

from collections.abc import Sequence

TYPE_ORDER = ("clusters", "endpoints", "listeners", "routes", "secrets")


def table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
