"""GuardService servicer: thin. validate → Guard → map back; errors through one table."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc

from guardwire.v1 import guard_service_pb2, guard_service_pb2_grpc
from guardwire_server.config import Settings
from guardwire_server.domain import Verdict
from guardwire_server.drain import until_drained
from guardwire_server.errors import Draining, GuardwireError, ModelNotReady, Overloaded
from guardwire_server.guard import Guard, monotonic_deadline
from guardwire_server.mapping import duration, policy_to_categories, verdict_to_proto
from guardwire_server.status import internal_status, to_grpc_status
from guardwire_server.streams import OwedCheck, StreamOptions, StreamSession, run_stream
from guardwire_server.telemetry import NO_TELEMETRY, RpcScope, Telemetry
from guardwire_server.validation import validate_classify

__all__ = ["GuardServicer", "ServingState"]


class ServingState(Protocol):
    """What the servicer needs from the app: the guard once ready, and the drain flag."""

    guard: Guard | None
    draining: bool

    def call_started(self) -> None: ...

    def call_finished(self) -> None: ...


async def abort_with(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, rpc: RpcScope | None = None
) -> None:
    """Aborts the call with the status of ``exc``; ``rpc`` (from ``Telemetry.rpc``) records it."""
    status = to_grpc_status(exc) if isinstance(exc, GuardwireError) else internal_status(exc)
    if rpc is not None:
        rpc.failed(exc, status.code)
    try:
        await context.abort_with_status(status)
    except grpc.aio.AbortError as abort:
        # Not chained to ``exc``: tracing records the abort's traceback, and an error message
        # may quote the request.
        raise abort from None


class GuardServicer(guard_service_pb2_grpc.GuardServiceServicer):
    def __init__(
        self, state: ServingState, settings: Settings, telemetry: Telemetry = NO_TELEMETRY
    ) -> None:
        self._state = state
        self._settings = settings
        self._telemetry = telemetry
        self._open_streams = 0

    def _guard(self) -> Guard:
        if self._state.draining:
            raise Draining("the server is draining for shutdown; retry on another replica")
        if self._state.guard is None:
            raise ModelNotReady("the model is still loading; retry with backoff")
        return self._state.guard

    async def Classify(
        self,
        request: guard_service_pb2.ClassifyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> guard_service_pb2.ClassifyResponse:
        start = time.perf_counter()
        self._state.call_started()
        with self._telemetry.rpc("Classify") as rpc:
            try:
                guard = self._guard()
                with self._telemetry.span("validate"):
                    valid = validate_classify(request, guard.catalog, guard.limits)
                verdict = await guard.classify(
                    valid, deadline=monotonic_deadline(context.time_remaining())
                )
                rpc.succeeded(guard.description, verdict)
                return verdict_to_proto(
                    verdict,
                    model_id=guard.description.model_id,
                    include_category_scores=valid.include_category_scores,
                    total_s=time.perf_counter() - start,
                )
            except Exception as exc:  # every failure gets exactly one explicit status
                await abort_with(context, exc, rpc)
                raise AssertionError("unreachable: abort raises") from exc
            finally:
                self._state.call_finished()

    async def StreamClassify(
        self,
        request_iterator: AsyncIterator[guard_service_pb2.StreamClassifyRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[guard_service_pb2.StreamClassifyResponse]:
        """Answers the checks a conversation stream makes owed; see ``guardwire_server.streams``."""
        self._state.call_started()
        self._open_streams += 1
        # One RPC scope per stream: its duration is the stream's life; every answered check
        # counts a verdict (rpc="StreamClassify"), the closing status counts an error.
        with self._telemetry.rpc("StreamClassify") as rpc:
            try:
                guard = self._guard()
                if self._open_streams > self._settings.max_streams:
                    raise Overloaded(
                        f"{self._settings.max_streams} streams are open; retry later",
                        retry_after_s=1.0,
                        queue_limit=self._settings.max_streams,
                    )
                session = StreamSession(guard.catalog, guard.limits, guard.count_tokens)

                async def score(check: OwedCheck, opts: StreamOptions) -> Verdict:
                    deadline = monotonic_deadline(context.time_remaining())
                    verdict = await guard.score(
                        check.conversation,
                        opts.policy,
                        threshold=opts.threshold,
                        deadline=deadline,
                        stream=True,
                    )
                    rpc.succeeded(guard.description, verdict)
                    return verdict

                def render(
                    check: OwedCheck, verdict: Verdict, opts: StreamOptions
                ) -> guard_service_pb2.StreamClassifyResponse:
                    now = time.monotonic()
                    last = check.conversation.turns[-1].content
                    return guard_service_pb2.StreamClassifyResponse(
                        sequence=check.sequence,
                        result=verdict_to_proto(
                            verdict,
                            model_id=guard.description.model_id,
                            include_category_scores=opts.include_category_scores,
                            total_s=now - check.received_at,
                        ),
                        turn_index=check.turn_index,
                        safe_through_offset=check.offset_bytes,
                        safe_through_token=guard.count_tokens(last),
                        final=check.final,
                        latency=duration(now - check.received_at),
                    )

                drained = getattr(self._state, "drain_event", None)
                requests = (
                    request_iterator
                    if drained is None
                    else until_drained(request_iterator, drained)
                )
                async for response in run_stream(
                    requests,
                    session,
                    score,
                    render,
                    max_pending_checks=self._settings.max_pending_checks,
                ):
                    yield response
            except Exception as exc:  # protocol, validation, overload, scoring: one status
                await abort_with(context, exc, rpc)
            finally:
                self._open_streams -= 1
                self._state.call_finished()

    async def GetModelInfo(
        self,
        request: guard_service_pb2.GetModelInfoRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> guard_service_pb2.GetModelInfoResponse:
        try:
            guard = self._guard()
        except Exception as exc:
            await abort_with(context, exc)
            raise AssertionError("unreachable: abort raises") from exc
        d = guard.description
        s = self._settings
        return guard_service_pb2.GetModelInfoResponse(
            model_id=d.model_id,
            revision=d.revision,
            family=d.family,
            backend=d.backend,
            device=d.device,
            dtype=d.dtype,
            default_categories=policy_to_categories(guard.catalog.default),
            limits=guard_service_pb2.Limits(
                max_turns=s.max_turns,
                max_conversation_bytes=s.max_conversation_bytes,
                max_prompt_tokens=s.max_prompt_tokens,
                max_categories=s.max_categories,
                max_batch_size=s.max_batch_size,
                max_queue=s.max_queue,
            ),
            default_threshold=s.threshold,
            template_hash=d.template_hash,
            verdict_token_ids=list(d.verdict_token_ids),
            policy_ids=sorted(guard.catalog.named),
        )
