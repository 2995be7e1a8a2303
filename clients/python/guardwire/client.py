"""``GuardClient`` / ``AsyncGuardClient``: typed results, deadlines, retries, typed errors.

Example::

    from guardwire import GuardClient

    with GuardClient("127.0.0.1:50051") as guard:
        result = guard.classify("How do I bake bread?")
        if result.unsafe:
            ...

Deadline and retries: ``timeout`` (default 2 s) is the deadline of the whole call, retries
included. UNAVAILABLE, and RESOURCE_EXHAUSTED when the server's ErrorInfo says OVERLOADED, are
retried (``RetryPolicy``, 3 attempts), waiting the server's RetryInfo delay when it sends one;
a retry that cannot start before the deadline is not made. Every other error is raised at once
as a ``GuardError`` subclass whose ``attempts`` says how many calls were made.
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
from collections.abc import Sequence
from dataclasses import dataclass
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
from guardwire.messages import (
    CategoryScore,
    ClassifyResult,
    ConversationInput,
    build_classify_request,
    parse_classify_response,
)
from guardwire.outcome import FailMode, Outcome, UnavailableCounter, decide
from guardwire.streaming import GuardStream, open_message
from guardwire.v1 import guard_service_pb2, guard_service_pb2_grpc

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

DEFAULT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    """How failed attempts are retried within a call's deadline.

    Hand-written rather than gRPC's service-config ``retryPolicy``: gRPC's retry waits its own
    backoff or a ``grpc-retry-pushback-ms`` trailer, never the ``RetryInfo`` in the status
    details that this server sends, and it cannot tell an OVERLOADED ``RESOURCE_EXHAUSTED``
    (retry) from a message over the size limit (do not). The Go client does the same.
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def retryable(self, error: GuardError) -> bool:
        """UNAVAILABLE always; RESOURCE_EXHAUSTED only when the server says OVERLOADED."""
        if error.code == grpc.StatusCode.UNAVAILABLE:
            return True
        return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "OVERLOADED"

    def delay(self, attempt: int, error: GuardError) -> float:
        if error.retry_delay_s is not None:
            return min(error.retry_delay_s, self.max_backoff_s)
        base = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # jitter


def _check_mode(fail_mode: object) -> None:
    """Rejects a missing or unknown fail mode before any call is made."""
    if fail_mode not in (FailMode.CLOSED, FailMode.OPEN, "closed", "open"):
        raise ValueError(f"fail_mode must be 'closed' or 'open', got {fail_mode!r}")


def _channel_options() -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", 16 * 2**20)]


class _Deadline:
    """One deadline for a whole call: attempts get what is left, retries never pass it."""

    def __init__(self, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout_s!r}")
        self.end = time.monotonic() + timeout_s

    def left(self) -> float:
        return self.end - time.monotonic()


class _Base:
    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        retry: RetryPolicy | None,
        credentials: grpc.ChannelCredentials | None,
        metadata: Sequence[tuple[str, str]],
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.target = target
        self.timeout = float(timeout)
        self.retry = retry if retry is not None else RetryPolicy()
        self.credentials = credentials
        self.metadata = tuple(metadata)
        self.unavailable = UnavailableCounter()  # UNAVAILABLE outcomes of check()

    def _deadline(self, timeout: float | None) -> _Deadline:
        return _Deadline(self.timeout if timeout is None else timeout)

    def _next_wait(self, err: GuardError, attempt: int, deadline: _Deadline) -> float | None:
        """Seconds to wait before the next attempt, or None when the error is final."""
        err.attempts = attempt
        if not self.retry.retryable(err) or attempt >= self.retry.max_attempts:
            return None
        wait = self.retry.delay(attempt, err)
        # a retry must be able to start (and have a little time to run) before the deadline
        if wait + _MIN_ATTEMPT_S >= deadline.left():
            return None
        return wait


_MIN_ATTEMPT_S = 0.01


