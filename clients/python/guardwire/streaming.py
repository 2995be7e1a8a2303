"""``StreamClassify`` for Python: an async session object and a generation guard.

Example::

    async with AsyncGuardClient(target) as client:
        async with client.stream(every_tokens=16) as stream:
            await stream.send_turn("user", prompt)
            first = await stream.next_verdict()          # the prompt's verdict
            async for token in guard_generation(stream, model_tokens()):
                print(token, end="")                     # stops at the first unsafe verdict
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from guardwire.errors import from_rpc_error
from guardwire.messages import ClassifyResult, build_classify_request, parse_classify_response
from guardwire.v1 import conversation_pb2, guard_service_pb2

__all__ = ["GenerationBlocked", "GuardStream", "StreamVerdict", "guard_generation"]


@dataclass(frozen=True)
class StreamVerdict:
    sequence: int
    result: ClassifyResult
    turn_index: int
    safe_through_offset: int  # UTF-8 bytes of the assessed turn covered
    final: bool
    latency_s: float


class GenerationBlocked(Exception):
    """Raised by ``guard_generation`` when a verdict on the response is UNSAFE."""

    def __init__(self, verdict: StreamVerdict) -> None:
        super().__init__(
            f"response blocked at byte {verdict.safe_through_offset}: unsafe "
            f"(score {verdict.result.unsafe_score:.3f})"
        )
        self.verdict = verdict


def _parse(r: guard_service_pb2.StreamClassifyResponse) -> StreamVerdict:
    return StreamVerdict(
        sequence=r.sequence,
        result=parse_classify_response(r.result),
        turn_index=r.turn_index,
        safe_through_offset=r.safe_through_offset,
        final=r.final,
        latency_s=r.latency.ToNanoseconds() / 1e9,
    )


class GuardStream:
    """One open ``StreamClassify`` call. Send messages; read verdicts in order."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def _write(self, **kind: Any) -> None:
        try:
            await self._call.write(guard_service_pb2.StreamClassifyRequest(**kind))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def open(self, open_msg: guard_service_pb2.StreamOpen) -> None:
        await self._write(open=open_msg)

    async def send_turn(self, role: str, content: str) -> None:
        req = build_classify_request([(role, content)])
        await self._write(turn=req.conversation.turns[0])

    async def send_delta(self, text: str) -> None:
        await self._write(delta=guard_service_pb2.ResponseDelta(text=text))

    async def check(self) -> None:
        await self._write(check=guard_service_pb2.CheckNow())

    async def end_turn(self) -> None:
        await self._write(end_of_turn=guard_service_pb2.EndOfTurn())

    async def close(self) -> None:
        """Half-close: the server answers every owed check, then ends the stream."""
        try:
            await self._call.done_writing()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def next_verdict(self) -> StreamVerdict | None:
        """The next verdict in sequence order; None when the server ended the stream."""
        try:
            r = await self._call.read()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        if r is grpc.aio.EOF:
            return None
        return _parse(r)

    async def __aiter__(self) -> AsyncIterator[StreamVerdict]:
        while (v := await self.next_verdict()) is not None:
            yield v

    def cancel(self) -> None:
        self._call.cancel()


def open_message(
    *,
    every_tokens: int = 0,
    at_sentence_end: bool = False,
    threshold: float | None = None,
    include_category_scores: bool = False,
    excluded_codes: Sequence[str] = (),
    categories: Sequence[tuple[str, str, str]] | None = None,
    policy_id: str | None = None,
    history: Sequence[tuple[str, str]] = (),
) -> guard_service_pb2.StreamOpen:
    req = build_classify_request(
        list(history),
        threshold=threshold,
        include_category_scores=include_category_scores,
        excluded_codes=excluded_codes,
        categories=categories,
        policy_id=policy_id,
    )
    return guard_service_pb2.StreamOpen(
        policy=req.policy,
        options=req.options,
        cadence=guard_service_pb2.Cadence(
            every_tokens=every_tokens, at_sentence_end=at_sentence_end
        ),
        history=conversation_pb2.Conversation(turns=req.conversation.turns),
    )


async def guard_generation(stream: GuardStream, tokens: AsyncIterator[str]) -> AsyncIterator[str]:
    """Passes ``tokens`` through while the guard says SAFE. Each token is sent as a delta; a
    background reader watches the verdicts, and the first UNSAFE one stops the generator
    (``aclose()``) and raises ``GenerationBlocked``. At the end the response is closed with
    ``end_turn`` and its final verdict is awaited (UNSAFE there also raises)."""
    blocked: asyncio.Future[StreamVerdict] = asyncio.get_running_loop().create_future()
    final: asyncio.Future[StreamVerdict] = asyncio.get_running_loop().create_future()

    async def watch() -> None:
        try:
            async for v in stream:
                if v.result.unsafe and not blocked.done():
                    blocked.set_result(v)
                if v.final and not final.done():
                    final.set_result(v)
                    return
        except Exception as exc:
            for fut in (blocked, final):
                if not fut.done():
                    fut.set_exception(exc)

    watcher = asyncio.create_task(watch())
    try:
        async for token in tokens:
            if blocked.done():
                break
            await stream.send_delta(token)
            yield token
        if not blocked.done():
            await stream.end_turn()
            await asyncio.wait({blocked, final}, return_when=asyncio.FIRST_COMPLETED)
        if blocked.done():
            raise GenerationBlocked(blocked.result())
    finally:
        closer = getattr(tokens, "aclose", None)
        if closer is not None:
            await closer()
        watcher.cancel()
        for fut in (blocked, final):
            if fut.done() and not fut.cancelled():
                fut.exception()  # mark retrieved
