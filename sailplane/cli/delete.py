"""``sailplane delete``: remove one object from the config store."""

from __future__ import annotations

import argparse
import sys

from sailplane.cli.common import config_store_flag, open_config_store


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    delete = sub.add_parser(
        "delete",
        parents=[common],
        help="delete an object from the config store",
        description="Delete KIND NAME in namespace NS from the store. Exit status: 0 "
        "deleted, 1 not found, 2 the store is unreachable or usage.",
    )
    delete.add_argument("kind", help="e.g. VirtualService (any case, plural too)")
    delete.add_argument("name", help="the object's metadata.name")
    delete.add_argument("-n", "--namespace", default="default", help="(default: default)")
    config_store_flag(delete, required=True)


def run(args: argparse.Namespace) -> int:
    from sailplane.config.loader import DEFAULT_MAX_FILE_SIZE
    from sailplane.errors import StoreError
    from sailplane.store.apply import matches_kind

    store = open_config_store(args.config_store, DEFAULT_MAX_FILE_SIZE)
    if store is None:
        return 2
    try:
        found = [
            (obj, revision)
            for obj, revision in store.list().objects.values()
            if matches_kind(args.kind, obj.kind)
            and obj.name == args.name
            and obj.namespace == args.namespace
        ]
        if not found:
            print(
                f"sailplane: {args.kind} {args.namespace}/{args.name} not found in "
                f"{store.description}",
                file=sys.stderr,
            )
            return 1
        obj, revision = found[0]
        store.commit([], [obj.path], {obj.path: revision})
    except StoreError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 2
    finally:
        store.stop()
    print(f"{obj.kind.lower()} {obj.namespace}/{obj.name} deleted")
    return 0
