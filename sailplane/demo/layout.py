"""Where each workload of the demo lives: its own loopback addresses.

Linux answers on all of 127.0.0.0/8, so every WorkloadEntry gets addresses of
its own and nothing needs privileges or collides with other programs:

* ``127.77.N.K``, the workload address (its WorkloadEntry ``address``): the
  sidecar's inbound listeners on the service ports, its outbound HTTP proxy
  on 15001 (the app's ``HTTP_PROXY``) and its admin on 15000; a gateway's
  listeners;
* ``127.78.N.K``, the app, on the same ports, behind the sidecar.

``N`` is the first network whose ports are all free, ``K`` the workload's
position in the mesh. The example's addresses are compose service names;
:func:`rewrite_addresses` puts loopback addresses in their place in a copy
of the YAML, keeping comments and layout, so the copy reads like the
original.

As root, with transparent capture, every workload is a pod instead (its own
network namespace, see pods.py) at ``10.251.N.K`` (K from 11), where its app
listens on all addresses, its sidecar captures with iptables and its Envoy
admin answers on the pod's 127.0.0.1:15000 only, as in Istio.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from sailplane.config.loader import config_files
from sailplane.errors import DemoError
from sailplane.model.hosts import host_aliases
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload
from sailplane.translate.gateway import bind_port, selecting_gateways
from sailplane.translate.proxy import Proxy

WORKLOAD_OCTET = 77  # 127.77.N.K: workloads; 127.78.N.K: their apps
ADMIN_PORT = 15000
OUTBOUND_PORT = 15001
POD_SUBNETS = tuple(f"10.251.{n}" for n in range(256))  # where pods may go
POD_APP_ADDRESS = "127.0.0.1"  # where a pod's sidecar finds its app
FIRST_POD_HOST = 11


@dataclass(frozen=True, slots=True)
class Placement:
    """One workload of the demo: its addresses, its ports and what runs there."""

    workload: Workload
    app_address: str
    ports: tuple[int, ...]  # where the app listens and the sidecar binds
    gateway_ports: tuple[int, ...] = ()  # a gateway's listeners (no app)
    in_pod: bool = False  # transparent capture: the workload is a pod
    netns: str | None = None  # the pod's network namespace, once made

    @property
    def address(self) -> str:
        return self.workload.address

    @property
    def is_gateway(self) -> bool:
        return bool(self.gateway_ports)

    @property
    def admin(self) -> tuple[str, int]:
        """Envoy's admin: a pod's own loopback (reached from inside), else
        the workload's address."""
        return ("127.0.0.1" if self.in_pod else self.address, ADMIN_PORT)

    @property
    def outbound(self) -> tuple[str, int]:
        return ("127.0.0.1" if self.in_pod else self.address, OUTBOUND_PORT)

    @property
    def app_listen(self) -> str:
        """Where the app listens: everywhere in its pod, else its own address."""
        return "0.0.0.0" if self.in_pod else self.app_address

    def sockets(self) -> list[tuple[str, int]]:
        """Every address and port of the host's namespace the demo will
        listen on for this workload (none for a pod)."""
        if self.in_pod:
            return []
        found = [self.admin, *((self.address, p) for p in self.gateway_ports)]
        if not self.is_gateway:
            found.append(self.outbound)
            found += [(self.address, p) for p in self.ports]
            found += [(self.app_address, p) for p in self.ports]
        return found


def workload_ports(mesh: MeshConfig, workload: Workload) -> tuple[int, ...]:
    """The workload's inbound ports: its services' ports, through its named ports."""
    endpoint = workload.endpoint()
    ports = {endpoint.port_for(port) for s in mesh.services_of(workload) for port in s.ports}
    return tuple(sorted(ports))


def gateway_ports(mesh: MeshConfig, workload: Workload) -> tuple[int, ...]:
    proxy = Proxy(workload)
    return tuple(
        sorted(
            {bind_port(mesh, proxy, s) for g in selecting_gateways(mesh, proxy) for s in g.servers}
        )
    )


