"""Container health checks without extra binaries: ``python -m services.healthcheck grpc|http ADDR``.

``grpc HOST:PORT`` asks the standard gRPC health service (the policy server registers it);
``http URL`` expects a 2xx. Exit 0 healthy, 1 not.
"""

from __future__ import annotations

import sys


def check_grpc(target: str, timeout: float = 3.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def check_http(url: str, timeout: float = 3.0) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return 200 <= response.status < 300


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("grpc", "http"):
        print("usage: python -m services.healthcheck grpc HOST:PORT | http URL", file=sys.stderr)
        return 2
    try:
        healthy = check_grpc(argv[1]) if argv[0] == "grpc" else check_http(argv[1])
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", said why
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
