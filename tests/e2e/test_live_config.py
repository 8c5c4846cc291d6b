"""Live configuration through a real Envoy: edits, atomic saves and deletes
change routing; bursts of saves are one push; broken files never replace the
configuration in force.

One sidecar Envoy (the frontend's) routes to backend apps that listen on
their workload addresses directly, so a VirtualService's weights between
subsets ``v1`` and ``v2`` show in each reply's version, unambiguously.
"""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import wait_for
from tests.support.traffic import Client

pytestmark = pytest.mark.e2e

WEATHER = "http://weather-backend:5000/api/weather"
RATINGS = "http://ratings:5000/api/weather"

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: weather-backend
spec:
  host: weather-backend
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""


def split(v1: int, v2: int, subset2: str = "v2") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: weather-backend
spec:
  hosts:
  - weather-backend
  http:
  - route:
    - destination:
        host: weather-backend
        subset: v1
      weight: {v1}
    - destination:
        host: weather-backend
        subset: {subset2}
      weight: {v2}
"""


def start(mesh: Mesh, vs: str, ratings: bool = False) -> tuple[WorkloadSpec, Client]:
    """sailplane, the frontend's sidecar, backends v1 and v2 (and ratings)."""
    frontend = mesh.workload("weather-frontend", {"app": "weather-frontend"})
    backends = [
        mesh.workload(f"weather-backend-{v}", {"app": "weather-backend", "version": v})
        for v in ("v1", "v2")
    ]
    services = [service("weather-frontend"), service("weather-backend")]
    if ratings:
        backends.append(mesh.workload("ratings-1", {"app": "ratings", "version": "v1"}))
        services.append(service("ratings"))
    mesh.write_registry(services)
    mesh.write("rule.yaml", RULE)
    mesh.write("vs.yaml", vs)
    mesh.start_control_plane()
    for spec in backends:
        extra = ("--service", spec.labels["app"])
        mesh.start_app(spec, "backend", "", "http://unused:5000", *extra, sidecar=False)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id)
    mesh.wait_listening(frontend)
    return frontend, Client(frontend.outbound)


def versions(client: Client, count: int = 10, target: str = WEATHER) -> set[str]:
    found = set()
    for _ in range(count):
        reply = client.get(target)
        assert reply.status == 200, reply
        found.add(reply.json()["version"])
    return found


def routes_to(client: Client, expected: set[str], timeout: float = 10.0) -> None:
    wait_for(lambda: versions(client) == expected, timeout, what=f"routing to {expected}")


def metrics(mesh: Mesh) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(mesh.http("/metrics")):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def applied(mesh: Mesh) -> float:
    return metrics(mesh)["sailplane_config_reloads_total{result=applied}"]


def twenty_saves_in_50ms(mesh: Mesh) -> tuple[dict[str, float], float]:
    """Save vs.yaml 20 times, ending at 0/100, within 50 ms. A loaded machine
    may stall a burst; then let it settle and try again. Returns the metrics
    from just before the burst, and how long it took."""
    texts = [split(100 - 5 * i, 5 * i) for i in range(19)] + [split(0, 100)]
    path = mesh.config_dir / "vs.yaml"
    for _ in range(5):
        wait_for(lambda: mesh.syncz()[0]["types"]["routes"]["state"] == "SYNCED")
        time.sleep(0.3)  # nothing of an earlier change still in flight
        quiet = metrics(mesh)
        started = time.monotonic()
        for text in texts:
            path.write_text(text)
        took = time.monotonic() - started
        if took < 0.05:
            return quiet, took
        path.write_text(split(100, 0))
    pytest.fail("could not save 20 times within 50 ms")