def app_address_for(address: str) -> str:
    """127.A.N.K -> 127.(A+1).N.K: the app behind the sidecar at ``address``."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        ip = None
    if ip is None or not ip.is_loopback or ip.packed[1] == 255:
        raise DemoError(
            f"address {address!r} is not a loopback address 127.A.N.K with A < 255: the demo "
            "runs every workload on its own loopback address. Run it without --config-dir "
            "(or with an empty directory) for a copy of the example with such addresses"
        )
    octets = list(ip.packed)
    octets[1] += 1
    return str(ipaddress.IPv4Address(bytes(octets)))


def placements(mesh: MeshConfig, in_pods: bool = False) -> list[Placement]:
    """Where every WorkloadEntry of ``mesh`` runs: on loopback addresses, or
    (``in_pods``) in pods at their addresses (see :func:`pod_subnet`)."""
    found = []
    for workload in sorted(mesh.workloads, key=lambda w: w.id):
        found.append(
            Placement(
                workload,
                POD_APP_ADDRESS if in_pods else app_address_for(workload.address),
                workload_ports(mesh, workload),
                gateway_ports(mesh, workload),
                in_pod=in_pods,
            )
        )
    return found


def pod_addresses(mesh: MeshConfig, subnet: str) -> dict[str, str]:
    """Workload id -> ``SUBNET.K``, K counting from 11 in id order."""
    ordered = sorted(w.id for w in mesh.workloads)
    if len(ordered) > 240:
        raise DemoError(f"{len(ordered)} workloads: the demo runs at most 240 in pods")
    return {wid: f"{subnet}.{k}" for k, wid in enumerate(ordered, FIRST_POD_HOST)}


def pod_subnet(mesh: MeshConfig) -> str:
    """``A.B.C`` when every WorkloadEntry address is a distinct private IPv4
    address ``A.B.C.K`` with 11 <= K <= 254 (the /24 the pods get; .1 is the
    host's end), else a DemoError saying which address does not fit."""
    subnets = set()
    seen: set[str] = set()
    for workload in sorted(mesh.workloads, key=lambda w: w.id):
        try:
            ip = ipaddress.IPv4Address(workload.address)
        except ValueError:
            ip = None
        if (
            ip is None
            or not ip.is_private
            or ip.is_loopback
            or not (FIRST_POD_HOST <= ip.packed[3] <= 254)
        ):
            raise DemoError(
                f"WorkloadEntry {workload.id} has address {workload.address!r}: pods need "
                f"private IPv4 addresses A.B.C.K with {FIRST_POD_HOST} <= K <= 254"
            )
        if workload.address in seen:
            raise DemoError(f"two WorkloadEntries have the address {workload.address}")
        seen.add(workload.address)
        subnets.add(workload.address.rsplit(".", 1)[0])
    if len(subnets) != 1:
        raise DemoError(f"pods need every WorkloadEntry address on one /24, not {sorted(subnets)}")
    return subnets.pop()


def pod_hosts(mesh: MeshConfig) -> dict[str, str]:
    """What a pod's /etc/hosts says: each Service's names (host_aliases: the
    FQDN, ``name.ns.svc``, ``name.ns``, ``name``) -> an instance's address
    (the sidecar routes by the name, whatever address it was dialled at),
    and each workload's name."""
    hosts = {w.name: w.address for w in mesh.workloads}
    for service in mesh.services:
        members = mesh.selected_workloads(service.namespace, service.selector or {})
        if members:  # in id order
            names = host_aliases(service.hostname, service.namespace, mesh.domain_suffix)
            hosts.update(dict.fromkeys(names, members[0].address))
    return hosts


def port_free(address: tuple[str, int]) -> bool:
    """Whether a listener could bind ``address`` now (SO_REUSEADDR, as Envoy
    and the apps set it, so a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
    return True


def busy(addresses: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    return [a for a in addresses if not port_free(a)]


def loopback_addresses(mesh: MeshConfig, network: int) -> dict[str, str]:
    """Workload id -> ``127.77.network.K``, K counting from 1 in id order."""
    ordered = sorted(w.id for w in mesh.workloads)
    if len(ordered) > 250:
        raise DemoError(f"{len(ordered)} workloads: the demo runs at most 250")
    return {wid: f"127.{WORKLOAD_OCTET}.{network}.{k}" for k, wid in enumerate(ordered, 1)}


def free_network(mesh: MeshConfig) -> dict[str, str]:
    """Loopback addresses for every workload, on the first network (1-250)
    where every port the demo needs is free."""
    for network in range(1, 251):
        addresses = loopback_addresses(mesh, network)
        needed = []
        for workload in mesh.workloads:
            address = addresses[workload.id]
            app = app_address_for(address)
            needed += [(address, ADMIN_PORT), (address, OUTBOUND_PORT)]
            needed += [(address, p) for p in gateway_ports(mesh, workload)]
            needed += [(a, p) for p in workload_ports(mesh, workload) for a in (address, app)]
        if not busy(needed):
            return addresses
    raise DemoError("no free loopback network 127.77.N.0 (N = 1..250) for the demo")


def _workload_address_spans(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, namespace, name) of each WorkloadEntry's ``spec.address``
    value in a YAML text, from the parser's own positions."""
    spans = []
    for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if not isinstance(document, yaml.MappingNode):
            continue
        top = {k.value: v for k, v in document.value if isinstance(k, yaml.ScalarNode)}
        kind = top.get("kind")
        if not isinstance(kind, yaml.ScalarNode) or kind.value != "WorkloadEntry":
            continue
        metadata, spec = top.get("metadata"), top.get("spec")
        if not isinstance(metadata, yaml.MappingNode) or not isinstance(spec, yaml.MappingNode):
            continue
        meta = {k.value: v.value for k, v in metadata.value if isinstance(v, yaml.ScalarNode)}
        for key, value in spec.value:
            if key.value == "address" and isinstance(value, yaml.ScalarNode):
                spans.append(
                    (
                        value.start_mark.index,
                        value.end_mark.index,
                        str(meta.get("namespace") or "default"),
                        str(meta.get("name", "")),
                    )
                )
    return spans


def rewrite_addresses(text: str, addresses: Mapping[str, str]) -> str:
    """``text`` with the address of each WorkloadEntry whose id
    (``name.namespace``) is in ``addresses`` replaced; nothing else changes."""
    for start, end, namespace, name in sorted(_workload_address_spans(text), reverse=True):
        new = addresses.get(f"{name}.{namespace}")
        if new is not None:
            text = text[:start] + new + text[end:]
    return text


def copy_with_addresses(source: Path, target: Path, addresses: Mapping[str, str]) -> None:
    """Copy the config dir ``source`` to ``target`` with loopback addresses.
    Files that are not YAML are copied as they are."""
    yaml_files = set(config_files(source))
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path in yaml_files:
            text = path.read_text(encoding="utf-8")
            destination.write_text(rewrite_addresses(text, addresses), encoding="utf-8")
        else:
            shutil.copyfile(path, destination)
