"""docker-compose.replicas.yml, checked statically: alone and merged over
docker-compose.yml as ``docker compose -f docker-compose.yml -f
docker-compose.replicas.yml`` merges it (tests/realcompose runs it for real).

The merge here follows the compose-spec's rules for what the override uses:
mappings merge key by key, ``command`` is replaced, a service's ``volumes``
merge by target path, ``depends_on`` by service name.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from jsonschema import Draft202012Validator

from sailplane.ca import CA_CERT_FILE, load_or_create_authority
from sailplane.cli import main
from sailplane.store import parse_url
from tests.test_compose import (
    CONFIGS,
    MESH,
    ROOT,
    SCHEMA,
    compose,
    depends_on,
    host_path,
    in_volumes,
    interpolate,
    is_bind,
    mounted_at,
    mounts,
    run_here,
    sailplane_args,
    stage,
)

OVERRIDE_FILE = ROOT / "docker-compose.replicas.yml"
REPLICAS = {"sailplane": "sailplane-a", "sailplane-b": "sailplane-b"}  # service -> replica
ADDED = {"etcd", "sailplane-a-init", "sailplane-b-init", "sailplane-b"}
ROOT_CA = "sailplane-ca"


@cache
def override() -> dict[str, Any]:
    data = interpolate(yaml.safe_load(OVERRIDE_FILE.read_text()))
    assert isinstance(data, dict)
    return data


def merge_service(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if key == "volumes":
            by_target = {
                m.target: v for m, v in zip(mounts(merged), merged.get("volumes", []), strict=True)
            }
            by_target.update({m.target: v for m, v in zip(mounts(extra), value, strict=True)})
            merged["volumes"] = list(by_target.values())
        elif key == "depends_on":
            merged["depends_on"] = {**depends_on(merged), **depends_on(extra)}
        elif key == "command" or key not in merged:
            merged[key] = copy.deepcopy(value)
        else:
            raise AssertionError(f"merge of {key!r} not modelled here")
    return merged


@cache
def merged() -> dict[str, Any]:
    result = copy.deepcopy(compose())
    for name, service in override()["services"].items():
        base = result["services"].get(name)
        result["services"][name] = merge_service(base, service) if base else service
    result["volumes"] = {**result["volumes"], **override()["volumes"]}
    return result


def services() -> dict[str, dict[str, Any]]:
    return merged()["services"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("which", ["override", "merged"])
def test_valid_against_the_compose_spec_schema(which: str) -> None:
    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    data = override() if which == "override" else merged()
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]
    assert not errors, "\n".join(errors)


def test_the_override_adds_etcd_and_a_replica_and_changes_only_the_sailplane_service() -> None:
    changed = set(override()["services"]) & set(compose()["services"])
    assert changed == {"sailplane"}
    assert set(override()["services"]) - changed == ADDED
    # Only what the merge above models: the service's command, dependencies, CA volume.
    assert set(override()["services"]["sailplane"]) == {"command", "depends_on", "volumes"}
    assert "profiles" not in json.dumps(override()), "an override, not a profile (see its header)"
    header = OVERRIDE_FILE.read_text().split("\n\n", 1)[0]
    assert (
        "docker compose -f docker-compose.yml -f docker-compose.replicas.yml up --build" in header
    )
    assert "profile" in header


def test_every_mounted_volume_is_declared_and_every_service_is_hardened() -> None:
    declared = set(merged()["volumes"])
    for name, service in services().items():
        if service.get("profiles"):
            continue
        for source, _, _ in mounts(service):
            assert is_bind(source) or source in declared, f"{name}: {source}"
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert not service.get("cap_add") or name.endswith("-init"), name
    for name in ADDED:
        assert not services()[name].get("ports"), f"{name} publishes nothing"


def test_etcd_is_debians_built_from_the_base_image_with_a_health_check_and_a_volume() -> None:
    etcd = services()["etcd"]
    assert etcd["build"]["target"] == "etcd" and etcd["build"]["dockerfile"] == "Dockerfile"
    assert etcd["build"]["args"] == compose()["services"]["sailplane"]["build"]["args"]
    text = stage("Dockerfile", "etcd")
    assert text.startswith("${BASE_IMAGE} AS etcd")
    assert re.search(r"apt-get install .*\betcd-server etcd-client\b", text)
    user = re.search(r"^USER (\d+):(\d+)$", text, flags=re.M)
    assert user and user.group(1) != "0", "etcd does not run as root"
    # Its data on a named volume, at a directory of the image owned by that user
    # (a fresh volume takes the owner of the directory at its mount point).
    (data,) = [m for m in mounts(etcd) if not is_bind(m.source)]
    assert data.source in override()["volumes"]
    assert f"chown {user.group(1)}:{user.group(2)} {data.target}" in text
    flags = dict(arg.split("=", 1) for arg in etcd["command"][1:])
    assert flags["--data-dir"].startswith(data.target + "/")
    assert flags["--listen-client-urls"] == "http://0.0.0.0:2379"
    assert flags["--listen-peer-urls"].startswith("http://127.0.0.1:"), "one member: peers local"
    test = etcd["healthcheck"]["test"]
    assert test[:2] == ["CMD", "etcdctl"] and test[-2:] == ["endpoint", "health"]
    assert "--endpoints=http://127.0.0.1:2379" in test


def test_sailplane_a_syncs_the_mesh_directory_and_both_replicas_serve_the_store() -> None:
    a, b = services()["sailplane"], services()["sailplane-b"]
    args_a, args_b = sailplane_args(a), sailplane_args(b)
    assert args_a.command == args_b.command == "serve"
    # sailplane-a: sync mode, on the mesh directory the WorkloadEntries come from.
    assert args_a.config_dir is not None and args_a.config_store is not None
    assert host_path(mounted_at(a, str(args_a.config_dir))) == MESH.resolve()
    # sailplane-b: the store only, no directory mounted.
    assert args_b.config_dir is None and not any(is_bind(m.source) for m in mounts(b))
    assert args_a.config_store == args_b.config_store
    url = parse_url(args_a.config_store)
    assert url.endpoints == (("etcd", 2379),), url
    for service, replica in REPLICAS.items():
        args = sailplane_args(services()[service])
        assert args.replica_name == replica
        # The proxies use the mTLS port; plaintext off; the monitor as in docker-compose.yml.
        assert args.xds_address is None and args.secure_xds_address[1] == 15012
        assert (
            args.monitor_address
            == sailplane_args(compose()["services"]["sailplane"]).monitor_address
        )
    assert depends_on(a)["etcd"]["condition"] == "service_healthy"
    # sailplane-b starts once sailplane-a has synced the directory and serves it.
    assert depends_on(b)["sailplane"]["condition"] == "service_healthy"
    assert b.get("restart") == a.get("restart") == "unless-stopped"


def test_the_proxies_unchanged_bootstraps_reach_both_replicas_by_one_name() -> None:
    """Docker's DNS answers a name with every container that has it, as a
    service name or an alias: sailplane-a by its service name, sailplane-b by
    its alias. The bootstraps resolve it as STRICT_DNS: every address a host."""
    named = {
        name
        for name, service in services().items()
        if name == "sailplane"
        or "sailplane" in service.get("networks", {}).get("default", {}).get("aliases", [])
    }
    assert named == set(REPLICAS)
    for config in sorted(CONFIGS.glob("*.yaml")):
        (cluster,) = yaml.safe_load(config.read_text())["static_resources"]["clusters"]
        assert cluster["type"] == "STRICT_DNS", config.name
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"]["address"] == "sailplane", config.name


def test_each_replica_serves_with_its_own_intermediate_of_the_one_root() -> None:
    for service, replica in REPLICAS.items():
        serve = services()[service]
        volume = mounted_at(serve, str(sailplane_args(serve).ca_dir))
        assert volume == f"{replica}-ca" and volume in override()["volumes"], service
        assert ROOT_CA not in {m.source for m in mounts(serve)}, f"{service} sees the root key"
        init = services()[f"{replica}-init"]
        args = sailplane_args(init)
        assert (args.ca_command, args.name, args.keep_existing) == ("intermediate", replica, True)
        assert mounted_at(init, str(args.ca_dir)) == ROOT_CA
        assert [m.read_only for m in mounts(init) if m.source == ROOT_CA] == [True]
        assert mounted_at(init, str(args.out_dir)) == volume
        assert depends_on(serve)[f"{replica}-init"]["condition"] == "service_completed_successfully"
        assert depends_on(init)["sailplane-init"]["condition"] == "service_completed_successfully"
        assert init["healthcheck"] == {"disable": True} and "restart" not in init
    # The proxies' certificates still come from the root, whichever replica serves them.
    for name, certs in services().items():
        if name.startswith("certs-"):
            assert mounted_at(certs, str(sailplane_args(certs).ca_dir)) == ROOT_CA, name


def test_replica_cas_written_here_chain_to_the_root_the_proxies_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one-shot commands, run for real on a directory per volume: the
    root, a proxy's credentials, both replicas' intermediates (twice: a
    second `up` keeps them)."""
    volumes = tmp_path / "volumes"
    for volume in merged()["volumes"]:
        (volumes / volume).mkdir(parents=True)
    order = ["sailplane-init", "certs-ingress-gateway", "sailplane-a-init", "sailplane-b-init"]
    for name in order:
        assert main(run_here(services()[name], volumes)) == 0, name
    written = {r: (volumes / f"{r}-ca" / CA_CERT_FILE).read_bytes() for r in REPLICAS.values()}
    for name in order[2:]:
        assert main(run_here(services()[name], volumes)) == 0, name
    assert "kept" in capsys.readouterr().out
    proxy_root = x509.load_pem_x509_certificate(
        (volumes / "certs-ingress-gateway" / "root-cert.pem").read_bytes()
    )
    for service, replica in REPLICAS.items():
        ca_dir = in_volumes(services()[service], "/var/lib/sailplane/ca", volumes)
        assert (ca_dir / CA_CERT_FILE).read_bytes() == written[replica], "kept, not replaced"
        authority = load_or_create_authority(ca_dir)
        assert authority.is_intermediate and authority.root_certificate == proxy_root, service
        subject = authority.signing_certificate.subject.rfc4514_string()
        assert f"CN={replica}" in subject, subject
