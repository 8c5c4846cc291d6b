"""What one proxy should have: an immutable :class:`Snapshot` of
:class:`~sailplane.xds.resources.TypeResources` by type URL, which can check
its own consistency (go-control-plane's ``Snapshot.Consistent()``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sailplane.xds.resources import TypeResources, empty
from sailplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET


class Snapshot:
    """Everything one proxy should have, by type URL. Immutable.

    ``withheld``: types this proxy may not have at all, with the reason
    (secrets on the plaintext port). A stream that subscribes to one gets no
    response for it, and the reason in its status and the log."""

    __slots__ = ("resources", "withheld")

    def __init__(
        self, resources: Mapping[str, TypeResources], withheld: Mapping[str, str] | None = None
    ) -> None:
        self.resources = resources
        self.withheld: Mapping[str, str] = withheld or {}

    def version(self, type_url: str) -> str:
        found = self.resources.get(type_url)
        return found.version if found is not None else ""

    def get(self, type_url: str) -> TypeResources:
        found = self.resources.get(type_url)
        return found if found is not None else empty(type_url)

    def consistent(self, may_dangle: Collection[tuple[str, str]] = ()) -> list[str]:
        """Dangling references: every EDS service name a cluster uses, every RDS
        name a listener uses and every SDS secret either refers to must be in the
        snapshot, unless the snapshot withholds that type (it is deliberately
        not served: the proxy waits for it) or ``may_dangle`` has the reference
        as ``(type URL, name)`` (left unanswered on purpose). Returns one
        message per dangling reference; empty = consistent."""
        problems = []
        clusters = self.get(CLUSTER).references
        listeners = self.get(LISTENER).references
        wanted = {
            ENDPOINT: ("cluster", clusters.eds),
            ROUTE: ("listener", listeners.rds),
            SECRET: ("listener or cluster", listeners.sds | clusters.sds),
        }
        for type_url, (owner, names) in wanted.items():
            if type_url in self.withheld:
                continue
            present = self.get(type_url).chunks
            for name in sorted(names - present.keys()):
                if (type_url, name) in may_dangle:
                    continue
                problems.append(f"{owner} refers to missing {type_url.rsplit('.', 1)[-1]} {name!r}")
        return problems


__all__ = ["Snapshot"]
