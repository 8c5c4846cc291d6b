"""Where a root-only test may skip: anywhere but CI.

`.ci/run` sets SAILPLANE_CI=1 when it runs as root, as CI does, having
installed what those tests need. There a reason to skip is a broken
environment, and it fails the run instead of passing it quietly.
"""

from __future__ import annotations

import os


class MustRunInCI(RuntimeError):
    pass


def skip_unless_ci(reason: str | None) -> str | None:
    """``reason`` to skip, outside CI; in CI, an error naming it."""
    if reason is not None and os.environ.get("SAILPLANE_CI") == "1":
        raise MustRunInCI(f"CI runs this test as root, but it cannot run: {reason}")
    return reason
