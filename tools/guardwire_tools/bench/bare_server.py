"""``python -m guardwire_tools.bench.bare_server --listen HOST:PORT``: gRPC alone, the overhead
phase's reference.

A bare ``grpc.aio`` GuardService whose ``Classify`` lets gRPC parse the request and answers a
fixed response of a real response's shape (verdict, score, categories, timings), plus a health
service. Driven by the same load generator as the server with the fake backend, it tells what
share of the serving overhead is gRPC's own on this machine and what share is Guardwire's
(validation, rendering and tokenization, batching, verdict mapping).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from guardwire.v1 import conversation_pb2, guard_service_pb2, guard_service_pb2_grpc, verdict_pb2

__all__ = ["CANNED", "main"]


def _canned() -> guard_service_pb2.ClassifyResponse:
    r = guard_service_pb2.ClassifyResponse(
        verdict=verdict_pb2.VERDICT_SAFE,
        unsafe_score=0.0123,
        threshold=0.5,
        assessed_role=conversation_pb2.ROLE_USER,
        policy_id="llama-guard-3@p-0123456789ab",
        model_id="bare-grpc",
    )
    t = r.timings
    t.batch_size = 1
    t.computed_tokens = 150
    t.cached_tokens = 136
    t.queue.FromMicroseconds(800)
    t.inference.FromMicroseconds(1500)
    t.total.FromMicroseconds(2500)
    return r


CANNED = _canned()


class BareGuard(guard_service_pb2_grpc.GuardServiceServicer):
    async def Classify(
        self, request: guard_service_pb2.ClassifyRequest, context: Any
    ) -> guard_service_pb2.ClassifyResponse:
        return CANNED


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    guard_service_pb2_grpc.add_GuardServiceServicer_to_server(BareGuard(), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(listen)
    await server.start()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m guardwire_tools.bench.bare_server", description=__doc__
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    asyncio.run(serve(parser.parse_args(argv).listen))


if __name__ == "__main__":
    main()
