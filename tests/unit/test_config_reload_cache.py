"""The control plane re-loads its directory through one :class:`DocumentCache`:
an edit re-reads one document and leaves the other objects as they were."""

from __future__ import annotations

from pathlib import Path

from sailplane.server.plane import ControlPlane, ServeOptions
from tests.unit.test_config_incremental import mesh, objects_by_key


def test_the_control_plane_reloads_through_its_cache(tmp_path: Path) -> None:
    for name, text in mesh().items():
        (tmp_path / name).write_text(text)
    plane = ControlPlane(
        ServeOptions(tmp_path, xds_address=None, monitor_address=("127.0.0.1", 0), watch=False)
    )
    assert plane.reload()
    assert plane.reloader.applied_result is not None
    first = objects_by_key(plane.reloader.applied_result)
    assert not plane.reload()  # nothing changed
    (tmp_path / "traffic.yaml").write_text(mesh({1: 70})["traffic.yaml"])
    assert plane.reload()
    assert plane.reloader.applied_result is not None
    now = objects_by_key(plane.reloader.applied_result)
    assert (
        now[("VirtualService", "default/svc-1")] is not first[("VirtualService", "default/svc-1")]
    )
    assert now[("VirtualService", "default/svc-0")] is first[("VirtualService", "default/svc-0")]
    assert plane.reloader.documents.stats.documents_interpreted == 1
