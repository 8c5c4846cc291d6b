"""The example's gRPC application, proxyless: gRPC's own xDS client and
server, configured by sailplane through GRPC_XDS_BOOTSTRAP. No protoc: the
service has one method, ``/echo.Echo/Hello``, whose reply is the server's
version.

``server ADDRESS:PORT VERSION``: an xDS-enabled server (gRFC A36). It
serves once sailplane sends its inbound listener, with the mTLS and the
AuthorizationPolicy that listener carries.

``client TARGET``: reads a number per line on stdin, makes that many calls
on one channel (kept, so configuration changes reach it live) and prints
one JSON line, outcome -> count, where an outcome is the version that
answered or a gRPC status name. An ``xds:///`` target uses xDS credentials
(the mesh's mTLS); any other target is a client from outside the mesh,
without a certificate.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from concurrent import futures

import grpc
import grpc.experimental

METHOD = "/echo.Echo/Hello"


def _identity(data: bytes) -> bytes:
    return data


def server(address: str, version: str) -> None:
    reply = version.encode()

    def hello(request: bytes, context: grpc.ServicerContext) -> bytes:
        return reply

    handler = grpc.unary_unary_rpc_method_handler(
        hello, request_deserializer=_identity, response_serializer=_identity
    )
    app = grpc.server(futures.ThreadPoolExecutor(max_workers=8), xds=True)
    app.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("echo.Echo", {"Hello": handler}),)
    )
    # The TLS (or not) comes from sailplane's listener; plaintext as fallback.
    app.add_secure_port(address, grpc.xds_server_credentials(grpc.insecure_server_credentials()))
    app.start()
    print(f"echo {version} on {address}", flush=True)
    app.wait_for_termination()


def client(target: str) -> None:
    if target.startswith("xds:"):
        fallback = grpc.experimental.insecure_channel_credentials()
        channel = grpc.secure_channel(target, grpc.xds_channel_credentials(fallback))
    else:
        channel = grpc.insecure_channel(target)
    call = channel.unary_unary(
        METHOD, request_serializer=_identity, response_deserializer=_identity
    )
    wait = target.startswith("xds:")  # an xDS channel waits for its configuration
    for line in sys.stdin:
        outcomes: Counter[str] = Counter()
        for _ in range(int(line)):
            try:
                outcomes[call(b"hi", timeout=5, wait_for_ready=wait).decode()] += 1
            except grpc.RpcError as exc:
                outcomes[exc.code().name] += 1
        print(json.dumps(dict(sorted(outcomes.items()))), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], sys.argv[3])
    else:
        client(sys.argv[2])
