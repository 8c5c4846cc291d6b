"""What the subcommands share: address and size flags, logging flags, the
configuration directory default, and the monitor's JSON client."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sailplane.translate.proxy import parse_host_port

if TYPE_CHECKING:
    from sailplane.config.loader import LoadResult
    from sailplane.store import EtcdStore, StoreContents


def host_port(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def optional_address(value: str) -> tuple[str, int] | None:
    return None if value == "" else host_port(value)


LOG_LEVELS = ["debug", "info", "warning", "error"]


def logging_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """--log-level and --log-format, before or after the command."""
    parser.add_argument(
        "--log-level",
        default=default or "info",
        choices=LOG_LEVELS,
        help="least severe log lines shown (default info)",
    )
    parser.add_argument(
        "--log-format",
        default=default or "text",
        choices=["text", "json"],
        help="text (default, for people) or json (one object per line, for collectors)",
    )


def size(value: str) -> int:
    """``8388608``, ``512K``, ``8M``, ``1G`` (powers of 1024) -> bytes."""
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        size = int(float(text[:-1] if factor > 1 else text) * factor)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (e.g. 8M, 512K)") from exc
    if size <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (e.g. 8M, 512K)")
    return size


def max_file_size_flag(parser: argparse.ArgumentParser) -> None:
    from sailplane.config.loader import DEFAULT_MAX_FILE_SIZE

    parser.add_argument(
        "--max-file-size",
        type=size,
        default=DEFAULT_MAX_FILE_SIZE,
        metavar="SIZE",
        help="larger config files are an error and are not read, e.g. 8M, 512K "
        f"(default {DEFAULT_MAX_FILE_SIZE >> 20}M)",
    )


def resolve_config_dir(value: Path | None) -> Path:
    if value is not None:
        return value
    from sailplane.server.plane import embedded_example

    return embedded_example()


def fetch_json(address: tuple[str, int], path: str, body: Any = None) -> Any:
    """GET (or, with ``body``, POST as JSON) a monitor endpoint; its JSON answer,
    also for 4xx answers that carry JSON."""
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://{host}:{address[1]}{path}",
        data=data,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if "json" in (exc.headers.get("Content-Type") or ""):
            return json.load(exc)
        raise


def unreachable(address: tuple[str, int], exc: Exception) -> int:
    host, port = address
    print(f"sailplane: cannot reach the monitor at {host}:{port}: {exc}", file=sys.stderr)
    return 2


def monitor_address_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--monitor-address",
        type=host_port,
        default=("127.0.0.1", 15014),
        help="the running server's monitor port, HOST:PORT (default 127.0.0.1:15014)",
    )


def config_store_flag(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--config-store",
        metavar="URL",
        required=required,
        help="read the configuration from etcd: etcd://HOST:PORT[,HOST:PORT...][/PREFIX] "
        "(default prefix /sailplane); etcds://...?ca=FILE&cert=FILE&key=FILE for TLS "
        "(etcd's CA, a client certificate for its --client-cert-auth)"
        + ("" if required else "; instead of --config-dir"),
    )


def open_config_store(url: str, max_value_size: int) -> EtcdStore | None:
    """The etcd store at ``url``, or None after saying why it is not a store URL."""
    from sailplane.store import open_etcd

    try:
        return open_etcd(url, max_value_size)
    except ValueError as exc:
        print(f"sailplane: --config-store: {exc}", file=sys.stderr)
        return None


def read_config_store(url: str, max_value_size: int) -> StoreContents | None:
    """Everything in the store at ``url``; None after saying why not (not a
    store URL, or no endpoint answers)."""
    from sailplane.errors import StoreError

    store = open_config_store(url, max_value_size)
    if store is None:
        return None
    try:
        return store.read()
    except StoreError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return None
    finally:
        store.stop()


def load_configuration(
    config_dir: Path | None, config_store: str | None, max_file_size: int | None = None
) -> LoadResult | None:
    """The mesh configuration from ``--config-store`` or ``--config-dir`` (the
    embedded example without either), loaded as ``serve`` loads it; None
    after saying why it cannot be read."""
    from sailplane.config.loader import DEFAULT_MAX_FILE_SIZE, load_dir, load_texts

    limit = max_file_size or DEFAULT_MAX_FILE_SIZE
    if config_store:
        if config_dir is not None:
            print("sailplane: give --config-dir or --config-store, not both", file=sys.stderr)
            return None
        contents = read_config_store(config_store, limit)
        if contents is None:
            return None
        return load_texts(contents.texts, max_file_size=limit, unread=contents.unread)
    return load_dir(resolve_config_dir(config_dir), max_file_size=limit)
