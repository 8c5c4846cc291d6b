"""The arrows of DESIGN.md, enforced: which package of sailplane may import
which, which may know Envoy's protos or gRPC, and no import cycles between
packages or between the modules of one package.

Every import counts, also those inside functions (a lazy import is still a
dependency); imports under ``if TYPE_CHECKING:`` count for the direction
rules but not for cycles (they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sailplane

ROOT = Path(sailplane.__file__).parent

# package -> the packages of sailplane it may import ("pkg.module" allows one
# module only). A package may always import itself.
EVERYTHING = frozenset(
    {
        "errors",
        "logs",
        "memo",
        "model",
        "config",
        "translate",
        "xds",
        "ca",
        "telemetry",
        "store",
        "server",
    }
)
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "logs": frozenset(),
    "memo": frozenset(),
    "__init__": frozenset(),
    "model": frozenset({"errors"}),
    "config": frozenset({"errors", "model"}),
    "translate": frozenset({"errors", "memo", "model"}),
    "xds": frozenset({"errors", "logs", "memo"}),
    "ca": frozenset({"errors"}),
    "capture": frozenset({"errors"}),
    # Where the configuration lives (a directory, etcd): reads it as config's input.
    "store": frozenset({"errors", "logs", "model", "config"}),
    # The receiver reads the metadata names the translated access-log
    # configuration writes: that one module is their shared contract.
    "telemetry": frozenset({"errors", "logs", "model", "ca", "translate.telemetry"}),
    "server": EVERYTHING,
    "demo": EVERYTHING,
    "cli": EVERYTHING | {"demo", "capture", "__init__"},
    "__main__": frozenset({"cli"}),
    "examples": frozenset(),
}
# Third-party packages a layer must not know.
FORBIDDEN_LIBRARIES: dict[str, frozenset[str]] = {
    "model": frozenset({"envoy", "google", "grpc", "xds", "udpa", "yaml"}),
    "config": frozenset({"envoy", "google", "grpc", "xds", "udpa"}),
    "translate": frozenset({"grpc"}),
    "ca": frozenset({"envoy", "grpc", "yaml"}),
}


@dataclass(frozen=True)
class Import:
    source: str  # module importing, e.g. "sailplane.server.plane"
    target: str  # module imported, e.g. "sailplane.xds.server"
    line: int
    type_only: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> Iterator[Import]:
    source = module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    type_only = _type_checking_lines(tree)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from sailplane.cli import ca` imports the module sailplane.cli.ca
            targets = [
                f"{base}.{alias.name}"
                if (ROOT.parent / f"{base}.{alias.name}".replace(".", "/")).exists()
                or (ROOT.parent / (f"{base}.{alias.name}".replace(".", "/") + ".py")).exists()
                else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            yield Import(source, target, node.lineno, node.lineno in type_only)


def all_imports() -> list[Import]:
    return [i for path in sorted(ROOT.rglob("*.py")) for i in imports_of(path)]


def layer(module: str) -> str:
    """sailplane.server.ops.views -> server; sailplane.errors -> errors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _allowed(source_layer: str, target: str) -> bool:
    target_layer = layer(target)
    if target_layer == source_layer:
        return True
    allowed = ALLOWED[source_layer]
    module = ".".join(target.split(".")[1:3])
    return target_layer in allowed or module in allowed


def test_every_layer_has_a_rule() -> None:
    layers = {layer(module_name(p)) for p in ROOT.rglob("*.py")}
    assert layers <= set(ALLOWED), f"no import rule for {sorted(layers - set(ALLOWED))}"


def test_packages_import_only_what_the_design_allows() -> None:
    wrong = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in all_imports()
        if i.target.split(".")[0] == "sailplane"
        and i.target != "sailplane"
        and not _allowed(layer(i.source), i.target)
    ]
    assert wrong == []


def test_layers_do_not_know_libraries_beyond_their_job() -> None:
    wrong = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in all_imports()
        if i.target.split(".")[0] in FORBIDDEN_LIBRARIES.get(layer(i.source), ())
    ]
    assert wrong == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("level", ["package", "module"])
def test_no_import_cycles(level: str) -> None:
    edges: dict[str, set[str]] = {}
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    for i in all_imports():
        if i.type_only or i.target not in modules or i.target == i.source:
            continue
        if level == "package":
            a, b = layer(i.source), layer(i.target)
        else:
            a, b = i.source, i.target
            # A package's __init__ re-exporting its modules is not a cycle.
            if b.startswith(a + ".") or (a.startswith(b + ".") and b.count(".") == 1):
                continue
        if a != b:
            edges.setdefault(a, set()).add(b)
    assert _cycles(edges) == []


def test_the_rules_catch_a_wrong_arrow() -> None:
    """The checks above are not vacuous: a translate module importing config,
    or xds importing the model, is reported."""
    assert not _allowed("translate", "sailplane.config.loader")
    assert not _allowed("xds", "sailplane.model.mesh")
    assert not _allowed("telemetry", "sailplane.translate.endpoints")
    assert _allowed("telemetry", "sailplane.translate.telemetry")
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