def test_edits_atomic_saves_and_deletes_change_live_routing(mesh: Mesh) -> None:
    _, client = start(mesh, split(100, 0))
    with client:
        assert versions(client, 20) == {"v1"}
        before = metrics(mesh)

        # An edit in place.
        mesh.write("vs.yaml", split(0, 100))
        routes_to(client, {"v2"})

        # An editor's atomic save: a temporary file renamed over the original.
        temp = mesh.config_dir / "vs.yaml.tmp-4913"
        temp.write_text(split(100, 0))
        os.replace(temp, mesh.config_dir / "vs.yaml")
        routes_to(client, {"v1"})

        # Twenty saves within 50 ms: one reload, one route push.
        quiet, burst = twenty_saves_in_50ms(mesh)
        routes_to(client, {"v2"})
        time.sleep(0.5)  # longer than the debounce: any second reload would show
        after_burst = metrics(mesh)
        reloads = "sailplane_config_reloads_total{result=applied}"
        assert after_burst[reloads] == quiet[reloads] + 1, burst
        rds = "pilot_xds_pushes_total{type=rds}"
        assert after_burst[rds] == quiet[rds] + 1

        # Deleting the file removes the VirtualService: back to round robin.
        (mesh.config_dir / "vs.yaml").unlink()
        routes_to(client, {"v1", "v2"})
        configz = mesh.configz()
        assert "VirtualService" not in {o["kind"] for o in configz["in_force"]}

        after = metrics(mesh)
        for name in (
            "pilot_xds_pushes_total{type=rds}",
            "pilot_proxy_convergence_time_count",
            "pilot_xds_push_time_count{type=rds}",
            "sailplane_config_events_total{event=update,kind=VirtualService}",
            "sailplane_config_events_total{event=delete,kind=VirtualService}",
        ):
            assert after[name] > before.get(name, 0), name
        connected = {k: v for k, v in after.items() if k.startswith("pilot_xds{") and v}
        assert list(connected.values()) == [1], connected  # by Envoy version
        assert next(iter(connected)).startswith("pilot_xds{version=1.")
        assert not any(t.get("error") for s in mesh.syncz() for t in s["types"].values())


def test_a_service_added_while_envoy_runs_is_warm_before_its_routes(mesh: Mesh) -> None:
    """A new service in a running mesh, state of the world: Envoy gets its
    cluster, asks for its endpoints, and only then the routes that name it
    (xDS's order for an addition; sailplane/xds/server/sotw.py), so the first
    request the new route carries finds the cluster warm."""
    _, client = start(mesh, split(100, 0))
    with client:
        assert versions(client, 5) == {"v1"}
        assert client.get(RATINGS).status != 200  # no such service yet
        before = metrics(mesh)
        ratings = mesh.workload("ratings-1", {"app": "ratings", "version": "v1"})
        extra = ("--service", "ratings")
        mesh.start_app(ratings, "backend", "", "http://unused:5000", *extra, sidecar=False)
        mesh.write_registry(
            [service("weather-frontend"), service("weather-backend"), service("ratings")]
        )
        wait_for(lambda: client.get(RATINGS).status == 200, what="the new service routed")
        assert versions(client, 10, RATINGS) == {"v1"}
        after = metrics(mesh)
        asked = "sailplane_xds_route_holds_total{outcome=asked}"
        expired = "sailplane_xds_route_holds_total{outcome=expired}"
        assert after.get(asked, 0) == before.get(asked, 0) + 1  # Envoy asked, in time
        assert after.get(expired, 0) == 0


def test_broken_config_never_replaces_the_config_in_force(mesh: Mesh) -> None:
    _, client = start(mesh, split(0, 100), ratings=True)
    with client:
        routes_to(client, {"v2"})
        before = metrics(mesh)

        # Bad indentation: the directory does not parse; nothing changes.
        broken = split(100, 0).replace("      weight: 100", "       weight: 100")
        mesh.write("vs.yaml", broken)
        wait_for(lambda: not mesh.configz()["last_load_applied"], what="the rejection")
        assert versions(client, 20) == {"v2"}
        after = metrics(mesh)
        assert after["sailplane_config_errors_total"] == before["sailplane_config_errors_total"] + 1
        assert after["sailplane_config_reloads_total{result=rejected}"] == 1
        line = broken.splitlines().index("       weight: 100") + 1
        log = mesh.plane.log() if mesh.plane else ""
        assert f"vs.yaml:{line}:8: YAML syntax error: " in log

        # The fix applies.
        mesh.write("vs.yaml", split(100, 0))
        routes_to(client, {"v1"})

        # An unknown subset: accepted with a warning at its own line, as Istio
        # accepts it (istioctl analyze IST0101); the requests sent there get
        # Envoy's 503 for a missing cluster; other services are not affected.
        unknown = split(50, 50, subset2="v3")
        mesh.write("vs.yaml", unknown)
        line = unknown.splitlines().index("        subset: v3") + 1
        expected = (
            f"vs.yaml:{line}:17: warning: IST0101: VirtualService default/weather-backend: "
            "spec.http[0].route[1].destination.subset: unknown subset 'v3' of "
            "weather-backend.default.svc.cluster.local: DestinationRule "
            "default/weather-backend does not define it"
        )
        wait_for(
            lambda: mesh.plane is not None and expected in mesh.plane.log(),
            what="the unknown subset reported",
        )
        wait_for(
            lambda: {client.get(WEATHER).status for _ in range(20)} == {200, 503},
            what="half the requests to the missing subset's cluster",
        )
        assert versions(client, 5, RATINGS) == {"v1"}
        in_force = {o["kind"]: o for o in mesh.configz()["in_force"]}
        assert in_force["VirtualService"]["state"] == "active"
