"""Write istio-api-fields.txt: every spec field of the Istio kinds sailplane reads.

Sources, both in github.com/istio/api:

* kubernetes/customresourcedefinitions.gen.yaml (the CRD schemas, generated
  there from the protos), for today's kinds: every version of a kind is
  walked and the union kept (they rarely differ);
* authentication/v1alpha1/policy.proto, for the pre-1.5 ``Policy`` and
  ``MeshPolicy`` (one message) that sailplane still reads: removed from
  istio/api, so read from the commit before its removal (it never had a
  CRD schema).

Run from the repository root, with istio/api cloned (or fetched) at ISTIO_API:

    C=$(git -C ISTIO_API rev-parse HEAD); P=$(git -C ISTIO_API rev-parse f4e484025^)
    git -C ISTIO_API show $C:kubernetes/customresourcedefinitions.gen.yaml > /tmp/crds.yaml
    git -C ISTIO_API show $P:authentication/v1alpha1/policy.proto > /tmp/policy.proto
    .venv/bin/python tests/data/istio-api-fields/generate.py /tmp/crds.yaml $C /tmp/policy.proto $P

Path syntax (as sailplane/config/fields/ declares them): ``a.b`` a field of a
message; ``a[]`` a list of messages, whose items' fields are ``a[].x``; ``a{}``
a map of messages, whose values' fields are ``a{}.x``. Lists and maps of
scalars are plain leaves.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KINDS = (
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "WorkloadEntry",
    "Sidecar",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Telemetry",
)
OUT = Path(__file__).with_name("istio-api-fields.txt")


def schema_paths(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for name, sub in sorted((schema.get("properties") or {}).items()):
        path = f"{prefix}{name}"
        if sub.get("type") == "array" and "properties" in (sub.get("items") or {}):
            yield f"{path}[]"
            yield from schema_paths(sub["items"], f"{path}[].")
        elif "properties" in (sub.get("additionalProperties") or {}):
            yield f"{path}{{}}"
            yield from schema_paths(sub["additionalProperties"], f"{path}{{}}.")
        else:
            yield path
            if "properties" in sub:
                yield from schema_paths(sub, f"{path}.")


def crd_fields(crds: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    found: dict[str, set[str]] = {kind: set() for kind in KINDS}
    versions: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for doc in yaml.safe_load_all(crds.read_text()):
        kind = (doc or {}).get("spec", {}).get("names", {}).get("kind")
        if kind not in found:
            continue
        for version in doc["spec"]["versions"]:
            spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
            found[kind].update(schema_paths(spec))
            versions[kind].add(version["name"])
    return found, versions


_BLOCK = re.compile(r"\b(message|enum)\s+(\w+)\s*\{")
_FIELD = re.compile(r"^\s*(repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*\d+", re.MULTILINE)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def proto_messages(text: str) -> tuple[dict[str, list[tuple[str, str, bool]]], set[str]]:
    """Message name -> its fields (JSON name, type, repeated); and the enum
    names. Nested types are known by their own name (unique in policy.proto)."""
    text = re.sub(r"//[^\n]*", "", text)
    messages: dict[str, list[tuple[str, str, bool]]] = {}
    enums: set[str] = set()
    for match in _BLOCK.finditer(text):
        depth, start = 1, match.end()
        end = start
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        if match.group(1) == "enum":
            enums.add(match.group(2))
            continue
        body = text[start:end]
        # Only this message's own fields: blank out nested blocks.
        while (nested := _BLOCK.search(body)) is not None:
            depth, stop = 1, nested.end()
            while depth:
                depth += {"{": 1, "}": -1}.get(body[stop], 0)
                stop += 1
            body = body[: nested.start()] + body[stop:]
        messages[match.group(2)] = [
            (_camel(f.group(3)), f.group(2).rpartition(".")[2], bool(f.group(1)))
            for f in _FIELD.finditer(body)
            if f.group(2) not in ("option", "reserved")
        ]
    return messages, enums


def proto_paths(
    messages: dict[str, list[tuple[str, str, bool]]], name: str, prefix: str = ""
) -> Iterator[str]:
    for field, type_name, repeated in sorted(messages[name]):
        path = f"{prefix}{field}"
        if type_name in messages:
            path += "[]" if repeated else ""
            yield path
            yield from proto_paths(messages, type_name, f"{path}.")
        else:
            yield path


def main(crds: Path, commit: str, policy: Path, policy_commit: str) -> None:
    found, versions = crd_fields(crds)
    messages, _ = proto_messages(policy.read_text())
    lines = [
        "# Every spec field of the Istio kinds sailplane reads, one `KIND PATH` a line.",
        "# Generated by tests/data/istio-api-fields/generate.py (see there for the",
        "# command and the path syntax) from github.com/istio/api:",
        "# kubernetes/customresourcedefinitions.gen.yaml at commit",
        f"# {commit}, the union of the versions",
        *(f"#   {kind}: {', '.join(sorted(versions[kind]))}" for kind in KINDS),
        "# and, for the legacy authentication.istio.io/v1alpha1 Policy and MeshPolicy",
        f"# (one message, Policy), authentication/v1alpha1/policy.proto at commit {policy_commit}.",
    ]
    for kind in KINDS:
        lines.extend(f"{kind} {path}" for path in sorted(found[kind]))
    for kind in ("Policy", "MeshPolicy"):
        lines.extend(f"{kind} {path}" for path in sorted(proto_paths(messages, "Policy")))
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4])
