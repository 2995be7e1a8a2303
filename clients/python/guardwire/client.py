"""``GuardClient`` / ``AsyncGuardClient``: typed results, deadlines, retries, typed errors.

Example::

    from guardwire import GuardClient

    with GuardClient("127.0.0.1:50051") as guard:
        result = guard.classify("How do I bake bread?")
        if result.unsafe:
            ...

Retries: UNAVAILABLE and RESOURCE_EXHAUSTED are retried (``RetryPolicy``), honouring the
server's RetryInfo delay; every other error is raised at once as a ``GuardError`` subclass.
An error is never a verdict. ``check(..., fail_mode="closed"|"open")`` returns a three-valued
``Outcome`` (SAFE, UNSAFE, UNAVAILABLE with the reason) that applies the caller's explicit
fail-open / fail-closed choice, logs and counts every UNAVAILABLE (``guardwire.outcome``)::

    outcome = guard.check("How do I bake bread?", fail_mode="closed")
    if not outcome.allowed:
        ...
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from guardwire.errors import (
    DeadlineError,
    GuardError,
    InvalidRequestError,
    OverloadedError,
    UnavailableError,
    from_rpc_error,
)
from guardwire.outcome import FailMode, Outcome, UnavailableCounter, decide
from guardwire.v1 import conversation_pb2, guard_service_pb2, guard_service_pb2_grpc, verdict_pb2

__all__ = [
    "AsyncGuardClient",
    "CategoryScore",
    "ClassifyResult",
    "DeadlineError",
    "FailMode",
    "GuardClient",
    "GuardError",
    "InvalidRequestError",
    "Outcome",
    "OverloadedError",
    "RetryPolicy",
    "UnavailableError",
    "build_classify_request",
]

ConversationInput = str | Sequence[tuple[str, str]] | Sequence[Mapping[str, str]]

_ROLES = {
    "user": conversation_pb2.ROLE_USER,
    "assistant": conversation_pb2.ROLE_ASSISTANT,
    "agent": conversation_pb2.ROLE_ASSISTANT,
    "system": conversation_pb2.ROLE_SYSTEM,
}
_ROLE_NAMES = {conversation_pb2.ROLE_USER: "user", conversation_pb2.ROLE_ASSISTANT: "assistant"}
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass(frozen=True)
class CategoryScore:
    code: str
    name: str
    score: float


@dataclass(frozen=True)
class ClassifyResult:
    verdict: str  # "safe" | "unsafe"
    unsafe_score: float
    threshold: float
    categories: list[CategoryScore]  # violated
    category_scores: list[CategoryScore]  # all, when requested
    assessed_role: str
    policy_id: str
    model_id: str
    verdict_token_mass: float
    queue_s: float
    inference_s: float
    total_s: float
    batch_size: int
    truncated_turns: int = 0  # oldest turns the server dropped (truncate: drop_oldest_turns)

    @property
    def unsafe(self) -> bool:
        return self.verdict == "unsafe"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def delay(self, attempt: int, error: GuardError) -> float:
        if error.retry_delay_s is not None:
            return min(error.retry_delay_s, self.max_backoff_s)
        base = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # jitter


def _check_mode(fail_mode: object) -> None:
    """Rejects a missing or unknown fail mode before any call is made."""
    if fail_mode not in (FailMode.CLOSED, FailMode.OPEN, "closed", "open"):
        raise ValueError(f"fail_mode must be 'closed' or 'open', got {fail_mode!r}")


def _role(name: str) -> int:
    try:
        return _ROLES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown role {name!r}; use 'user' or 'assistant'") from None


def build_classify_request(
    conversation: ConversationInput,
    *,
    role: str | None = None,
    threshold: float | None = None,
    include_category_scores: bool = False,
    excluded_codes: Sequence[str] = (),
    categories: Sequence[tuple[str, str, str]] | None = None,
    policy_id: str | None = None,
) -> guard_service_pb2.ClassifyRequest:
    """A plain string is one user turn; otherwise (role, text) pairs or {"role", "content"}."""
    if isinstance(conversation, str):
        turns = [conversation_pb2.Turn(role=conversation_pb2.ROLE_USER, content=conversation)]
    else:
        turns = []
        for t in conversation:
            if isinstance(t, Mapping):
                r, text = t["role"], t["content"]
            else:
                r, text = t
            turns.append(conversation_pb2.Turn(role=_role(r), content=text))
    policy = conversation_pb2.Policy(
        excluded_codes=list(excluded_codes),
        policy_id=policy_id or "",
        categories=[
            conversation_pb2.Category(code=c, name=n, description=d)
            for c, n, d in (categories or ())
        ],
    )
    options = guard_service_pb2.ClassifyOptions(include_category_scores=include_category_scores)
    if threshold is not None:
        options.threshold = threshold
    return guard_service_pb2.ClassifyRequest(
        conversation=conversation_pb2.Conversation(turns=turns),
        role=_role(role) if role else conversation_pb2.ROLE_UNSPECIFIED,
        policy=policy,
        options=options,
    )


def _scores(items: Any) -> list[CategoryScore]:
    return [CategoryScore(c.code, c.name, c.score) for c in items]


def parse_classify_response(r: guard_service_pb2.ClassifyResponse) -> ClassifyResult:
    if r.verdict == verdict_pb2.VERDICT_UNSPECIFIED:
        raise GuardError(grpc.StatusCode.INTERNAL, "server sent VERDICT_UNSPECIFIED", "")
    return ClassifyResult(
        verdict="unsafe" if r.verdict == verdict_pb2.VERDICT_UNSAFE else "safe",
        unsafe_score=r.unsafe_score,
        threshold=r.threshold,
        categories=_scores(r.categories),
        category_scores=_scores(r.category_scores),
        assessed_role=_ROLE_NAMES.get(r.assessed_role, "unspecified"),
        policy_id=r.policy_id,
        model_id=r.model_id,
        verdict_token_mass=r.verdict_token_mass,
        queue_s=r.timings.queue.ToNanoseconds() / 1e9,
        inference_s=r.timings.inference.ToNanoseconds() / 1e9,
        total_s=r.timings.total.ToNanoseconds() / 1e9,
        batch_size=r.timings.batch_size,
        truncated_turns=r.truncated_turns,
    )


def _channel_options() -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", 16 * 2**20)]


@dataclass
class _Base:
    target: str
    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    credentials: grpc.ChannelCredentials | None = None
    metadata: Sequence[tuple[str, str]] = ()


class GuardClient(_Base):
    """Blocking client. Use as a context manager or call ``close()``."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        if self.credentials is not None:
            self._channel = grpc.secure_channel(target, self.credentials, _channel_options())
        else:
            self._channel = grpc.insecure_channel(target, _channel_options())
        self._stub = guard_service_pb2_grpc.GuardServiceStub(self._channel)
        self.unavailable = UnavailableCounter()  # UNAVAILABLE outcomes of check()

    def __enter__(self) -> GuardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                if err.code not in _RETRYABLE or attempt >= self.retry.max_attempts:
                    raise err from None
                time.sleep(self.retry.delay(attempt, err))

    def classify(
        self, conversation: ConversationInput, *, timeout: float | None = None, **kwargs: Any
    ) -> ClassifyResult:
        request = build_classify_request(conversation, **kwargs)
        return parse_classify_response(self._call(self._stub.Classify, request, timeout))

    def check(
        self,
        conversation: ConversationInput,
        *,
        fail_mode: FailMode | str,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Outcome:
        """Classifies like ``classify`` but never raises for a failed call: returns SAFE,
        UNSAFE or UNAVAILABLE (with the reason); ``fail_mode`` ("closed" or "open", required)
        decides ``Outcome.allowed`` without a verdict. See ``guardwire.outcome``."""
        _check_mode(fail_mode)
        try:
            result = self.classify(conversation, timeout=timeout, **kwargs)
        except GuardError as err:
            return decide(None, err, fail_mode, self.unavailable)
        return decide(result, None, fail_mode, self.unavailable)

    def model_info(self, *, timeout: float | None = None) -> guard_service_pb2.GetModelInfoResponse:
        return self._call(  # type: ignore[no-any-return]
            self._stub.GetModelInfo, guard_service_pb2.GetModelInfoRequest(), timeout
        )


class AsyncGuardClient(_Base):
    """asyncio client (grpc.aio). Use ``async with`` or ``await close()``."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        if self.credentials is not None:
            self._channel = grpc.aio.secure_channel(target, self.credentials, _channel_options())
        else:
            self._channel = grpc.aio.insecure_channel(target, _channel_options())
        self._stub = guard_service_pb2_grpc.GuardServiceStub(self._channel)
        self.unavailable = UnavailableCounter()  # UNAVAILABLE outcomes of check()

    async def __aenter__(self) -> AsyncGuardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(
                    request, timeout=timeout or self.timeout, metadata=self.metadata
                )
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                if err.code not in _RETRYABLE or attempt >= self.retry.max_attempts:
                    raise err from None
                await asyncio.sleep(self.retry.delay(attempt, err))

    async def classify(
        self, conversation: ConversationInput, *, timeout: float | None = None, **kwargs: Any
    ) -> ClassifyResult:
        request = build_classify_request(conversation, **kwargs)
        return parse_classify_response(await self._call(self._stub.Classify, request, timeout))

    async def check(
        self,
        conversation: ConversationInput,
        *,
        fail_mode: FailMode | str,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Outcome:
        """The asyncio ``GuardClient.check``: SAFE, UNSAFE or UNAVAILABLE (with the reason),
        never raising for a failed call; ``fail_mode`` is required."""
        _check_mode(fail_mode)
        try:
            result = await self.classify(conversation, timeout=timeout, **kwargs)
        except GuardError as err:
            return decide(None, err, fail_mode, self.unavailable)
        return decide(result, None, fail_mode, self.unavailable)

    def stream(self, *, timeout: float | None = None, **open_kwargs: Any) -> _StreamContext:
        """Opens a StreamClassify stream: ``async with client.stream(every_tokens=16) as s``.
        Keyword arguments are those of ``guardwire.streaming.open_message``."""
        return _StreamContext(self, timeout, open_kwargs)

    async def model_info(
        self, *, timeout: float | None = None
    ) -> guard_service_pb2.GetModelInfoResponse:
        return await self._call(  # type: ignore[no-any-return]
            self._stub.GetModelInfo, guard_service_pb2.GetModelInfoRequest(), timeout
        )


class _StreamContext:
    def __init__(self, client: AsyncGuardClient, timeout: float | None, kw: dict[str, Any]):
        self._client, self._timeout, self._kw = client, timeout, kw

    async def __aenter__(self) -> Any:
        from guardwire.streaming import GuardStream, open_message

        call = self._client._stub.StreamClassify(
            timeout=self._timeout, metadata=self._client.metadata
        )
        self._stream = GuardStream(call)
        await self._stream.open(open_message(**self._kw))
        return self._stream

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self._stream.cancel()
