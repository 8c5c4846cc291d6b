"""A tiny gRPC echo service and a proxyless xDS client for it, with grpc's
generic handlers (no protoc).

``serve ADDRESS:PORT VERSION [--xds]``: ``/echo.Echo/Hello`` (and
``Other``, ``Nope``) answers VERSION, ``/echo.Echo/Slow`` the same after 5 s. With ``--xds``, an
xDS-enabled server (gRFC A36, GRPC_XDS_BOOTSTRAP): it serves only once LDS
gives it its inbound listener, with that listener's RBAC and TLS.

``client``: reads commands from stdin, one per line, ``TARGET METHOD N``,
and answers each with one JSON line: outcome -> count, where an outcome is
the reply (a version) or the status code's name (N = 0: only start
resolving the target). An ``xds:///`` target uses xDS channel credentials
(the TLS of its cluster, else plaintext); any other, plaintext (a client
without a mesh certificate). The channel of a target is
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
import grpc.experimental

SERVICE = "echo.Echo"


def _identity(data: bytes) -> bytes:
    return data


def serve(address: str, version: str, xds: bool = False) -> None:
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
        # Other and Nope answer as Hello does: methods for RBAC tests to
        # allow or deny (grpcio 1.85's xDS server aborts on an unknown one).
        for name, method in (("Hello", hello), ("Other", hello), ("Nope", hello), ("Slow", slow))
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), xds=xds)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if xds:
        # gRFC A36: it serves once LDS gives its inbound listener; the TLS
        # the listener asks for (A29), else plaintext.
        creds = grpc.xds_server_credentials(grpc.insecure_server_credentials())
        server.add_secure_port(address, creds)
    else:
        server.add_insecure_port(address)
    server.start()
    print(f"serving {version} on {address}", flush=True)
    server.wait_for_termination()


def client() -> None:
    channels: dict[str, grpc.Channel] = {}
    for line in sys.stdin:
        target, method, count = line.split()
        xds = target.startswith("xds:")
        channel = channels.get(target)
        if channel is None:
            # xds: targets take the TLS their clusters ask for (gRFC A29),
            # else plaintext; any other target is a client without mesh TLS.
            insecure = grpc.experimental.insecure_channel_credentials()
            channel = channels[target] = (
                grpc.secure_channel(target, grpc.xds_channel_credentials(insecure))
                if xds
                else grpc.insecure_channel(target)
            )
        call = channel.unary_unary(
            f"/{SERVICE}/{method}", request_serializer=_identity, response_deserializer=_identity
        )
        outcomes: Counter[str] = Counter()
        if int(count) == 0:  # only resolve the target (its LDS subscription)
            channel.subscribe(lambda state: None, try_to_connect=True)
        for _ in range(int(count)):
            try:
                # An xDS channel waits for its configuration; any other
                # fails at once when the server refuses the connection.
                reply = call(b"hi", timeout=10, wait_for_ready=xds)
                outcomes[reply.decode()] += 1
            except grpc.RpcError as exc:
                outcomes[exc.code().name] += 1
        print(json.dumps(dict(outcomes)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], xds="--xds" in sys.argv[4:])
    else:
        client()
