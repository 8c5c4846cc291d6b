"""``sailplane get``: the config store's objects as YAML (like ``kubectl get -o yaml``)."""

from __future__ import annotations

import argparse
import sys

from sailplane.cli.common import config_store_flag, open_config_store


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    get = sub.add_parser(
        "get",
        parents=[common],
        help="print the config store's objects as YAML",
        description="Print the objects in the store as YAML documents, each with a comment "
        "naming its key and the file it was applied from. Exit status: 0 found, 1 none "
        "matched, 2 the store is unreachable or usage.",
    )
    get.add_argument("kind", nargs="?", help="e.g. VirtualService (any case, plural too)")
    get.add_argument("name", nargs="?", help="the object's metadata.name")
    get.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    config_store_flag(get, required=True)


def run(args: argparse.Namespace) -> int:
    from sailplane.config.loader import DEFAULT_MAX_FILE_SIZE
    from sailplane.errors import StoreError
    from sailplane.store.apply import matches_kind

    store = open_config_store(args.config_store, DEFAULT_MAX_FILE_SIZE)
    if store is None:
        return 2
    try:
        listing = store.list()
    except StoreError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 2
    finally:
        store.stop()
    for problem in listing.problems:
        print(f"warning: {problem.format()}", file=sys.stderr)
    found = [
        obj
        for obj, _ in listing.objects.values()
        if (args.kind is None or matches_kind(args.kind, obj.kind))
        and (args.name is None or obj.name == args.name)
        and (args.namespace is None or obj.namespace == args.namespace)
    ]
    for obj in found:
        origin = f" (from {obj.origin}:{obj.line})" if obj.origin else ""
        text = obj.text.removeprefix("---\n")
        sys.stdout.write(f"---\n# {store.url.prefix}/{obj.path}{origin}\n{text.rstrip()}\n")
    if not found and (args.kind or args.name):
        what = " ".join(filter(None, [args.kind, args.name]))
        print(f"sailplane: no {what} in {store.description}", file=sys.stderr)
        return 1
    return 0
