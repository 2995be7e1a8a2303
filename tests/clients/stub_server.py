"""A stand-in GuardService for the client tests that need behaviour the real server cannot
be made to show on demand (RESOURCE_EXHAUSTED with RetryInfo) and for developing the
clients without the real server.

It mirrors the real server's contract with the fake backend: the last turn containing
GW_TEST_UNSAFE is UNSAFE (category S1), anything else gets a deterministic score below 0.5;
an empty conversation is INVALID_ARGUMENT / INVALID_REQUEST with a BadRequest field
violation on "conversation.turns". Extra triggers (stand-in only):

- ``GW_STUB_OVERLOAD_TWICE`` in the last turn: the first two attempts of that exact text
  fail with RESOURCE_EXHAUSTED / OVERLOADED and RetryInfo(``RETRY_DELAY_S``); the third
  succeeds. Every attempt's arrival time is recorded in ``StubServer.attempts``.
- ``GW_STUB_OVERLOAD_ALWAYS``: every attempt is overloaded.

StreamClassify implements the simplest form of the protocol (open first; one final response
per complete turn; check / end_of_turn answered on the conversation so far), or answers
UNIMPLEMENTED when built with ``stream=False``.

Run standalone for manual testing: ``python tests/clients/stub_server.py --port 50051``.
"""

from __future__ import annotations

import argparse
import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent import futures

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from guardwire.v1 import (
    conversation_pb2,
    guard_service_pb2,
    guard_service_pb2_grpc,
    verdict_pb2,
)

DOMAIN = "guardwire.v1"
RETRY_DELAY_S = 0.3
SERVICE = "guardwire.v1.GuardService"


def _any(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


def rich_status(
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: dict[str, str] | None = None,
    violations: list[tuple[str, str]] | None = None,
    retry_delay_s: float | None = None,
) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    details = [_any(info)]
    if violations:
        details.append(
            _any(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in violations
                    ]
                )
            )
        )
    if retry_delay_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_delay_s * 1e9))
        details.append(_any(error_details_pb2.RetryInfo(retry_delay=delay)))
    st = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(st)


def score_of(text: str) -> tuple[int, float]:
    if "GW_TEST_UNSAFE" in text:
        return verdict_pb2.VERDICT_UNSAFE, 0.97
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return verdict_pb2.VERDICT_SAFE, round((h % 4000) / 10000, 4)


def _response(turns: list[conversation_pb2.Turn]) -> guard_service_pb2.ClassifyResponse:
    last = turns[-1]
    verdict, score = score_of(last.content)
    cats = []
    if verdict == verdict_pb2.VERDICT_UNSAFE:
        cats = [verdict_pb2.CategoryScore(code="S1", name="Violent Crimes.", score=score)]
    return guard_service_pb2.ClassifyResponse(
        verdict=verdict,
        unsafe_score=score,
        threshold=0.5,
        categories=cats,
        assessed_role=last.role,
        policy_id="stub",
        model_id="stub-model",
        verdict_token_mass=1.0,
    )


class _Servicer(guard_service_pb2_grpc.GuardServiceServicer):
    def __init__(self, owner: StubServer) -> None:
        self._owner = owner

    def Classify(
        self, request: guard_service_pb2.ClassifyRequest, context: grpc.ServicerContext
    ) -> guard_service_pb2.ClassifyResponse:
        turns = list(request.conversation.turns)
        if not turns:
            context.abort_with_status(
                rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "INVALID_REQUEST",
                    "conversation.turns: at least one turn is required",
                    {"field": "conversation.turns"},
                    [("conversation.turns", "at least one turn is required")],
                )
            )
        text = turns[-1].content
        with self._owner.lock:
            self._owner.attempts[text].append(time.monotonic())
            n = len(self._owner.attempts[text])
        if ("GW_STUB_OVERLOAD_TWICE" in text and n <= 2) or "GW_STUB_OVERLOAD_ALWAYS" in text:
            context.abort_with_status(
                rich_status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "OVERLOADED",
                    "admission queue is full",
                    {"queue_limit": "1"},
                    retry_delay_s=RETRY_DELAY_S,
                )
            )
        return _response(turns)

    def StreamClassify(
        self,
        request_iterator: Iterator[guard_service_pb2.StreamClassifyRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[guard_service_pb2.StreamClassifyResponse]:
        if not self._owner.stream:
            context.abort_with_status(
                rich_status(
                    grpc.StatusCode.UNIMPLEMENTED,
                    "INTERNAL_ERROR",
                    "StreamClassify is declared in v1 but not served yet",
                )
            )
        turns: list[conversation_pb2.Turn] = []
        seq = 0
        first = True
        for msg in request_iterator:
            kind = msg.WhichOneof("kind")
            if first != (kind == "open"):
                context.abort_with_status(
                    rich_status(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "STREAM_PROTOCOL",
                        "the first message must be open, and only the first",
                        {"rule": "open_first"},
                    )
                )
            first = False
            if kind == "open":
                turns.extend(msg.open.history.turns)
                continue
            if kind == "turn":
                turns.append(msg.turn)
            elif kind == "delta":
                if not turns or turns[-1].role != conversation_pb2.ROLE_ASSISTANT:
                    turns.append(conversation_pb2.Turn(role=conversation_pb2.ROLE_ASSISTANT))
                turns[-1].content += msg.delta.text
                continue
            if not turns:
                continue
            seq += 1
            yield guard_service_pb2.StreamClassifyResponse(
                sequence=seq,
                result=_response(turns),
                turn_index=len(turns) - 1,
                safe_through_offset=len(turns[-1].content.encode()),
                final=kind in ("turn", "end_of_turn"),
            )

    def GetModelInfo(
        self, request: guard_service_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> guard_service_pb2.GetModelInfoResponse:
        return guard_service_pb2.GetModelInfoResponse(
            model_id="stub-model", family="stub", backend="stub", default_threshold=0.5
        )


class StubServer:
    """``with StubServer() as s: s.target``: a sync grpc server on 127.0.0.1 in threads."""

    def __init__(self, *, stream: bool = True, port: int = 0) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.attempts: dict[str, list[float]] = defaultdict(list)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        guard_service_pb2_grpc.add_GuardServiceServicer_to_server(_Servicer(self), self._server)
        hs = health.HealthServicer()
        for name in ("", SERVICE):
            hs.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(hs, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self.target = f"127.0.0.1:{self.port}"

    def __enter__(self) -> StubServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None).wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=50051)
    ap.add_argument("--no-stream", action="store_true")
    args = ap.parse_args()
    with StubServer(stream=not args.no_stream, port=args.port) as s:
        print(f"stub GuardService on {s.target}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