class GuardClient(_Base):
    """Blocking client. Use as a context manager or call ``close()``.

    ``timeout``: the default deadline of each call in seconds, retries included (2 s);
    ``retry``: how UNAVAILABLE / OVERLOADED attempts are retried within it; ``credentials``:
    TLS channel credentials (``grpc.ssl_channel_credentials``), plaintext when None;
    ``metadata``: sent with every call (e.g. ``[("authorization", "Bearer ...")]``).
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(
            target, timeout=timeout, retry=retry, credentials=credentials, metadata=metadata
        )
        if credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, _channel_options())
        else:
            self._channel = grpc.insecure_channel(target, _channel_options())
        self._stub = guard_service_pb2_grpc.GuardServiceStub(self._channel)

    def __enter__(self) -> GuardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=max(deadline.left(), 0.0), metadata=self.metadata)
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                wait = self._next_wait(err, attempt, deadline)
                if wait is None:
                    raise err from None
                time.sleep(wait)

    def classify(
        self,
        conversation: ConversationInput,
        *,
        role: str | None = None,
        threshold: float | None = None,
        include_category_scores: bool = False,
        excluded_codes: Sequence[str] = (),
        categories: Sequence[tuple[str, str, str]] | None = None,
        policy_id: str | None = None,
        timeout: float | None = None,
    ) -> ClassifyResult:
        """Classifies the conversation's last turn (or the ``role`` given).

        ``conversation``: a string (one user turn), ``(role, text)`` pairs or
        ``{"role", "content"}`` mappings. ``threshold``: the unsafe-score threshold (server
        default when None). ``include_category_scores``: every category's score, not only the
        violated ones. ``excluded_codes`` / ``categories`` (``(code, name, description)``) /
        ``policy_id``: the policy. ``timeout``: this call's deadline, retries included (the
        client's default when None). Raises a ``GuardError`` subclass on failure.
        """
        request = build_classify_request(
            conversation,
            role=role,
            threshold=threshold,
            include_category_scores=include_category_scores,
            excluded_codes=excluded_codes,
            categories=categories,
            policy_id=policy_id,
        )
        return parse_classify_response(self._call(self._stub.Classify, request, timeout))

    def check(
        self,
        conversation: ConversationInput,
        *,
        fail_mode: FailMode | str,
        role: str | None = None,
        threshold: float | None = None,
        excluded_codes: Sequence[str] = (),
        categories: Sequence[tuple[str, str, str]] | None = None,
        policy_id: str | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        """Classifies like ``classify`` but never raises for a failed call: returns SAFE,
        UNSAFE or UNAVAILABLE (with the reason); ``fail_mode`` ("closed" or "open", required)
        decides ``Outcome.allowed`` without a verdict. See ``guardwire.outcome``."""
        _check_mode(fail_mode)
        try:
            result = self.classify(
                conversation,
                role=role,
                threshold=threshold,
                excluded_codes=excluded_codes,
                categories=categories,
                policy_id=policy_id,
                timeout=timeout,
            )
        except GuardError as err:
            return decide(None, err, fail_mode, self.unavailable)
        return decide(result, None, fail_mode, self.unavailable)

    def model_info(self, *, timeout: float | None = None) -> guard_service_pb2.GetModelInfoResponse:
        """The served model, its policies and limits (``GetModelInfo``)."""
        return self._call(  # type: ignore[no-any-return]
            self._stub.GetModelInfo, guard_service_pb2.GetModelInfoRequest(), timeout
        )


class AsyncGuardClient(_Base):
    """asyncio client (grpc.aio). Use ``async with`` or ``await close()``. The parameters are
    those of ``GuardClient``."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(
            target, timeout=timeout, retry=retry, credentials=credentials, metadata=metadata
        )
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(target, credentials, _channel_options())
        else:
            self._channel = grpc.aio.insecure_channel(target, _channel_options())
        self._stub = guard_service_pb2_grpc.GuardServiceStub(self._channel)

    async def __aenter__(self) -> AsyncGuardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(
                    request, timeout=max(deadline.left(), 0.0), metadata=self.metadata
                )
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                wait = self._next_wait(err, attempt, deadline)
                if wait is None:
                    raise err from None
                await asyncio.sleep(wait)

    async def classify(
        self,
        conversation: ConversationInput,
        *,
        role: str | None = None,
        threshold: float | None = None,
        include_category_scores: bool = False,
        excluded_codes: Sequence[str] = (),
        categories: Sequence[tuple[str, str, str]] | None = None,
        policy_id: str | None = None,
        timeout: float | None = None,
    ) -> ClassifyResult:
        """The asyncio ``GuardClient.classify`` (same parameters)."""
        request = build_classify_request(
            conversation,
            role=role,
            threshold=threshold,
            include_category_scores=include_category_scores,
            excluded_codes=excluded_codes,
            categories=categories,
            policy_id=policy_id,
        )
        return parse_classify_response(await self._call(self._stub.Classify, request, timeout))

    async def check(
        self,
        conversation: ConversationInput,
        *,
        fail_mode: FailMode | str,
        role: str | None = None,
        threshold: float | None = None,
        excluded_codes: Sequence[str] = (),
        categories: Sequence[tuple[str, str, str]] | None = None,
        policy_id: str | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        """The asyncio ``GuardClient.check``: SAFE, UNSAFE or UNAVAILABLE (with the reason),
        never raising for a failed call; ``fail_mode`` is required."""
        _check_mode(fail_mode)
        try:
            result = await self.classify(
                conversation,
                role=role,
                threshold=threshold,
                excluded_codes=excluded_codes,
                categories=categories,
                policy_id=policy_id,
                timeout=timeout,
            )
        except GuardError as err:
            return decide(None, err, fail_mode, self.unavailable)
        return decide(result, None, fail_mode, self.unavailable)

    def stream(
        self,
        *,
        every_tokens: int = 0,
        at_sentence_end: bool = False,
        threshold: float | None = None,
        include_category_scores: bool = False,
        excluded_codes: Sequence[str] = (),
        categories: Sequence[tuple[str, str, str]] | None = None,
        policy_id: str | None = None,
        history: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> GuardStreamContext:
        """Opens a StreamClassify stream: ``async with client.stream(every_tokens=16) as s``.

        ``every_tokens`` / ``at_sentence_end``: the response check cadence; ``history``: the
        conversation before the stream; the policy options are those of ``classify``.
        ``timeout``: the whole stream's deadline (None: no deadline). Streams are not retried.
        """
        message = open_message(
            every_tokens=every_tokens,
            at_sentence_end=at_sentence_end,
            threshold=threshold,
            include_category_scores=include_category_scores,
            excluded_codes=excluded_codes,
            categories=categories,
            policy_id=policy_id,
            history=history,
        )
        return GuardStreamContext(self, timeout, message)

    async def model_info(
        self, *, timeout: float | None = None
    ) -> guard_service_pb2.GetModelInfoResponse:
        """The served model, its policies and limits (``GetModelInfo``)."""
        return await self._call(  # type: ignore[no-any-return]
            self._stub.GetModelInfo, guard_service_pb2.GetModelInfoRequest(), timeout
        )


class GuardStreamContext:
    """``async with client.stream(...) as stream``: opens the stream; on leaving, the call is
    cancelled if it has not ended (nothing reads it any more, so the server's stream state is
    freed at once rather than when the deadline passes)."""

    def __init__(
        self,
        client: AsyncGuardClient,
        timeout: float | None,
        message: guard_service_pb2.StreamOpen,
    ) -> None:
        self._client, self._timeout, self._message = client, timeout, message

    async def __aenter__(self) -> GuardStream:
        call = self._client._stub.StreamClassify(
            timeout=self._timeout, metadata=self._client.metadata
        )
        self._stream = GuardStream(call)
        await self._stream.open(self._message)
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        self._stream.cancel()  # a no-op once the server ended the call
