"""The Python client keeps one deadline per call, retries included (clients/README.md), and
retries RESOURCE_EXHAUSTED only when the server's ErrorInfo says OVERLOADED.

A scripted GuardService on a real loopback socket answers every Classify with the status the
test chooses and records each attempt's arrival time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from guardwire import (
    AsyncGuardClient,
    DeadlineError,
    GuardClient,
    InvalidRequestError,
    OverloadedError,
    RetryPolicy,
    UnavailableError,
)
from guardwire.v1 import guard_service_pb2_grpc
from tests.clients.stub_server import rich_status


class Scripted(guard_service_pb2_grpc.GuardServiceServicer):
    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.status: grpc.Status | tuple[grpc.StatusCode, str] | None = None
        self.delay_s = 0.0

    def Classify(self, request, context):
        self.arrivals.append(time.monotonic())
        time.sleep(self.delay_s)
        if isinstance(self.status, grpc.Status):
            context.abort_with_status(self.status)
        context.abort(*self.status)  # a bare code and message, no details


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[Scripted, str]]:
    servicer = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    guard_service_pb2_grpc.add_GuardServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def _script(servicer: Scripted, status: object, delay_s: float = 0.0) -> None:
    servicer.arrivals.clear()
    servicer.status, servicer.delay_s = status, delay_s


UNAVAILABLE = rich_status(grpc.StatusCode.UNAVAILABLE, "MODEL_NOT_READY", "loading")


def test_unavailable_stops_at_the_deadline_with_every_attempt_counted(scripted) -> None:
    servicer, target = scripted
    # each attempt takes 0.2 s: with a 0.5 s deadline the third attempt would pass it
    _script(servicer, UNAVAILABLE, delay_s=0.2)
    retry = RetryPolicy(max_attempts=10, initial_backoff_s=0.01, max_backoff_s=0.02)
    with GuardClient(target, retry=retry) as client:
        t0 = time.monotonic()
        # the last attempt may end as UNAVAILABLE or run into the deadline
        with pytest.raises((UnavailableError, DeadlineError)) as info:
            client.classify("hello", timeout=0.5)
        elapsed = time.monotonic() - t0
    assert elapsed <= 0.65, elapsed
    assert info.value.attempts == len(servicer.arrivals) >= 2
    assert servicer.arrivals[-1] - t0 < 0.5  # no attempt started after the deadline


async def test_async_unavailable_stops_at_the_deadline(scripted) -> None:
    servicer, target = scripted
    _script(servicer, UNAVAILABLE, delay_s=0.2)
    retry = RetryPolicy(max_attempts=10, initial_backoff_s=0.01, max_backoff_s=0.02)
    async with AsyncGuardClient(target, retry=retry) as client:
        t0 = time.monotonic()
        with pytest.raises((UnavailableError, DeadlineError)) as info:
            await client.classify("hello", timeout=0.5)
        elapsed = time.monotonic() - t0
    assert elapsed <= 0.65, elapsed
    assert info.value.attempts == len(servicer.arrivals) >= 2


def test_overload_honours_retryinfo_without_passing_the_deadline(scripted) -> None:
    servicer, target = scripted
    # RetryInfo 0.3 s: the first retry starts after 0.3 s; a second would end past 0.5 s
    _script(
        servicer,
        rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", "busy", retry_delay_s=0.3),
    )
    with GuardClient(target) as client:
        t0 = time.monotonic()
        with pytest.raises(OverloadedError) as info:
            client.classify("hello", timeout=0.5)
        elapsed = time.monotonic() - t0
    gaps = [b - a for a, b in zip(servicer.arrivals, servicer.arrivals[1:], strict=False)]
    assert info.value.attempts == len(servicer.arrivals) == 2
    assert gaps[0] >= 0.3
    assert elapsed < 0.5
    assert info.value.retry_delay_s == pytest.approx(0.3)


async def test_async_overload_retries_within_a_longer_deadline(scripted) -> None:
    servicer, target = scripted
    _script(
        servicer,
        rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", "busy", retry_delay_s=0.1),
    )
    async with AsyncGuardClient(target) as client:
        with pytest.raises(OverloadedError) as info:
            await client.classify("hello", timeout=2.0)
    gaps = [b - a for a, b in zip(servicer.arrivals, servicer.arrivals[1:], strict=False)]
    assert info.value.attempts == len(servicer.arrivals) == 3  # RetryPolicy().max_attempts
    assert min(gaps) >= 0.1


def test_resource_exhausted_that_is_not_overload_is_not_retried(scripted) -> None:
    servicer, target = scripted
    _script(servicer, rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED", "big"))
    with GuardClient(target) as client, pytest.raises(OverloadedError) as info:
        client.classify("hello")
    assert info.value.reason == "LIMIT_EXCEEDED"
    assert info.value.attempts == len(servicer.arrivals) == 1


def test_grpc_core_size_limit_without_errorinfo_is_not_retried(scripted) -> None:
    servicer, target = scripted
    _script(servicer, (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max"))
    with GuardClient(target) as client, pytest.raises(OverloadedError) as info:
        client.classify("hello")
    assert info.value.reason == ""
    assert len(servicer.arrivals) == 1


def test_invalid_argument_is_raised_at_once(scripted) -> None:
    servicer, target = scripted
    _script(servicer, rich_status(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "bad"))
    with GuardClient(target) as client, pytest.raises(InvalidRequestError):
        client.classify("hello")
    assert len(servicer.arrivals) == 1


def test_default_deadline_is_two_seconds_and_must_be_positive(scripted) -> None:
    _, target = scripted
    with GuardClient(target) as client:
        assert client.timeout == 2.0
        with pytest.raises(ValueError, match="timeout"):
            client.classify("hello", timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        GuardClient(target, timeout=-1)
