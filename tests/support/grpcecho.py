"""A tiny gRPC echo service and a proxyless xDS client for it, with grpc's
generic handlers (no protoc).

``serve ADDRESS:PORT VERSION``: ``/echo.Echo/Hello`` answers VERSION,
``/echo.Echo/Slow`` the same after 5 s.

``client``: reads commands from stdin, one per line, ``TARGET METHOD N``,
and answers each with one JSON line: outcome -> count, where an outcome is
the reply (a version) or the status code's name (N = 0: only start
resolving the target). The channel of a target is
kept, so an xDS update reaches the same client (GRPC_XDS_BOOTSTRAP is read
once per process).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from concurrent import futures

import grpc

SERVICE = "echo.Echo"


def _identity(data: bytes) -> bytes:
    return data


def serve(address: str, version: str) -> None:
    reply = version.encode()

    def hello(request: bytes, context: grpc.ServicerContext) -> bytes:
        return reply

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(5)
        return reply

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=_identity, response_serializer=_identity
        )
        for name, method in (("Hello", hello), ("Slow", slow))
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(address)
    server.start()
    print(f"serving {version} on {address}", flush=True)
    server.wait_for_termination()


def client() -> None:
    channels: dict[str, grpc.Channel] = {}
    for line in sys.stdin:
        target, method, count = line.split()
        channel = channels.get(target)
        if channel is None:
            channel = channels[target] = grpc.insecure_channel(target)
        call = channel.unary_unary(
            f"/{SERVICE}/{method}", request_serializer=_identity, response_deserializer=_identity
        )
        outcomes: Counter[str] = Counter()
        if int(count) == 0:  # only resolve the target (its LDS subscription)
            channel.subscribe(lambda state: None, try_to_connect=True)
        for _ in range(int(count)):
            try:
                outcomes[call(b"hi", timeout=10, wait_for_ready=True).decode()] += 1
            except grpc.RpcError as exc:
                outcomes[exc.code().name] += 1
        print(json.dumps(dict(outcomes)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        client()
